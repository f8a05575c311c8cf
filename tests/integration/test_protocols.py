"""Data protocols of the official code: CC's STL-10 epoch, crops from the full image, whole-image eval."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from PIL import Image

from tests import fake_data
from tests.conftest import compose_train
from vtcc.data.samplers import PoolsInSequence
from vtcc.errors import ConfigError
from vtcc.losses import ClusterLoss, InstanceLoss
from vtcc.models import vtcc_network
from vtcc.objectives import ContrastiveClustering


def test_pools_in_sequence_shares_the_shuffle_and_splits_each_global_batch():
    pools = [torch.arange(0, 50), torch.arange(50, 80)]
    single = PoolsInSequence(range(80), pools, batch_size=8)
    batches = list(single)
    assert len(batches) == len(single) == 50 // 8 + 30 // 8  # drop_last in each pool
    assert all(max(b) < 50 for b in batches[:6]) and all(min(b) >= 50 for b in batches[6:])
    assert len({i for b in batches[:6] for i in b}) == 48  # no image twice within a pool
    single.set_epoch(1)
    assert list(single) != batches  # reshuffled every epoch
    ranks = [PoolsInSequence(range(80), pools, batch_size=4, num_replicas=2, rank=r) for r in (0, 1)]
    per_rank = [list(sampler) for sampler in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 50 // 8 + 30 // 8  # same step count on every rank
    for a, b in zip(*per_rank, strict=True):
        assert not set(a) & set(b) and (max(a + b) < 50 or min(a + b) >= 50)  # same pool, disjoint


def test_cc_stl10_trains_the_instance_loss_alone_on_unlabelled_images_first(tmp_path):
    """train_STL10.py: per epoch, instance loss on the unlabelled split, then both losses on train + test."""
    fake_data.write_stl10(tmp_path / "data", per_split=12, unlabeled=20)
    cfg = compose_train(
        tmp_path / "run",
        ["experiment=cc_stl10", f"data.root={tmp_path / 'data'}", "data.image_size=16", "data.batch_size=4"],
        tiny=False,
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.eval_indices) == 24  # the unlabelled images are never evaluated
    network = vtcc_network(num_clusters=10, img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    module = ContrastiveClustering(
        network, InstanceLoss(0.5), ClusterLoss(1.0), optimizer=partial(torch.optim.Adam, lr=1e-3)
    )
    steps = []
    original = module.losses
    module.losses = lambda a, b, cluster=True: steps.append(cluster) or original(a, b, cluster)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)
    assert steps == [False] * (20 // 4) + [True] * (24 // 4)
    assert "train/loss_cluster" in trainer.logged_metrics


def test_instance_phase_needs_unlabelled_images(tmp_path):
    fake_data.write_stl10(tmp_path / "data")
    cfg = compose_train(
        tmp_path / "run",
        [
            "experiment=cc_stl10",
            f"data.root={tmp_path / 'data'}",
            "data.dataset.include_unlabeled=false",
            "data.batch_size=4",
        ],
        tiny=False,
    )
    with pytest.raises(ConfigError, match="include_unlabeled=true"):
        instantiate(cfg.data).setup("fit")


def write_wide_images(root, count: int = 3) -> Image.Image:
    """600 x 300 images: a red left edge and a blue right edge around a grey middle."""
    pixels = np.full((300, 600, 3), 128, dtype=np.uint8)
    pixels[:, :60] = (255, 0, 0)
    pixels[:, -60:] = (0, 0, 255)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return Image.fromarray(pixels)


def folder_datamodule(root, *overrides: str):
    cfg = compose_train("x", ["data=folder", f"data.root={root}", "data.image_size=32", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


def test_folder_images_are_held_at_their_own_resolution_and_evaluated_whole(tmp_path):
    original = write_wide_images(tmp_path)
    datamodule = folder_datamodule(tmp_path, "data.batch_size=2", "data.mean=[0,0,0]", "data.std=[1,1,1]")
    assert datamodule.stored_size == 512  # the 600 px side, at the default cap; not the 32 px of training
    evaluated = datamodule.eval_transform(datamodule.arrays.images[:1])[0]
    official = torch.from_numpy(np.asarray(original.resize((32, 32), Image.Resampling.BILINEAR)))
    official = official.permute(2, 0, 1).float() / 255  # torchvision Resize((S, S)) of the whole image
    assert (evaluated - official).abs().mean() < 0.02
    assert evaluated[0, :, 0].mean() > 0.9 and evaluated[2, :, -1].mean() > 0.9  # both borders kept
    cropped = folder_datamodule(
        tmp_path, "data.batch_size=2", "data.dataset.fit=center_crop", "data.dataset.stored_size=64"
    )
    assert cropped.stored_size == 64
    middle = cropped.arrays.images[0].float() / 255
    assert middle[0].max() < 0.6  # the centre crop of a 2:1 image loses the red edge


def test_stored_size_below_the_training_size_is_refused(tmp_path):
    write_wide_images(tmp_path)
    with pytest.raises(ConfigError, match="stored_size"):
        folder_datamodule(tmp_path, "data.batch_size=2", "data.dataset.stored_size=16")
