"""data=shards: a folder written as WebDataset tar shards by vtcc-shards, streamed in training
(each shard read by one process and worker an epoch), read by offset for evaluation."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests import fake_data
from tests.conftest import TINY, changes, compose_train, input_snapshot
from vtcc.build import prepare_run
from vtcc.data.folder import decode_image, list_images
from vtcc.data.shard_index import read_index, read_shard
from vtcc.data.shard_writer import main, write_shards
from vtcc.data.shards import EpochLoader, ShardStream, reader_steps
from vtcc.errors import ConfigError

IMAGES, SHARD, BATCH = 64, 8, 8  # 8 shards of 8: 2 processes x 2 workers read 2 shards each


@pytest.fixture(scope="module")
def folder_and_shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shards")
    fake_data.write_image_folder(root / "images", ["a", "b", "c", "d"], per_class=IMAGES // 4)
    before = input_snapshot(root / "images")
    write_shards(root / "images", root / "shards", shard_size=SHARD)
    assert not changes(before, input_snapshot(root / "images"))  # vtcc-shards left its input as it was
    return root / "images", root / "shards"


def test_the_shards_are_webdatasets_tars_of_the_folders_files(folder_and_shards):
    """Each sample is the image file's own bytes, its class and its index, under one key, as
    WebDataset writes them; the index says where each image lies."""
    images, shards = folder_and_shards
    paths, labels, names = list_images(images)
    index, offsets = read_index(shards)
    assert index["count"] == IMAGES and [e["count"] for e in index["shards"]] == [SHARD] * 8
    assert index["classes"] == names and offsets["label"].tolist() == labels
    read = list(read_shard(shards / "shard-000001.tar"))  # WebDataset's own reader sees them too
    assert [(i, label) for i, _, label in read] == [(i, labels[i]) for i in range(SHARD, 2 * SHARD)]
    assert all(data == paths[i].read_bytes() for i, data, _ in read)
    with tarfile.open(shards / "shard-000001.tar") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive}
    key = f"{SHARD:09d}"  # image 8 opens the second shard
    assert members[f"{key}.{paths[SHARD].suffix.lstrip('.')}"] == paths[SHARD].read_bytes()
    assert int(members[f"{key}.cls"]) == labels[SHARD]
    assert json.loads(members[f"{key}.json"]) == {
        "index": SHARD,
        "path": str(paths[SHARD].relative_to(images)),
    }


def shard_data(tmp_path: Path, shards: Path, *overrides: str):
    cfg = compose_train(
        tmp_path,
        ["data=shards", f"data.root={shards}", "data.num_workers=0", "data.batch_size=16", *overrides],
        resolve=False,
    )
    resolved = prepare_run(cfg, [])
    return resolved.cfg, resolved.source


def test_every_image_decodes_as_the_folder_loader_decodes_it(tmp_path, folder_and_shards):
    """Read by offset from the shards, each image is the folder's file decoded at the same size
    and fit: evaluation and reports see exactly the folder's images."""
    images, shards = folder_and_shards
    cfg, data = shard_data(tmp_path, shards)
    paths, labels, _ = list_images(images)
    expected = np.stack([decode_image(p, data.stored_size, data.in_chans, "whole") for p in paths])
    assert torch.equal(data.images_at(torch.arange(IMAGES)), torch.from_numpy(expected))
    batches = [data.evaluation_batch(b) for b in data.val_dataloader()]
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(IMAGES))
    assert torch.cat([b[1] for b in batches]).tolist() == labels


def read_epoch(shards: Path, rank: int, ranks: int, epoch: int, workers: int = 2) -> list[list[int]]:
    """The batches (image indices) one process reads in one epoch, through real loader workers."""
    index, offsets = read_index(shards)
    stream = ShardStream(shards, [e["file"] for e in index["shards"]], offsets, BATCH, 12, 3, "whole", seed=7)
    stream.epoch, stream.rank, stream.ranks = epoch, rank, ranks
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [batch[2].tolist() for batch in loader]


def test_two_processes_of_two_workers_read_every_image_once_an_epoch_reshuffled(folder_and_shards):
    _, shards = folder_and_shards
    epochs = []
    for epoch in (0, 1):
        per_rank = [read_epoch(shards, rank, 2, epoch) for rank in (0, 1)]
        seen = sorted(i for batches in per_rank for batch in batches for i in batch)
        assert seen == list(range(IMAGES))  # every image exactly once
        assert (
            [len(batches) for batches in per_rank] == [4, 4] == [reader_steps([SHARD] * 8, 2, 2, BATCH)] * 2
        )
        for batches in per_rank:  # a batch comes from one reader: at most its two shards
            assert all(len({i // SHARD for i in batch}) <= 2 for batch in batches)
        epochs.append(per_rank)
    assert epochs[0] != epochs[1]  # shards and images reshuffled
    assert read_epoch(shards, 0, 2, 0) == epochs[0][0]  # the same seed and epoch: the same order


def true_steps(counts: list[int], readers_per_rank: int, ranks: int, batch: int) -> int:
    """The fewest full batches any process gets over every order of the shards (brute force)."""
    readers = ranks * readers_per_rank
    fewest = None
    for order in itertools.permutations(counts):
        per_reader = [sum(order[r::readers]) // batch for r in range(readers)]
        per_rank = [sum(per_reader[k * readers_per_rank : (k + 1) * readers_per_rank]) for k in range(ranks)]
        fewest = min(per_rank) if fewest is None else min(fewest, min(per_rank))
    return fewest


def test_the_epoch_length_is_what_every_process_can_train_whatever_the_order():
    """Shards of 10, 10, 10 and 3 over 2 processes x 1 reader, batches of 4: a process may get
    the two smallest (13 images, 3 batches), so every process trains 3 batches an epoch. Over
    many small layouts the length never exceeds what the worst order leaves a process (so no
    process runs dry), and equals it for equal shards."""
    assert reader_steps([10, 10, 10, 3], 1, 2, 4) == 3 == true_steps([10, 10, 10, 3], 1, 2, 4)
    assert reader_steps([8] * 8, 2, 2, 8) == 4
    assert reader_steps([3], 1, 2, 4) == 0  # the second process reads nothing
    rng = random.Random(0)
    for _ in range(40):
        counts = [rng.choice([9, 9, 9, 4, 1]) for _ in range(rng.randint(2, 7))]
        readers, ranks, batch = rng.randint(1, 2), rng.randint(1, 2), rng.randint(2, 5)
        truth = true_steps(counts, readers, ranks, batch)
        assert truth - 2 <= reader_steps(counts, readers, ranks, batch) <= truth, (
            counts,
            readers,
            ranks,
            batch,
        )
    # the last shard partial, as vtcc-shards writes them: 8 of 9 shards full, 2 x 4 readers
    assert 8 <= reader_steps([1000] * 8 + [37], 4, 2, 256) <= 9


def test_the_loader_follows_the_trainers_epoch_and_stops_at_the_known_length(folder_and_shards):
    _, shards = folder_and_shards
    index, offsets = read_index(shards)
    stream = ShardStream(shards, [e["file"] for e in index["shards"]], offsets, BATCH, 12, 3, "whole", seed=7)
    epoch = {"now": 3}
    loader = EpochLoader(stream, 5, lambda: epoch["now"])
    batches = [b[2].tolist() for b in loader]
    assert len(loader) == len(batches) == 5 and stream.epoch == 3
    epoch["now"] = 4
    assert [b[2].tolist() for b in loader] != batches


def test_a_shard_run_trains_evaluates_and_repeats_itself_with_the_same_seed(
    tmp_path, folder_and_shards, untouched_inputs
):
    from vtcc.train import train

    untouched_inputs(*folder_and_shards)
    _, shards = folder_and_shards
    settings = ["data=shards", f"data.root={shards}", "data.batch_size=16", "data.num_workers=2"]
    checkpoints = []
    for name in ("one", "two"):
        metrics = train(compose_train(tmp_path / name, settings, resolve=False))
        assert set(metrics) >= {"acc", "nmi", "ari"}
        checkpoints.append(torch.load(tmp_path / name / "checkpoints/last.ckpt", weights_only=True))
    assert checkpoints[0]["global_step"] == 2 * reader_steps([SHARD] * 8, 2, 1, 16) == 2 * 4  # 2 epochs
    for key, value in checkpoints[0]["state_dict"].items():
        assert torch.equal(value, checkpoints[1]["state_dict"][key]), key


def test_bad_shards_are_one_line(tmp_path, folder_and_shards, capsys, untouched_inputs):
    images, shards = folder_and_shards
    untouched_inputs(images, shards)
    with pytest.raises(SystemExit) as stopped:
        main([str(images), str(images / "shards")])  # never into the folder it reads
    assert stopped.value.code == 2 and "which this command reads" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main([str(images), str(shards)])  # never writes into a folder that holds files
    assert stopped.value.code == 2 and "not an empty folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shards.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ConfigError, match="not a vtcc-shards/1 index"):
        read_index(broken)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("shards.json", "offsets.npz", "shard-000000.tar"):
        (partial / name).write_bytes((shards / name).read_bytes())
    cfg = compose_train(tmp_path / "run", ["data=shards", f"data.root={partial}"], tiny=False, resolve=False)
    with pytest.raises(ConfigError, match="shard-000001.tar is missing"):
        prepare_run(cfg, [])
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes((shards / "shard-000000.tar").read_bytes()[:700])  # cut inside a member
    with pytest.raises(ConfigError, match="damaged.tar is damaged"):
        list(read_shard(damaged))
    cut = tmp_path / "cut"  # a shard cut short under a valid index: the index names the shard,
    shutil.copytree(shards, cut)
    (cut / "shard-000000.tar").write_bytes((shards / "shard-000000.tar").read_bytes()[:2000])
    with pytest.raises(ConfigError, match=r"shard-000000.tar: image 0 lies at bytes \d+ to \d+, beyond"):
        read_index(cut)
    index, offsets = read_index(shards)  # and cut after the index was read, training names the image
    stream = ShardStream(cut, [e["file"] for e in index["shards"]], offsets, BATCH, 12, 3, "whole", seed=7)
    with pytest.raises(ConfigError, match="shard-000000.tar cannot be read as an image"):
        list(stream)


def test_ddp_on_shards_trains_the_same_number_of_batches_in_each_process(tmp_path, folder_and_shards):
    from tests.conftest import run_cli

    _, shards = folder_and_shards
    run = run_cli(
        "train",
        *TINY,
        "data=shards",
        f"data.root={shards}",
        "data.batch_size=8",
        "data.num_workers=2",
        "strategy=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "hydra.run.dir=ddp",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "ddp/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == reader_steps([SHARD] * 8, 2, 2, 8) == 4
    metrics = json.loads((tmp_path / "ddp/final_metrics.json").read_text())
    assert set(metrics) >= {"acc", "nmi", "ari"}  # scored over every image, gathered from both


def test_a_shard_run_in_global_order_is_the_folder_run(tmp_path, folder_and_shards, untouched_inputs):
    """data.order=global draws data=folder's permutation and decodes the same images: the same
    seed gives the folder run's weights and metrics, bit for bit."""
    from vtcc.train import train

    images, shards = folder_and_shards
    untouched_inputs(images, shards)
    common = ["data.batch_size=16", "trainer.max_epochs=1"]
    on_folder = train(
        compose_train(tmp_path / "folder", ["data=folder", f"data.root={images}", *common], resolve=False)
    )
    on_shards = train(
        compose_train(
            tmp_path / "shards",
            ["data=shards", f"data.root={shards}", "data.order=global", "data.num_workers=0", *common],
            resolve=False,
        )
    )
    assert on_shards == on_folder
    ours = torch.load(tmp_path / "shards/checkpoints/last.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "folder/checkpoints/last.ckpt", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == IMAGES // 16
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key


def test_a_streamed_run_resumed_at_an_epoch_is_the_uninterrupted_run(tmp_path, folder_and_shards):
    """The shard order is drawn from the seed and the trainer's epoch, the random state comes back
    from the checkpoint: one epoch, then a resume for the second, trains what two epochs do."""
    from vtcc.train import train

    _, shards = folder_and_shards
    settings = ["data=shards", f"data.root={shards}", "data.batch_size=16", "data.num_workers=2"]
    train(compose_train(tmp_path / "first", [*settings, "trainer.max_epochs=1"], resolve=False))
    resumed = train(
        compose_train(
            tmp_path / "second",
            [*settings, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}"],
            resolve=False,
        )
    )
    straight = train(compose_train(tmp_path / "straight", [*settings, "trainer.max_epochs=2"], resolve=False))
    assert resumed == straight
    ours = torch.load(tmp_path / "second/checkpoints/last.ckpt", weights_only=True)
    theirs = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
