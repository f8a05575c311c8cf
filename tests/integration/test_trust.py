"""Settings that used to be ignored, and choices that used to be made silently."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests import fake_data
from tests.conftest import compose_train
from vtcc.config.recipe import take_recipe
from vtcc.config.resume import resolve_ckpt_path
from vtcc.errors import ConfigError
from vtcc.objectives import objective_class
from vtcc.train import train


def fake_run(log_dir: Path, name: str, config: dict, age_seconds: float) -> Path:
    """A run folder whose last.ckpt holds ``config`` (no weights are needed to choose a run)."""
    path = log_dir / "train" / name / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"vtcc_config": config, "state_dict": {}}, path)
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def test_resume_latest_passes_over_runs_of_other_data_or_objectives(tmp_path):
    cfg = compose_train(tmp_path / "new", ["resume=latest", f"paths.log_dir={tmp_path / 'outputs'}"])
    current = OmegaConf.to_container(cfg, resolve=True)
    other_data = {**current, "data": {**current["data"], "name": "cifar10", "image_size": 32}}
    scan = {k: v for k, v in current["module"].items() if not k.startswith(("instance_", "cluster_"))}
    scan.update(_target_="vtcc.module.ScanClustering", scan_loss={"_target_": "vtcc.losses.ScanLoss"})
    other_objective = {**current, "module": scan}  # as a SCAN run stores its objective
    log_dir = tmp_path / "outputs"
    matching = fake_run(log_dir, "old_digits", current, age_seconds=300)
    fake_run(log_dir, "newer_cifar", other_data, age_seconds=200)
    fake_run(log_dir, "newest_scan", other_objective, age_seconds=100)
    assert resolve_ckpt_path(cfg) == str(matching)
    matching.unlink()
    with pytest.raises(ConfigError, match="no run with this model, data and objective"):
        resolve_ckpt_path(cfg)


def test_an_explicit_checkpoint_of_other_data_is_refused(tmp_path):
    cfg = compose_train(tmp_path / "new", [])
    current = OmegaConf.to_container(cfg, resolve=True)
    other = fake_run(tmp_path, "larger", {**current, "data": {**current["data"], "image_size": 32}}, 0)
    cfg.ckpt_path = str(other)
    with pytest.raises(ConfigError, match=r"data.image_size: 32 -> 8"):
        resolve_ckpt_path(cfg)


def test_an_empty_class_folder_is_refused_not_dropped(tmp_path):
    fake_data.write_image_folder(tmp_path, ["a", "b", "c"], per_class=3)
    (tmp_path / "d_empty").mkdir()
    with pytest.raises(ConfigError, match="d_empty"):  # already when the images are first looked at
        cfg = compose_train("x", ["data=folder", f"data.root={tmp_path}", "data.batch_size=2"])
        instantiate(cfg.data).setup("fit")


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    fake_data.write_cifar10(tmp_path / "data", per_file=8)  # 40 train + 8 test images
    cfg = compose_train(
        "x", ["data=cifar10", f"data.root={tmp_path / 'data'}", "data.eval_split=test", "data.batch_size=44"]
    )
    with pytest.raises(ConfigError, match="training split .* 40 images"):
        instantiate(cfg.data).setup("fit")


@pytest.mark.parametrize(
    ("override", "hint"),
    [("+data.eval_split=test", "no test split"), ("+data.augment_on=workers", "augment_on=device")],
)
def test_streaming_refuses_settings_it_cannot_honour(tmp_path, override, hint):
    fake_data.write_image_folder(tmp_path, ["a", "b"], per_class=3)
    cfg = compose_train(
        "x", ["data=folder_streaming", f"data.root={tmp_path}", "data.batch_size=2", override]
    )
    with pytest.raises(Exception, match=hint):  # a ConfigError inside Hydra's instantiation error
        instantiate(cfg.data)


def test_cached_feature_heads_train_with_the_data_batch_size():
    cfg = compose_train("x", ["data.batch_size=64"])
    assert cfg.features.batch_size == "auto"  # the objective's recipe: contrastive names none
    take_recipe(cfg, objective_class(cfg))
    assert cfg.features.batch_size == 64


def test_resuming_with_another_number_of_cluster_heads_names_the_key(train_in_process, tmp_path):
    """The checkpoint holds two heads' weights: one head cannot take them (Lightning's missing-key
    error before); one line names module.num_cluster_heads and both values."""
    run = tmp_path / "two_heads"
    train(compose_train(run, ["module.num_cluster_heads=2", "trainer.max_epochs=1"]))
    code, stderr = train_in_process(
        f"ckpt_path={run / 'checkpoints/last.ckpt'}", "module.num_cluster_heads=1"
    )
    assert code == 2 and "module.num_cluster_heads: 2 -> 1" in stderr and "Traceback" not in stderr


def test_resume_latest_passes_over_a_checkpoint_it_refuses(tmp_path):
    cfg = compose_train(tmp_path / "new", ["resume=latest", f"paths.log_dir={tmp_path / 'outputs'}"])
    current = OmegaConf.to_container(cfg, resolve=True)
    log_dir = tmp_path / "outputs"
    matching = fake_run(log_dir, "older", current, age_seconds=300)
    crafted = {**current, "data": {**current["data"], "root": "${oc.env:HOME}"}}
    fake_run(log_dir, "newest_crafted", crafted, age_seconds=100)
    assert resolve_ckpt_path(cfg) == str(matching)


def test_resume_latest_never_falls_back_to_an_older_run_past_one_it_refuses(tmp_path):
    """The newest candidate with this run's settings cannot be resumed (a value vtcc would not
    write, an instance projector its objective no longer has), or cannot be read at all (it may be
    this run's): resume=latest stops, naming it and the older match, instead of resuming that one
    by itself. Other runs' checkpoints, refused or not, are passed over."""
    cfg = compose_train(tmp_path / "new", ["resume=latest", f"paths.log_dir={tmp_path / 'outputs'}"])
    current = OmegaConf.to_container(cfg, resolve=True)
    log_dir = tmp_path / "outputs"
    older = fake_run(log_dir, "older", current, age_seconds=400)
    newer = fake_run(log_dir, "newer", current, age_seconds=300)
    other = {**current, "data": {**current["data"], "image_size": 32, "num_workers": -1}}
    fake_run(log_dir, "newest_other_data", other, age_seconds=100)  # refused, and another run's
    bad_loader = {**current, "data": {**current["data"], "num_workers": -1}}  # not part of its identity
    projector = {"network.instance_projector.0.weight": torch.zeros(1)}
    untrained = {**current, "model": {**current["model"], "instance_dim": None}}
    for stored, state, why in (
        (bad_loader, {}, "data.num_workers=-1 must be an integer >= 0"),
        (untrained, projector, "untrained instance projector"),
        (None, None, "not a readable vtcc checkpoint"),
    ):
        if stored is None:
            newer.write_bytes(b"half a checkpoint")
        else:
            torch.save({"vtcc_config": stored, "state_dict": state}, newer)
        if state:  # this run, and the older one, have no projector either
            cfg.model.instance_dim = None
            torch.save({"vtcc_config": untrained, "state_dict": {}}, older)
        for path, age in ((older, 400), (newer, 300)):
            os.utime(path, (time.time() - age, time.time() - age))
        with pytest.raises(ConfigError) as stopped:
            resolve_ckpt_path(cfg)
        message = str(stopped.value)
        assert message.startswith(f"resume=latest stops at {newer}, the newest candidate"), message
        assert why in message and f"resume it with ckpt_path={older}," in message and "\n" not in message
    newer.unlink()
    assert resolve_ckpt_path(cfg) == str(older)  # nothing in the way: the newest match


def test_a_checkpoint_naming_its_objective_by_the_old_path_resumes(tmp_path):
    cfg = compose_train(tmp_path / "new", [])
    current = OmegaConf.to_container(cfg, resolve=True)
    old = {**current, "module": {**current["module"], "_target_": "vtcc.module.ContrastiveClustering"}}
    cfg.ckpt_path = str(fake_run(tmp_path, "old", old, 0))
    assert resolve_ckpt_path(cfg) == cfg.ckpt_path
