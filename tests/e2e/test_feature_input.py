"""Precomputed features as data (``data=features``, ``model=features``): read as data, resolved
into the one-vector-per-image objectives, trained, evaluated, predicted, and from Python."""

from __future__ import annotations

import csv
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import vtcc
from tests.conftest import compose_train, evaluate_in_process
from tests.integration.test_architecture import RUN_TIME_AUTO, walk
from vtcc.build import build_run, prepare_run
from vtcc.data import (
    ClusteringData,
    InMemoryDataModule,
    TwinViewAugmentation,
    load_npz,
    small_image_view,
)
from vtcc.data.feature_cache import CachedFeatureDataModule
from vtcc.data.feature_file import FeatureDataModule, read_features, render_vectors
from vtcc.errors import ConfigError
from vtcc.metrics import clustering_metrics
from vtcc.utils.cli import user_error

# Small runs without TINY's image-model settings (model=features has no depth or patch).
RUN = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "report=false",
    "seed=0",
]


def blobs(count: int = 240, k: int = 4, width: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` well-separated Gaussian clusters in ``width`` dimensions (centres 10 standard
    deviations apart along their own axes): any sound clustering of them is exact."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % k
    centres = np.zeros((k, width), dtype=np.float32)
    centres[np.arange(k), np.arange(k)] = 10.0
    return (centres[labels] + rng.standard_normal((count, width))).astype(np.float32), labels


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory) -> Path:
    features, labels = blobs()
    path = tmp_path_factory.mktemp("features") / "blobs.npz"
    np.savez(path, features=features, y=labels)
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """Images (not features): 16 gray 8 px squares in two kinds."""
    images = np.repeat(np.array([40, 200], dtype=np.uint8), 8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    path = tmp_path_factory.mktemp("images") / "images.npz"
    np.savez(path, x=images, y=np.repeat([0, 1], 8))
    return path


def train_cfg(tmp_path: Path, root: Path, *overrides: str):
    return compose_train(
        tmp_path, ["data=features", f"data.root={root}", *RUN, *overrides], tiny=False, resolve=False
    )


def test_every_format_reads_as_the_arrays_written(tmp_path):
    features, labels = blobs(count=12)
    np.save(tmp_path / "plain.npy", features.astype(np.float64))
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.full((5, 7, 3), 200, dtype=np.uint8)).save(image)
    np.savez(tmp_path / "all.npz", features=features, y=labels, paths=np.array(["img.png"] * 12))
    plain = read_features(tmp_path / "plain.npy")
    assert plain.features.dtype == torch.float32 and torch.equal(plain.features, torch.from_numpy(features))
    assert (plain.labels == -1).all() and plain.paths is None
    full = read_features(tmp_path / "all.npz")
    assert full.labels.tolist() == labels.tolist() and full.paths == [image] * 12  # relative to the file
    data = FeatureDataModule(str(tmp_path / "all.npz"))
    data.setup()
    assert isinstance(data, ClusteringData) and data.num_classes == 4 and data.labeled
    shown = data.images_at(torch.tensor([0, 3]))  # the listed images, for the report
    assert shown.shape == (2, 3, 32, 32) and int(shown[0, 0, 16, 16]) == 200


def test_one_protocol_says_which_data_is_features_already(tmp_path, feature_file, npz):
    """Every datamodule keeps ClusteringData; its optional capability, precomputed_features, is
    the feature file's own cache for data=features and None for images and for the datamodules
    over a backbone (their features are extracted)."""
    features = FeatureDataModule(str(feature_file))
    cache = features.precomputed_features()
    assert torch.equal(cache["eval"], read_features(feature_file).features)
    assert torch.equal(cache["labels"], torch.from_numpy(blobs()[1]))
    assert cache["views"].shape == (0, 240, 16)  # no augmented view
    images = InMemoryDataModule(
        dataset=partial(load_npz, npz),
        train_transform=TwinViewAugmentation(small_image_view(image_size=8, mean=[0.5], std=[0.5])),
        image_size=8,
        mean=[0.5],
        std=[0.5],
        in_chans=1,
        batch_size=4,
    )
    over = CachedFeatureDataModule(images, torch.nn.Identity(), key="k", cache_dir=str(tmp_path))
    for data in (features, images, over):
        assert isinstance(data, ClusteringData)
    assert images.precomputed_features() is None and over.precomputed_features() is None
    assert not hasattr(sys.modules[FeatureDataModule.__module__], "PrecomputedFeatures")  # one protocol


def test_a_vector_without_an_image_is_drawn_as_its_values():
    """Each row scaled to its own range: its smallest value black, its largest white, in order."""
    squares = render_vectors(torch.tensor([[0.0, 1.0, 2.0, 4.0, 8.0], [5.0, 5.0, 5.0, 5.0, 6.0]]))
    assert squares.shape == (2, 1, 3, 3) and squares.dtype == torch.uint8
    assert squares[0, 0].flatten()[:5].tolist() == [0, 32, 64, 128, 255]
    assert squares[1, 0].flatten()[:5].tolist() == [0, 0, 0, 0, 255]


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (lambda p: np.save(p / "f.npy", np.zeros(5, np.float32)), "features must be real numbers (N, D)"),
        (lambda p: np.save(p / "f.npy", np.array([[1.0], [np.nan]])), "row 1 of the features is not finite"),
        (lambda p: np.save(p / "f.npy", np.array([["a"], ["b"]])), "features must be real numbers"),
        (lambda p: np.save(p / "f.npy", np.array([[{}], [{}]], dtype=object)), "without pickled objects"),
        (lambda p: (p / "f.npy").write_text("not numpy"), "not a readable feature file"),
        (lambda p: np.savez(p / "f.npz", x=np.zeros((4, 2))), "has no array 'features'"),
        (
            lambda p: np.savez(p / "f.npz", features=np.zeros((4, 2)), y=np.zeros(3, int)),
            "y must be integers",
        ),
        (lambda p: np.savez(p / "f.npz", features=np.zeros((4, 2)), paths=np.arange(4)), "paths must be"),
        (lambda p: None, "does not exist"),
    ],
)
def test_a_bad_feature_file_is_one_line_exit_2_and_nothing_is_written(
    tmp_path, monkeypatch, capsys, write, words
):
    write(tmp_path)
    name = next((p.name for p in tmp_path.iterdir() if p.suffix in (".npy", ".npz")), "f.npy")
    before = sorted(p.name for p in tmp_path.iterdir())
    from vtcc.train import train
    from vtcc.utils.cli import run_safely

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:  # vtcc-train's own handling of a user mistake
        run_safely(train, train_cfg(tmp_path / "run", tmp_path / name, "objective=temi"))
    code, err = stopped.value.code, capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("outputs", "run")) == before


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ([], "features.pairing=views: this objective trains on augmented views"),  # contrastive
        (["objective=temi", "model=vit_tiny"], "use model=features"),
        (["objective=temi", "model.depth=2"], "model.depth is a setting of image models"),
        (["objective=temi", "model=features", "model.num_features=7"], "holds 16 columns"),
        (["objective=temi", "features.cache=false"], "drop features.cache=false"),
        (["objective=selflabel"], "init_from"),
    ],
)
def test_what_features_cannot_train_is_one_line(tmp_path, feature_file, overrides, words):
    cfg = train_cfg(tmp_path, feature_file, *overrides)
    with pytest.raises(Exception) as raised:  # noqa: B017 - Hydra may wrap it; the CLI prints its cause
        prepared = prepare_run(cfg, [])
        build_run(prepared.cfg, prepared.source)
    assert words in str(user_error(raised.value))


def test_model_features_reads_only_feature_files(tmp_path, npz):
    cfg = compose_train(
        tmp_path, ["model=features", "data=npz", f"data.root={npz}"], tiny=False, resolve=False
    )
    with pytest.raises(ConfigError, match="add data=features"):
        prepare_run(cfg, [])


def test_model_auto_becomes_features_keeping_the_objectives_model_settings(tmp_path, feature_file):
    """TEMI's head style (set by its objective for model=auto) is kept; SCAN's pairing of augmented
    neighbours becomes the neighbour's vector; no augmentation is recorded; the heads read the
    file's rows as they are."""
    cfg = train_cfg(tmp_path, feature_file, "objective=temi", f"features.cache_dir={tmp_path / 'cache'}")
    prepared = prepare_run(cfg, [])
    cfg = prepared.cfg
    run = build_run(cfg, prepared.source)
    assert cfg.model._target_.endswith("features_network") and cfg.model.head_style == "temi"
    assert cfg.model.num_features == 16 and cfg.augment is None and cfg.features.num_views == 0
    assert isinstance(run.datamodule, CachedFeatureDataModule)
    run.datamodule.setup("fit")
    assert torch.equal(run.datamodule.training_features(), read_features(feature_file).features)
    cache = Path(cfg.features.cache_dir)
    assert not cache.exists()  # the file is the cache: nothing is extracted or copied
    scan = train_cfg(tmp_path / "scan", feature_file, "objective=scan")
    scan = prepare_run(scan, []).cfg
    assert scan.features.pairing == "eval_neighbors"
    plain = OmegaConf.to_container(scan, resolve=True)
    assert [key for key, value in walk(plain) if value == "auto" and key not in RUN_TIME_AUTO] == []


@pytest.mark.parametrize("objective", ["turtle", "temi", "scan"])
def test_separable_features_are_clustered_exactly_then_evaluated_and_predicted(
    tmp_path, feature_file, objective, predict_in_process, untouched_inputs
):
    """Four clusters 10 standard deviations apart: every objective on one vector per image finds
    them exactly (ACC 1 from first principles: a linear classifier separates them); vtcc-eval of
    the checkpoint and vtcc-predict of the same file give the run's clusters again."""
    from vtcc.train import train

    untouched_inputs(feature_file)  # read by train, eval and predict, never changed
    epochs = {"turtle": 6, "temi": 30, "scan": 30}[objective]
    # TURTLE: run_turtle.py's rates (1e-3) move a 16-wide space's inner classifiers less than their
    # random start differs, so the outer gradient is noise and the blobs take all 6,000 steps; the
    # default scales both rates by the width (x10 here: 1e-2), which finds them in 600
    cfg = train_cfg(tmp_path, feature_file, f"objective={objective}", f"trainer.max_epochs={epochs}")
    metrics = train(cfg)
    assert metrics["acc"] == pytest.approx(1.0), metrics
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert evaluate_in_process(checkpoint, tmp_path / "eval")["acc"] == pytest.approx(1.0)
    code, err = predict_in_process(
        tmp_path, f"ckpt_path={checkpoint}", f"input={feature_file}", "output=pred"
    )
    assert code == 0, err
    with open(tmp_path / "pred" / "clusters.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows[:2]] == [f"{feature_file}#0", f"{feature_file}#1"]
    labels = read_features(feature_file).labels.numpy()
    assert clustering_metrics(labels, np.array([int(r["cluster"]) for r in rows]))["acc"] == 1.0


@pytest.fixture(scope="module")
def features_run(tmp_path_factory) -> vtcc.Clusterer:
    """A short TURTLE run on the blobs, fitted from Python (a float array)."""
    clusterer = vtcc.Clusterer(
        num_clusters=4,
        objective="turtle",
        overrides=[*RUN, "trainer.max_epochs=1"],
        run_dir=tmp_path_factory.mktemp("features_run") / "run",
        device="cpu",
    )
    return clusterer.fit(blobs()[0])


def test_an_image_run_refuses_features_and_a_features_run_refuses_images(
    tmp_path, feature_file, predict_in_process, npz, features_run, untouched_inputs
):
    untouched_inputs(feature_file, npz.parent)
    clusterer = features_run
    features, _ = blobs()
    with pytest.raises(ConfigError, match="trained on 16"):
        clusterer.predict(features[:, :7])
    code, err = predict_in_process(
        tmp_path, f"ckpt_path={clusterer.checkpoint_}", f"input={npz.parent}", "output=p"
    )
    assert code == 2 and "this run clusters feature vectors" in err and not (tmp_path / "p").exists()
    code, err = predict_in_process(
        tmp_path,
        f"ckpt_path={clusterer.checkpoint_}",
        f"input={feature_file}",
        "output=p",
        "copy_images=copy",
    )
    assert code == 2 and "lists no image paths" in err and not (tmp_path / "p").exists()


def test_an_array_of_features_and_its_file_fit_alike_from_python_and_the_cli(tmp_path, feature_file):
    """A float array (N, D) fits as data=features; the same rows as an .npy file through the CLI's
    resolve/build path give the same clusters (same seed); predict on the rows equals labels_."""
    from vtcc.train import train

    features = read_features(feature_file).features.numpy()
    np.save(tmp_path / "rows.npy", features)
    settings = {"objective": "temi", "trainer.max_epochs": 3}
    from_array = vtcc.Clusterer(
        num_clusters=4,
        overrides=RUN,
        run_dir=tmp_path / "a",
        device="cpu",
        **{k.replace(".", "__"): v for k, v in settings.items()},
    ).fit(features)
    assert (from_array.run_dir_ / "inputs.npz").is_file()
    assert np.array_equal(from_array.predict(features), from_array.labels_)
    assert np.array_equal(from_array.predict(tmp_path / "rows.npy"), from_array.labels_)
    cfg = compose_train(
        tmp_path / "cli",
        ["data=features", f"data.root={tmp_path / 'rows.npy'}", *RUN, "num_clusters=4"]
        + [f"{k}={v}" for k, v in settings.items()],
        tiny=False,
        resolve=False,
    )
    train(cfg)
    from vtcc.inference import Assigner

    cli = Assigner(tmp_path / "cli" / "checkpoints" / "last.ckpt", device="cpu").assign_features(features)
    assert np.array_equal(cli.clusters, from_array.labels_)


def test_selflabelling_starts_from_a_run_on_features_and_keeps_its_data(tmp_path, feature_file):
    """init_from a SCAN run on features: the model, K and data come from it (no augmentation is
    added to a data node that takes none), and its confident predictions train the head."""
    from vtcc.train import train

    train(train_cfg(tmp_path / "scan", feature_file, "objective=scan", "trainer.max_epochs=30"))
    checkpoint = tmp_path / "scan" / "checkpoints" / "last.ckpt"
    cfg = compose_train(
        tmp_path / "sl",
        [*RUN, "objective=selflabel", f"init_from={checkpoint}", "trainer.max_epochs=2"],
        tiny=False,
        resolve=False,
    )
    metrics = train(cfg)
    cfg = OmegaConf.load(tmp_path / "sl" / "config.yaml")  # the run's resolved config
    assert cfg.data._target_.endswith("FeatureDataModule") and "train_transform" not in cfg.data
    assert cfg.features.pairing == "eval" and metrics["acc"] == pytest.approx(1.0)


def test_copying_images_that_moved_is_refused_before_anything_is_written(
    tmp_path, predict_in_process, features_run
):
    clusterer = features_run
    features, _ = blobs()
    listed = tmp_path / "listed.npz"
    np.savez(listed, features=features, paths=np.array([f"moved/{i}.png" for i in range(len(features))]))
    code, err = predict_in_process(
        tmp_path, f"ckpt_path={clusterer.checkpoint_}", f"input={listed}", "output=out", "copy_images=copy"
    )
    assert code == 2 and "do not exist" in err and not (tmp_path / "out").exists()


def test_a_file_named_npz_that_holds_one_array_is_read_by_its_loader_not_a_traceback(tmp_path):
    from vtcc.api.inputs import data_kind

    odd = tmp_path / "odd.npz"
    with open(odd, "wb") as handle:
        np.save(handle, np.zeros((3, 2)))
    assert data_kind(odd) == "npz" and data_kind(tmp_path / "f.npy") == "features"
