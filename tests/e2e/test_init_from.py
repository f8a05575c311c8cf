"""``init_from``: the run's model, K and data, each changed only where the command line says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY, compose_train, run_cli
from vtcc.config.init_from import take_run_settings
from vtcc.data import load_digits
from vtcc.train import train


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run on 300 digits saved as an .npz: data other than the default."""
    folder = tmp_path_factory.mktemp("npz_run")
    arrays = load_digits()
    np.savez(folder / "digits.npz", x=arrays.images[:300, 0].numpy(), y=arrays.labels[:300].numpy())
    extra = ["data=npz", f"data.root={folder / 'digits.npz'}", "data.batch_size=100", "trainer.max_epochs=1"]
    train(compose_train(folder / "run", extra))
    return folder


def settings(output: Path, run: Path, *overrides: str):
    source = f"init_from={run / 'checkpoints/last.ckpt'}"
    cfg = compose_train(output, ["objective=selflabel", source, *overrides], resolve=False)
    take_run_settings(cfg, list(overrides))
    return cfg


def test_a_data_key_override_changes_that_key_of_the_runs_data(npz_run, tmp_path):
    cfg = settings(tmp_path, npz_run / "run", "data.batch_size=64", "data.eval_batch_size=32")
    assert cfg.data.root == str(npz_run / "digits.npz")  # the run's data, not the default digits
    assert cfg.data.batch_size == 64 and cfg.data.eval_batch_size == 32
    assert cfg.num_clusters == 10 and cfg.data.image_size == 8
    untouched = settings(tmp_path, npz_run / "run")
    assert untouched.data.batch_size == 100


def test_a_data_choice_replaces_the_runs_data(npz_run, tmp_path):
    cfg = settings(tmp_path, npz_run / "run", "data=digits")
    assert "root" not in cfg.data or cfg.data.get("root") != str(npz_run / "digits.npz")
    assert cfg.data.dataset._target_ == "vtcc.data.load_digits"


def test_a_model_key_that_changes_no_weight_shape_is_taken_and_one_that_does_is_refused(npz_run, tmp_path):
    from vtcc.errors import ConfigError

    cfg = settings(tmp_path, npz_run / "run", "model.drop_path_rate=0.1")
    assert cfg.model.drop_path_rate == 0.1 and cfg.model.embed_dim == 32
    with pytest.raises(ConfigError, match=r"model.embed_dim: 32 -> 64"):
        settings(tmp_path, npz_run / "run", "model.embed_dim=64")


def test_selflabel_from_an_npz_run_with_a_batch_override_trains_on_that_runs_data(npz_run, tmp_path):
    """Through the CLI, as the issue reported: the new run's config names the run's .npz data."""
    ckpt = npz_run / "run/checkpoints/last.ckpt"
    result = run_cli(
        "train",
        *[t for t in TINY if not t.startswith(("data.", "model."))],
        "objective=selflabel",
        f"init_from={ckpt}",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "module.selflabel_loss.threshold=0.1",
        "hydra.run.dir=selflabel",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "selflabel/config.yaml").read_text())
    assert config["data"]["root"] == str(npz_run / "digits.npz")
    assert config["data"]["batch_size"] == 64
    assert config["data"]["dataset"]["_target_"] == "vtcc.data.load_npz"


def test_init_from_never_downloads_where_the_runs_data_says(npz_run, tmp_path):
    """A checkpoint's data section with download: true would fetch and extract files under a root
    it names: init_from reads the run's data where it lies unless this command asks otherwise."""
    import torch

    checkpoint = torch.load(npz_run / "run/checkpoints/last.ckpt", weights_only=True)
    checkpoint["vtcc_config"]["data"]["download"] = True
    (tmp_path / "crafted/checkpoints").mkdir(parents=True)
    torch.save(checkpoint, tmp_path / "crafted/checkpoints/last.ckpt")
    assert settings(tmp_path / "a", tmp_path / "crafted").data.download is False
    assert settings(tmp_path / "b", tmp_path / "crafted", "++data.download=true").data.download is True
