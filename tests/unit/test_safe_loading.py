"""Data files are data: loading a CIFAR batch, a weights file or a feature cache never runs code,
and a file vtcc did not write is never overwritten."""

from __future__ import annotations

import ast
import builtins
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra.utils import instantiate
from torch import nn

from tests import fake_data
from tests.conftest import compose_train
from vtcc.data import load_digits
from vtcc.data.benchmarks import load_cifar10, load_cifar100_20
from vtcc.data.cache_files import CACHE_FORMAT, cache_key
from vtcc.data.feature_cache import CachedFeatureDataModule
from vtcc.errors import ConfigError
from vtcc.models.pretrained import create_pretrained_backbone

REPO = Path(__file__).resolve().parents[2]
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_published_cifar10(root: Path, protocol: int, per_file: int = 4) -> tuple[np.ndarray, list[int]]:
    """CIFAR-10 batches with every key of the published files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for index, name in enumerate(CIFAR10_FILES):
        batch = fake_data.random_images(per_file, 3, 32, seed=index)
        batch_labels = [(index + i) % 10 for i in range(per_file)]
        entry = {
            "batch_label": f"batch {index + 1} of 6",
            "labels": batch_labels,
            "data": batch.reshape(per_file, 3072),
            "filenames": [f"image_{index}_{i}.png" for i in range(per_file)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
        images.append(batch)
        labels.extend(batch_labels)
    return np.concatenate(images), labels


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar_batches_in_the_published_format_load(tmp_path, protocol):
    images, labels = write_published_cifar10(tmp_path, protocol)
    arrays = load_cifar10(tmp_path)
    assert torch.equal(arrays.images, torch.from_numpy(images))
    assert arrays.labels.tolist() == labels
    assert arrays.is_test.sum() == 4


def test_cifar100_batches_load(tmp_path):
    fake_data.write_cifar100(tmp_path, per_file=10)
    arrays = load_cifar100_20(tmp_path)
    assert arrays.images.shape == (20, 3, 32, 32) and arrays.labels.max() < 20


def payloads(marker: Path) -> dict[str, tuple]:
    """What a crafted pickle would call, each of which creates ``marker`` when run."""
    return {
        "os.system": (os.system, (f"touch {marker}",)),
        "builtins.exec": (builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess": (subprocess.check_call, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("call", ["os.system", "builtins.exec", "subprocess"])
@pytest.mark.parametrize("where", ["whole file", "inside the dict"])
def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path, call, where):
    fake_data.write_cifar10(tmp_path / "data", per_file=2)
    marker = tmp_path / "marker"
    reduce = payloads(marker)[call]

    class Payload:
        def __reduce__(self):
            return reduce

    entry = Payload() if where == "whole file" else {"data": Payload(), "labels": [0, 1]}
    crafted = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    crafted.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(ConfigError, match="data_batch_3 holds objects other than CIFAR's arrays") as error:
        load_cifar10(tmp_path / "data")
    assert "vtcc refuses to unpickle it" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "loader, class_name, writer",
    [
        (load_cifar10, "CIFAR10", fake_data.write_cifar10),
        (load_cifar100_20, "CIFAR100", fake_data.write_cifar100),
    ],
)
def test_download_fetches_the_archive_without_torchvisions_unpickling_classes(
    tmp_path, monkeypatch, loader, class_name, writer
):
    """torchvision's CIFAR classes ``pickle.load`` the batches: vtcc downloads the checked archive
    and reads it itself."""
    import torchvision.datasets
    import torchvision.datasets.utils

    original = getattr(torchvision.datasets, class_name)

    class Tripwire(original):
        def __init__(self, *args, **kwargs):
            raise AssertionError(f"torchvision's {class_name} was instantiated: it unpickles the batches")

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, Path(download_root), filename, md5))
        writer(Path(download_root))

    monkeypatch.setattr(torchvision.datasets, class_name, Tripwire)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    loader(tmp_path, download=True)
    assert calls == [(original.url, tmp_path, original.filename, original.tgz_md5)]
    loader(tmp_path, download=True)  # already there: not fetched again
    assert len(calls) == 1


def unsafe_loads(code: str, name: str) -> list[str]:
    """Calls that can unpickle arbitrary objects: ``torch.load`` without ``weights_only=True``,
    ``pickle.load(s)``, ``np.load(allow_pickle=...)``, ``yaml.load``-like loaders, and timm reading
    a weights file itself (``pretrained_cfg_overlay={"file": ...}``)."""
    found = []
    for node in ast.walk(ast.parse(code, filename=name)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        call = f"{owner}.{node.func.attr}"
        keywords = {k.arg: k.value for k in node.keywords}
        weights_only = keywords.get("weights_only")
        overlay = keywords.get("pretrained_cfg_overlay")
        if (
            (
                call == "torch.load"
                and not (isinstance(weights_only, ast.Constant) and weights_only.value is True)
            )
            or call in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load")
            or (call in ("np.load", "numpy.load") and "allow_pickle" in keywords)
            or (
                isinstance(overlay, ast.Dict)
                and any(getattr(k, "value", None) == "file" for k in overlay.keys)
            )
        ):
            found.append(f"{name}:{node.lineno}: {call}")
    return found


def test_no_code_path_unpickles_arbitrary_objects():
    files = sorted((REPO / "vtcc").rglob("*.py")) + sorted((REPO / "scripts").rglob("*.py"))
    assert files
    found = [line for path in files for line in unsafe_loads(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []


def test_the_unsafe_load_scan_finds_what_it_should():
    code = (
        "torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=True)\n"
        "pickle.load(f)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\n"
        "timm.create_model(n, pretrained_cfg_overlay={'file': p})\n"
    )
    assert [line.rsplit(": ", 1)[1] for line in unsafe_loads(code, "sample.py")] == [
        "torch.load",
        "torch.load",
        "pickle.load",
        "np.load",
        "yaml.load",
        "timm.create_model",
    ]


VIT = "vit_tiny_patch16_224"
VIT_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 1}


def test_weights_files_are_read_by_vtcc_as_tensors_not_by_timms_loader(tmp_path, monkeypatch):
    """Some timm releases vtcc accepts ``torch.load`` a local file with ``weights_only=False``:
    vtcc reads it (``weights_only=True``, or safetensors) and hands timm the tensors."""
    import timm.models._builder
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model(VIT, pretrained=False, num_classes=0, **VIT_KWARGS)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "vit.pth")
    save_file(source.state_dict(), tmp_path / "vit.safetensors")

    def tripwire(*args, **kwargs):
        raise AssertionError("timm read the weights file itself")

    monkeypatch.setattr(timm.models._builder, "load_state_dict", tripwire)
    for name in ("vit.pth", "vit.safetensors"):
        backbone = create_pretrained_backbone(VIT, str(tmp_path / name), model_kwargs=VIT_KWARGS)
        loaded = backbone.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
        assert "state_dict" not in backbone.pretrained_cfg  # no second copy of the weights kept


def test_a_crafted_weights_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    reduce = payloads(marker)["os.system"]

    class Payload:
        def __reduce__(self):
            return reduce

    torch.save({"state_dict": Payload()}, tmp_path / "vit.pth")
    with pytest.raises(ConfigError, match="is not a readable weights file") as error:
        create_pretrained_backbone(VIT, str(tmp_path / "vit.pth"), model_kwargs=VIT_KWARGS)
    assert "\n" not in str(error.value) and not marker.exists()


def test_the_feature_cache_key_follows_the_torch_and_timm_versions(monkeypatch):
    parts = {"model": {"name": VIT}, "num_views": 2}
    first = cache_key(parts)
    assert cache_key(parts) == first
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    second = cache_key(parts)
    monkeypatch.setattr(timm, "__version__", "9.9.9")
    assert len({first, second, cache_key(parts)}) == 3


@pytest.fixture
def source(tmp_path):
    """64 digits as an npz datamodule: cheap to extract features from."""
    arrays = load_digits()
    npz = tmp_path / "digits.npz"
    np.savez(npz, x=arrays.images[:64, 0].numpy(), y=arrays.labels[:64].numpy())
    cfg = compose_train(tmp_path / "run", ["data=npz", f"data.root={npz}", "data.batch_size=32"])
    return instantiate(cfg.data)


def features(source, folder: Path) -> CachedFeatureDataModule:
    backbone = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return CachedFeatureDataModule(
        source, backbone, key="k", cache_dir=str(folder), num_views=2, extract_batch_size=32, device="cpu"
    )


def test_a_vtcc_cache_is_reused_and_a_stale_one_replaced(tmp_path, source):
    first = features(source, tmp_path / "cache")
    first.setup("fit")
    assert first.computed and first.path.is_file()
    assert torch.load(first.path, weights_only=True)["format"] == CACHE_FORMAT
    again = features(source, tmp_path / "cache")
    again.setup("fit")
    assert not again.computed and torch.equal(again.cache["eval"], first.cache["eval"])
    assert "format" not in again.cache
    stale = {**first.cache, "eval": first.cache["eval"][:10], "format": CACHE_FORMAT}  # other data
    torch.save(stale, first.path)
    replaced = features(source, tmp_path / "cache")
    replaced.setup("fit")
    assert replaced.computed and len(torch.load(first.path, weights_only=True)["eval"]) == 64


def foreign_files() -> dict[str, object]:
    return {
        "weights": lambda path: torch.save({"weight": torch.ones(3)}, path),
        "text": lambda path: path.write_text("my notes, not features\n"),
        "other format": lambda path: torch.save(
            {"eval": torch.ones(3), "format": "vtcc-feature-cache/0"}, path
        ),
        "tensor": lambda path: torch.save(torch.ones(3), path),
    }


@pytest.mark.parametrize("kind", list(foreign_files()))
def test_a_file_vtcc_did_not_write_at_the_cache_path_is_kept_and_refused(tmp_path, source, kind):
    datamodule = features(source, tmp_path / "cache")
    datamodule.path.parent.mkdir()
    foreign_files()[kind](datamodule.path)
    before = datamodule.path.read_bytes()
    with pytest.raises(ConfigError, match="exists and was not written by this vtcc's feature cache") as error:
        datamodule.setup("fit")
    message = str(error.value)
    assert str(datamodule.path) in message and "features.cache_dir" in message and "\n" not in message
    assert datamodule.path.read_bytes() == before and not datamodule.computed
    assert sorted(p.name for p in datamodule.path.parent.iterdir()) == ["k.pt"]  # no temporary left


def test_a_file_that_appears_during_extraction_is_not_overwritten(tmp_path, source, monkeypatch):
    datamodule = features(source, tmp_path / "cache")
    extract = datamodule.extract

    def extract_while_a_user_saves_weights():
        cache = extract()
        datamodule.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"weight": torch.ones(3)}, datamodule.path)
        return cache

    monkeypatch.setattr(datamodule, "extract", extract_while_a_user_saves_weights)
    with pytest.raises(ConfigError, match="was not written by this vtcc's feature cache"):
        datamodule.setup("fit")
    assert torch.equal(torch.load(datamodule.path, weights_only=True)["weight"], torch.ones(3))
    assert sorted(p.name for p in datamodule.path.parent.iterdir()) == ["k.pt"]
