"""The IIC plugin: its loss at closed forms, and objective=iic trained, evaluated, predicted and
resumed through vtcc's command line like one of vtcc's own objectives (the plugin installed)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from vtcc_iic import IICClustering, IICLoss

import vtcc
from vtcc import registry

K = 10
# A run small enough for a 2-core CPU: vtcc's test suite's tiny settings, one epoch.
TINY = [
    "objective=iic",
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "data.image_size=8",
    "data.batch_size=128",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "report=false",
]


def one_hot(labels: torch.Tensor, k: int = K) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).float()


def test_identical_one_hot_assignments_spread_evenly_reach_minus_log_k():
    """P = I / K, P_i = P_j = 1 / K: -sum (1/K) (log 1/K - 2 log 1/K) = -log K."""
    z = one_hot(torch.arange(4 * K) % K)
    assert IICLoss()(z, z).item() == pytest.approx(-math.log(K), abs=1e-6)


def test_identical_uniform_soft_assignments_give_zero():
    """P = 1 / K^2 everywhere, P_i = P_j = 1 / K: log P - log P_i - log P_j = 0."""
    z = torch.full((32, K), 1.0 / K)
    assert IICLoss()(z, z).item() == pytest.approx(0.0, abs=1e-6)


def test_one_cluster_for_every_image_gives_zero_and_disagreeing_views_lose_information():
    """Collapse (everything in one cluster) shares no information; two views whose one-hot
    assignments are independent of each other score near 0, far above -log K."""
    collapsed = one_hot(torch.zeros(40, dtype=torch.long))
    assert IICLoss()(collapsed, collapsed).item() == pytest.approx(0.0, abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    a = one_hot(torch.randint(0, K, (4000,), generator=generator))
    b = one_hot(torch.randint(0, K, (4000,), generator=generator))
    assert abs(IICLoss()(a, b).item()) < 0.05


def test_iic_is_registered_by_its_plugin():
    objective, loss = registry.named("objective", "iic"), registry.named("loss", "iic")
    assert objective.obj is IICClustering and loss.obj is IICLoss
    assert objective.plugin == loss.plugin == "vtcc-iic"
    assert objective.target == "vtcc_iic.IICClustering"


def cli(app: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VTCC_LOG_DIR": str(cwd / "outputs"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", f"vtcc.{app}", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_objective_iic_trains_evaluates_predicts_and_resumes_through_the_cli(tmp_path):
    trained = cli("train", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert stored["vtcc_config"]["module"]["_target_"] == "vtcc_iic.IICClustering"
    assert stored["vtcc_plugins"]["vtcc_iic.IICClustering"]["distribution"] == "vtcc-iic"

    evaluated = cli("evaluate", f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads(next((tmp_path / "outputs/eval").glob("*/metrics.json")).read_text())
    assert 0.0 <= metrics["acc"] <= 1.0

    (tmp_path / "images").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "images" / f"{index}.png")
    predicted = cli(
        "predict", f"ckpt_path={checkpoint}", "input=images", "output=pred", "device=cpu", cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    with open(tmp_path / "pred/clusters.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and all(0 <= int(row["cluster"]) < K for row in rows)

    resumed = cli(
        "train",
        *TINY,
        "trainer.max_epochs=2",
        "hydra.run.dir=resumed",
        f"ckpt_path={checkpoint}",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "resumed/checkpoints/last.ckpt").is_file()


def test_objective_iic_fits_and_predicts_from_python(tmp_path):
    """vtcc.Clusterer loads the plugin too: objective=iic as a keyword, its run loads back."""
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8), dtype=np.uint8)
    clusterer = vtcc.Clusterer(
        objective="iic",
        num_clusters=4,
        run_dir=tmp_path / "run",
        report=False,
        device="cpu",
        trainer__max_epochs=1,
        trainer__enable_progress_bar=False,
        model__embed_dim=32,
        model__depth=1,
        model__num_heads=2,
        data__batch_size=32,
    ).fit(images)
    assert clusterer.labels_.shape == (64,)
    loaded = vtcc.Clusterer.load(clusterer.checkpoint_)
    assert (loaded.predict(images) == clusterer.predict(images)).all()
