"""vtcc-predict on a folder the test writes: one CSV row per image, same clusters as evaluation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import TINY, run_cli
from vtcc.data import load_digits
from vtcc.utils.checkpoint import restore_run


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A 1-epoch run on 300 digits written as PNG class folders."""
    cwd = tmp_path_factory.mktemp("predict")
    arrays = load_digits()
    for index in range(300):
        folder = cwd / "images" / str(int(arrays.labels[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays.images[index, 0].numpy()).save(folder / f"{index:04d}.png")
    result = run_cli(
        "train",
        *TINY,
        "data=folder",
        "data.root=images",
        "data.in_chans=1",
        "data.mean=[0.3]",
        "data.std=[0.4]",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd


@torch.no_grad()
def evaluation_probabilities(checkpoint: Path) -> torch.Tensor:
    """Cluster probabilities of the run's own images along evaluation's path (datamodule + eval
    transform), in the evaluation order."""
    run_cfg, module = restore_run(checkpoint)
    datamodule = instantiate(run_cfg.data)
    datamodule.setup("validate")
    module.eval()
    return torch.cat(
        [module(datamodule.eval_transform(images)) for images, _, _ in datamodule.val_dataloader()]
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_predict_matches_evaluation_assignments(folder_run, monkeypatch):
    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    result = run_cli(
        "predict",
        f"ckpt_path={checkpoint}",
        "input=images",
        "output=pred",
        "embeddings=true",
        "parquet=true",
        "copy_images=link",
        "device=cpu",
        cwd=folder_run,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(folder_run / "pred/clusters.csv")
    assert len(rows) == 300
    assert all(0 <= int(row["cluster"]) < 10 for row in rows)
    embeddings = np.load(folder_run / "pred/embeddings.npy")
    assert embeddings.shape == (300, 128) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    index = (folder_run / "pred/paths.txt").read_text().splitlines()  # row i of embeddings.npy
    assert index == [row["path"] for row in rows]
    table = pq.read_table(folder_run / "pred/clusters.parquet")
    assert table.column_names == ["path", "cluster", "confidence", "map_x", "map_y"]
    assert table.column("path").to_pylist() == index
    assert table.column("cluster").to_pylist() == [int(row["cluster"]) for row in rows]
    assert np.allclose(
        table.column("confidence").to_numpy(), [float(r["confidence"]) for r in rows], atol=1e-6
    )
    coordinates = np.stack([table.column("map_x").to_numpy(), table.column("map_y").to_numpy()], 1)
    assert np.isfinite(coordinates).all() and coordinates.std(axis=0).min() > 0  # a map, not a point
    assert table.schema.metadata[b"vtcc.map_method"] in (b"UMAP", b"t-SNE", b"PCA")
    linked = sorted((folder_run / "pred").glob("cluster_*/*.png"))
    assert len(linked) == 300 and all(p.is_symlink() for p in linked)

    monkeypatch.chdir(folder_run)  # the run's data.root is relative to where it was trained
    probabilities = evaluation_probabilities(checkpoint)
    predicted = torch.tensor([int(row["cluster"]) for row in rows])  # both in sorted path order
    assert torch.equal(predicted, probabilities.argmax(1))
    confidence = torch.tensor([float(row["confidence"]) for row in rows])  # the largest probability
    assert torch.allclose(confidence, probabilities.max(1).values, atol=1e-5)


def test_predict_refuses_to_overwrite_and_names_bad_inputs(folder_run, predict_in_process):
    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    (folder_run / "taken").mkdir()
    (folder_run / "taken" / "keep.txt").write_text("mine")
    code, stderr = predict_in_process(folder_run, f"ckpt_path={checkpoint}", "input=images", "output=taken")
    assert code == 2 and "overwrite=true" in stderr and "Traceback" not in stderr
    assert (folder_run / "taken" / "keep.txt").read_text() == "mine"
    code, stderr = predict_in_process(folder_run, f"ckpt_path={checkpoint}", "input=nowhere", "output=out2")
    assert code == 2 and "neither a folder" in stderr
    (folder_run / "list.txt").write_text("images/0/0000.png\nimages/1/0001.png\n")
    code, stderr = predict_in_process(folder_run, f"ckpt_path={checkpoint}", "input=list.txt", "output=out3")
    assert code == 0, stderr[-2000:]
    assert len(read_rows(folder_run / "out3/clusters.csv")) == 2
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=images", "output=out4", "parquet=true", "seed=-1"
    )
    assert code == 2 and "seed=-1 must be between 0 and 2**32 - 1" in stderr and "Traceback" not in stderr
    assert not (folder_run / "out4").exists()  # refused before anything was written
    (folder_run / "binary.txt").write_bytes(bytes(range(256)))
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=binary.txt", "output=out5"
    )
    assert code == 2 and "is not a text file listing image paths" in stderr and "Traceback" not in stderr


def test_predict_on_an_npz_runs_own_images_matches_evaluation(tmp_path):
    """An RGB npz run (3 channels, one-value mean): predict decodes with the run's channels and
    size, then evaluation's own resize, so the run's images get evaluation's clusters."""
    digits = load_digits()
    rgb = np.repeat(digits.images[:200, 0].numpy()[..., None], 3, axis=-1)  # (N, 8, 8, 3)
    np.savez(tmp_path / "digits.npz", x=rgb, y=digits.labels[:200].numpy())
    (tmp_path / "images").mkdir()
    for index in range(200):
        Image.fromarray(rgb[index]).save(tmp_path / "images" / f"{index:04d}.png")
    train = run_cli(
        "train",
        *TINY,
        "data=npz",
        f"data.root={tmp_path / 'digits.npz'}",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    result = run_cli(
        "predict", f"ckpt_path={checkpoint}", "input=images", "output=pred", "device=cpu", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = torch.tensor([int(row["cluster"]) for row in read_rows(tmp_path / "pred/clusters.csv")])
    assert torch.equal(predicted, evaluation_probabilities(checkpoint).argmax(1))
