"""features.store=mapped: a frozen backbone's features in a memory-mapped float16 store, extracted
in parts split across processes and resumable part by part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, compose_train, run_cli
from vtcc.build import build_run, prepare_run
from vtcc.config.resolve import MAPPED_ROWS, _feature_store
from vtcc.data.feature_store import FeatureStore
from vtcc.errors import ConfigError

# A frozen random ViT (no download), two views an image, parts of 300 of the 1,797 digits (6 parts).
PRETRAINED = [
    "model=pretrained",
    "model.pretrained=false",
    "model.name=vit_tiny_patch16_224",
    "model.model_kwargs={img_size:32,patch_size:8,depth:1}",
    "features.num_views=2",
    "features.part_size=300",
]


def cached_data(tmp_path, cache_dir, store: str = "mapped"):
    cfg = compose_train(
        tmp_path,
        [*PRETRAINED, f"features.store={store}", f"features.cache_dir={cache_dir}"],
        tiny=False,
        resolve=False,
    )
    resolved = prepare_run(cfg, [])
    torch.manual_seed(0)  # the same random backbone in every build, as a run's seed makes it
    return build_run(resolved.cfg, resolved.source).datamodule


def store_arrays(folder) -> dict[str, np.ndarray]:
    (store,) = folder.glob("*.mm")
    return {name: np.load(store / f"{name}.npy") for name in ("eval", "views", "labels")}


def test_the_store_holds_the_memory_caches_features_in_float16_and_training_reads_it_mapped(tmp_path):
    mapped = cached_data(tmp_path / "a", tmp_path / "mapped")
    mapped.setup("fit")
    memory = cached_data(tmp_path / "b", tmp_path / "memory", store="memory")
    memory.setup("fit")
    (folder,) = (tmp_path / "mapped").glob("*.mm")
    maps = open("/proc/self/maps").read()  # training reads the files memory-mapped, not loaded
    assert str(folder / "eval.npy") in maps and str(folder / "views.npy") in maps
    assert mapped.cache["eval"].dtype == torch.float16
    assert sorted(p.name for p in (folder / "done").iterdir()) == [str(p) for p in range(6)]
    # the evaluation view is deterministic: the same features, rounded to float16
    assert torch.allclose(mapped.cache["eval"].float(), memory.cache["eval"], rtol=1e-3, atol=1e-3)
    assert torch.equal(mapped.cache["labels"], memory.cache["labels"])
    pair = mapped.training_pairs((torch.arange(8),))
    assert pair.first.dtype == pair.second.dtype == torch.float32
    features, _, _ = next(iter(mapped.val_dataloader()))
    assert mapped.evaluation_batch((features, None, None))[0].dtype == torch.float32


def test_an_interrupted_extraction_resumes_with_the_parts_not_done(tmp_path, monkeypatch):
    """Stopped after two of six parts, a second run extracts the four others only, and the store
    equals one extracted without a stop: each part's views draw from their own seed."""
    write = FeatureStore.write
    written: list[int] = []

    def stop_after_two(self, part, *args):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(part)
        write(self, part, *args)

    monkeypatch.setattr(FeatureStore, "write", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        cached_data(tmp_path / "a", tmp_path / "store").setup("fit")
    monkeypatch.setattr(
        FeatureStore, "write", lambda self, part, *args: (written.append(part), write(self, part, *args))
    )
    cached_data(tmp_path / "b", tmp_path / "store").setup("fit")
    assert written == [0, 1, 2, 3, 4, 5]  # parts 0 and 1 once, before the stop
    cached_data(tmp_path / "c", tmp_path / "straight").setup("fit")
    resumed, straight = store_arrays(tmp_path / "store"), store_arrays(tmp_path / "straight")
    for name in resumed:
        assert np.array_equal(resumed[name], straight[name]), name


@pytest.mark.slow
def test_two_processes_extract_their_own_parts_into_the_same_store_as_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = [*TINY, *PRETRAINED, "features.store=mapped", "trainer.max_epochs=1", "data.batch_size=64"]
    common = [
        o
        for o in common
        if not o.startswith(("model.embed_dim", "model.depth", "model.num_heads", "data.image_size"))
    ]
    one = run_cli(
        "train", *common, f"features.cache_dir={tmp_path / 'one'}", "hydra.run.dir=r1", cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(
        "train",
        *common,
        "strategy=ddp",
        "trainer.devices=2",
        f"features.cache_dir={tmp_path / 'two'}",
        "hydra.run.dir=r2",
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    first, second = store_arrays(tmp_path / "one"), store_arrays(tmp_path / "two")
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    assert "extracting 3 of its 6 parts" in (tmp_path / "r2" / "train.log").read_text()  # half each


def test_a_store_array_that_became_a_link_is_refused_and_the_linked_file_kept(
    tmp_path, monkeypatch, untouched_inputs
):
    """Hole 1 of the issue, through a run: a stopped extraction's store whose array was replaced
    by a link to a user's file; resuming refuses it in one line and never writes that file."""
    write = FeatureStore.write

    def stop_after_one(self, part, *args):
        if part > 0:
            raise KeyboardInterrupt
        write(self, part, *args)

    monkeypatch.setattr(FeatureStore, "write", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        cached_data(tmp_path / "a", tmp_path / "store").setup("fit")
    monkeypatch.undo()
    (folder,) = (tmp_path / "store").glob("*.mm")
    user = tmp_path / "user" / "views.npy"  # a user's array of the same shape, elsewhere
    user.parent.mkdir()
    user.write_bytes((folder / "views.npy").read_bytes())
    (folder / "views.npy").unlink()
    (folder / "views.npy").symlink_to(user)
    untouched_inputs(user.parent)
    with pytest.raises(ConfigError, match="symbolic link") as error:
        cached_data(tmp_path / "b", tmp_path / "store").setup("fit")
    assert str(folder / "views.npy") in str(error.value) and "\n" not in str(error.value)


def test_a_folder_the_store_did_not_write_is_refused(tmp_path):
    data = cached_data(tmp_path / "a", tmp_path / "cache")
    folder = data.path.with_suffix(".mm")
    folder.mkdir(parents=True)
    (folder / "eval.npy").write_text("a user's file")
    with pytest.raises(ConfigError, match="was not written by this vtcc's feature store"):
        data.setup("fit")
    assert (folder / "eval.npy").read_text() == "a user's file"


def test_auto_maps_the_store_above_two_million_feature_rows():
    for count, views, expected in (
        (1797, 4, "memory"),
        (MAPPED_ROWS // 5 + 1, 4, "mapped"),
        (MAPPED_ROWS, 0, "memory"),
    ):
        cfg = OmegaConf.create({"features": {"store": "auto", "num_views": views}})
        _feature_store(cfg, count)
        assert cfg.features.store == expected, (count, views)
