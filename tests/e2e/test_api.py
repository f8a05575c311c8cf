"""vtcc.Clusterer: the CLI's resolve/build path from Python, on arrays, folders and path lists."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import vtcc
from tests.conftest import TINY, run_cli
from vtcc.api.compose import override_list, override_value
from vtcc.api.inputs import link_inputs
from vtcc.data import load_digits
from vtcc.errors import ConfigError
from vtcc.utils.checkpoint import load_checkpoint

SETTINGS = [*TINY, "data.batch_size=64", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    arrays = load_digits()
    return arrays.images[:240, 0].numpy(), arrays.labels[:240].numpy()  # (N, 8, 8) uint8


@pytest.fixture(scope="module")
def array_fit(digits, tmp_path_factory):
    x, y = digits
    root = tmp_path_factory.mktemp("api")
    clusterer = vtcc.Clusterer(
        num_clusters=10, overrides=SETTINGS, run_dir=root / "run", seed=0, device="cpu"
    )
    return clusterer.fit(x, labels=y), root


def test_settings_are_written_as_the_cli_writes_them():
    assert override_list({"model": "pretrained", "module.gamma": 2.5}, {"trainer__max_epochs": 5}) == [
        "model=pretrained",
        "module.gamma=2.5",
        "trainer.max_epochs=5",
    ]
    assert override_value([1, None, True]) == "[1,null,true]"
    assert override_value("a b's") == "'a b\\'s'"  # quoted: Hydra reads it back as the same text
    assert override_value(Path("dir/x.ckpt")) == "dir/x.ckpt"


def test_an_array_fit_is_a_cli_run(array_fit, digits, tmp_path, untouched_inputs):
    """The same array through vtcc-train (data=npz) and through Clusterer: the same weights, and
    the Clusterer's labels are the run's final evaluation, which predict reproduces."""
    clusterer, root = array_fit
    x, y = digits
    assert clusterer.labels_.shape == (240,) and clusterer.num_clusters_ == 10
    assert set(clusterer.metrics_) >= {"acc", "nmi", "ari"}  # the labels scored the run
    assert (clusterer.run_dir_ / "config.yaml").is_file() and (clusterer.run_dir_ / "train.log").is_file()
    np.savez(tmp_path / "digits.npz", x=x, y=y)
    untouched_inputs(tmp_path / "digits.npz")  # the CLI and Clusterer runs below read it
    cli = run_cli(
        "train",
        *SETTINGS,
        "seed=0",
        "num_clusters=10",
        "data=npz",
        f"data.root={tmp_path / 'digits.npz'}",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    ours = load_checkpoint(clusterer.checkpoint_)["state_dict"]
    theirs = load_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert np.array_equal(clusterer.predict(x), clusterer.labels_)
    probabilities = clusterer.predict_proba(x)
    assert probabilities.shape == (240, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.allclose(probabilities.max(1), clusterer.confidence_, atol=1e-5)
    assert np.allclose(clusterer.transform(x), clusterer.embeddings_, atol=1e-5)
    # and the other way round: the CLI run evaluated, predicted and resumed from Python
    cli_checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    loaded = vtcc.Clusterer.load(cli_checkpoint)
    loaded.device = "cpu"
    final = json.loads((tmp_path / "run/final_metrics.json").read_text())
    assert loaded.evaluate(x, y)["acc"] == pytest.approx(final["acc"], abs=1e-6)
    settings = [item for item in SETTINGS if not item.startswith("trainer.max_epochs=")]
    resumed = vtcc.Clusterer(
        num_clusters=10,
        overrides=[*settings, "seed=0", f"ckpt_path={cli_checkpoint}", "trainer.max_epochs=2"],
        run_dir=tmp_path / "more",
        device="cpu",
    ).fit(tmp_path / "digits.npz")
    assert load_checkpoint(resumed.checkpoint_)["epoch"] == 1  # the CLI run's epoch 0, then one more


def test_a_saved_clusterer_loads_and_predicts_and_the_cli_resumes_it(array_fit, digits, tmp_path):
    clusterer, _ = array_fit
    x, _ = digits
    saved = clusterer.save(tmp_path / "model.ckpt")
    with pytest.raises(ConfigError, match="already exists"):
        clusterer.save(saved)
    again = vtcc.Clusterer.load(saved)
    again.device = "cpu"
    assert np.array_equal(again.predict(x), clusterer.labels_)
    # resumed from the command line for one more epoch, with its settings as the CLI keeps them
    items = yaml.safe_load((clusterer.run_dir_ / ".hydra/overrides.yaml").read_text())
    items = [item for item in items if not item.startswith(("paths.output_dir=", "trainer.max_epochs="))]
    resumed = run_cli(
        "train",
        *items,
        f"ckpt_path={clusterer.checkpoint_}",
        "trainer.max_epochs=2",
        "hydra.run.dir=more",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(tmp_path / "more/checkpoints/last.ckpt")["epoch"] == 1


def test_folders_and_path_lists_in_one_process(digits, tmp_path, untouched_inputs):
    """A class-folder tree and the list of its paths: two fits in one process, no Hydra or log
    handler left behind, and each predict on its own images gives its labels."""
    x, y = digits
    paths = []
    for index in range(120):
        folder = tmp_path / "images" / str(int(y[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[index]).save(folder / f"{index:04d}.png")
        paths.append(folder / f"{index:04d}.png")
    untouched_inputs(tmp_path / "images")
    handlers = list(logging.getLogger("vtcc").handlers)
    settings = [*SETTINGS, "data.in_chans=1", "data.mean=[0.3]", "data.std=[0.4]"]
    by_folder = vtcc.Clusterer(overrides=settings, run_dir=tmp_path / "a", device="cpu")
    by_folder.fit(tmp_path / "images")
    assert not GlobalHydra.instance().is_initialized()
    assert logging.getLogger("vtcc").handlers == handlers
    assert np.array_equal(by_folder.predict(tmp_path / "images"), by_folder.labels_)
    ordered = sorted(paths)  # the folder's order: class folders, then names
    listed = vtcc.Clusterer(overrides=settings, run_dir=tmp_path / "b", num_clusters=10, device="cpu")
    listed.fit(ordered)
    assert listed.labels_.shape == (120,) and "acc" not in listed.metrics_  # a flat list has no labels
    assert np.array_equal(listed.labels_, by_folder.labels_)  # same images, order and seed
    assert np.array_equal(listed.embeddings_, by_folder.embeddings_)
    shuffled = [ordered[i] for i in np.random.default_rng(0).permutation(len(ordered))]
    again = vtcc.Clusterer(overrides=settings, run_dir=tmp_path / "c", num_clusters=10, device="cpu")
    again.fit(shuffled)  # labels_ and the rest follow the order given, not the sorted one
    assert np.array_equal(again.predict(shuffled), again.labels_)
    # a tiny run's clusters may all be one: the embeddings tell the images apart
    assert np.allclose(again.transform(shuffled), again.embeddings_, atol=1e-5)
    assert not np.allclose(again.transform(ordered), again.embeddings_, atol=1e-3)


def test_mistakes_are_one_line_exceptions(digits, tmp_path):
    x, _ = digits
    cases = [
        (dict(trainer__max_epochs="many"), x, "trainer.max_epochs"),
        (dict(model__no_such_key=1), x, "no_such_key"),
        ({}, x.astype(np.float32), "uint8"),
        ({}, tmp_path / "absent", "no such folder"),
        ({}, 3, "images of type int"),
    ]
    (tmp_path / "notes.gif").write_bytes(b"GIF89a")
    cases += [
        ({}, [tmp_path / "notes.gif", tmp_path / "notes.gif"], "not images"),
        ({}, [x[0], x[1]], "must hold paths"),
        (dict(num_clusters=np.int64(10), time_budget_minutes=-1.0), x, "time_budget_minutes"),
    ]
    for settings, images, words in cases:
        with pytest.raises(ConfigError, match=words) as caught:
            vtcc.Clusterer(overrides=SETTINGS, run_dir=tmp_path / "bad", **settings).fit(images)
        assert "\n" not in str(caught.value).strip(), caught.value
        assert not (tmp_path / "bad").exists(), settings  # refused before anything was written
    for overrides, words in ((5, "give a dict"), ({"hydra.run.dir": "elsewhere"}, "run_dir=")):
        with pytest.raises(ConfigError, match=words):
            vtcc.Clusterer(overrides=overrides, run_dir=tmp_path / "bad").fit(x)
    with pytest.raises(ConfigError, match="not fitted"):
        vtcc.Clusterer().predict(x)
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="notes.ckpt"):
        vtcc.Clusterer.load(tmp_path / "notes.ckpt")
    with pytest.raises(ConfigError, match="labels must be integers"):
        vtcc.Clusterer(overrides=SETTINGS, run_dir=tmp_path / "bad2", num_clusters=3).fit(
            x, labels=np.zeros(3)
        )
    with pytest.raises(ConfigError, match="never choose K"):  # labels only score
        vtcc.Clusterer(overrides=SETTINGS, run_dir=tmp_path / "bad3").fit(x, labels=np.zeros(len(x), int))
    assert not (tmp_path / "bad2").exists() and not (tmp_path / "bad3").exists()


def test_save_over_a_link_replaces_the_link_never_its_target(array_fit, tmp_path, untouched_inputs):
    clusterer, _ = array_fit
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "weights.pt").write_bytes(b"the user's own weights")
    (tmp_path / "model.ckpt").symlink_to(tmp_path / "user" / "weights.pt")
    untouched_inputs(tmp_path / "user")
    clusterer.save(tmp_path / "model.ckpt", overwrite=True)
    assert not (tmp_path / "model.ckpt").is_symlink()
    assert (tmp_path / "model.ckpt").read_bytes() == clusterer.checkpoint_.read_bytes()


def test_a_refit_replaces_its_links_to_the_images_and_never_writes_through_them(tmp_path, untouched_inputs):
    images = []
    for name in ("a", "b", "c"):
        (tmp_path / "user" / name).mkdir(parents=True)
        images.append(tmp_path / "user" / name / "image.png")
        images[-1].write_bytes(name.encode())
    untouched_inputs(tmp_path / "user")
    link_inputs(images[:2], tmp_path / "run" / "inputs")
    link_inputs(images[1:], tmp_path / "run" / "inputs")  # overwrite=True: the earlier links go
    linked = sorted((tmp_path / "run" / "inputs").iterdir())
    assert [p.name for p in linked] == ["000000_image.png", "000001_image.png"]
    assert [p.read_bytes() for p in linked] == [b"b", b"c"] and all(p.is_symlink() for p in linked)
    (tmp_path / "run" / "inputs" / "mine.png").write_bytes(b"a user's file")
    with pytest.raises(ConfigError, match="vtcc did not write"):
        link_inputs(images, tmp_path / "run" / "inputs")
    assert (tmp_path / "run" / "inputs" / "mine.png").read_bytes() == b"a user's file"


def test_a_second_fit_into_a_used_folder_is_refused_and_the_first_kept(array_fit, digits):
    clusterer, _ = array_fit
    x, _ = digits
    before = (clusterer.run_dir_ / "inputs.npz").read_bytes()
    with pytest.raises(ConfigError, match="overwrite"):
        vtcc.Clusterer(num_clusters=10, overrides=SETTINGS, run_dir=clusterer.run_dir_).fit(x[:50])
    assert (clusterer.run_dir_ / "inputs.npz").read_bytes() == before


def test_the_callers_hydra_is_left_as_it_was():
    from hydra import compose, initialize_config_dir

    from vtcc.api.compose import compose_config
    from vtcc.utils.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        compose_config("train", ["seed=3"])  # the API composing inside the caller's Hydra
        assert GlobalHydra.instance().is_initialized()
        assert compose("train", ["seed=5"]).seed == 5  # the caller's still composes


def test_the_python_page_runs_as_written(tmp_path, monkeypatch):
    """docs/python-api.md's examples under doctest, from a fresh folder (they write outputs/)."""
    import doctest

    monkeypatch.chdir(tmp_path)
    page = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0, result


def test_curate_and_apply_curation_from_python(array_fit, digits, tmp_path):
    """A curation built in Python is the file vtcc-predict reads; applied, predict and labels_
    follow its merges, predict_curated its moves, outliers and names; a wrong one is one line."""
    import copy

    clusterer, _ = array_fit
    x, _ = digits
    plain = vtcc.Clusterer.load(clusterer.checkpoint_)
    plain.device = "cpu"
    run_clusters = plain.predict(x)
    big = int(np.bincount(run_clusters, minlength=10).argmax())
    other = (big + 1) % 10
    curation = clusterer.curate(
        names={other: "together"}, merges=[[big, other]], path=tmp_path / "curation.json"
    )
    written = json.loads((tmp_path / "curation.json").read_text())
    assert written["merges"] == [[big, other]] and written["num_clusters"] == 10
    assert written["names"] == [{"cluster": other, "name": "together"}]
    kept = min(big, other)
    merged = np.where(np.isin(run_clusters, [big, other]), kept, run_clusters)
    plain.apply_curation(tmp_path / "curation.json")
    assert np.array_equal(plain.predict(x), merged) and plain.cluster_names_ == {kept: "together"}
    fitted = copy.copy(clusterer)
    fitted.apply_curation(curation)
    assert np.array_equal(
        fitted.labels_, np.where(np.isin(clusterer.labels_, [big, other]), kept, clusterer.labels_)
    )
    fitted.apply_curation(clusterer.curate())  # a second curation starts from the run's own labels
    assert np.array_equal(fitted.labels_, clusterer.labels_)
    # moves and outliers by path, on a folder of the same images
    for index in range(6):
        Image.fromarray(x[index]).save(tmp_path / f"{index}.png")
    moves = {tmp_path / "0.png": 12, str(tmp_path / "1.png"): other}
    plain.apply_curation(clusterer.curate(moves=moves, outliers=[tmp_path / "2.png"], names={12: "new"}))
    result = plain.predict_curated(tmp_path)
    assert result.clusters.tolist() == [12, other, *run_clusters[2:6].tolist()]
    assert result.outlier.tolist() == [False, False, True, False, False, False]
    assert result.name_of()[0] == "new" and result.model_clusters.tolist() == run_clusters[:6].tolist()
    with pytest.raises(ConfigError, match="names cluster 99, which this run of 10 clusters does not have"):
        clusterer.curate(names={99: "nowhere"})
    (tmp_path / "other.json").write_text('{"format": "vtcc-curation", "version": 1, "num_clusters": 3}')
    with pytest.raises(ConfigError, match="made on a run with 3 clusters and this run has 10"):
        plain.apply_curation(tmp_path / "other.json")
    assert [row["kind"] for row in curation.table()] == ["name", "merge", "merge"]
