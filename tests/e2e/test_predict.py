"""vtcc-predict on a folder the test writes: one CSV row per image, same clusters as evaluation."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import TINY, changes, input_snapshot, run_cli
from tests.fake_data import write_digit_folder
from vtcc.build import restore_run
from vtcc.data import load_digits


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A 1-epoch run on 300 digits written as PNG class folders."""
    cwd = tmp_path_factory.mktemp("predict")
    write_digit_folder(cwd / "images", 300)
    before = input_snapshot(cwd / "images")
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
    assert not changes(before, input_snapshot(cwd / "images"))  # training left its input as it was
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


def test_predict_matches_evaluation_assignments(folder_run, monkeypatch, untouched_inputs):
    untouched_inputs(folder_run / "images")
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


def test_predict_refuses_to_overwrite_and_names_bad_inputs(folder_run, predict_in_process, untouched_inputs):
    untouched_inputs(folder_run / "images")
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
    assert (
        code == 2
        and "seed=-1 must be an integer between 0 and 2**32 - 1" in stderr
        and "Traceback" not in stderr
    )
    assert not (folder_run / "out4").exists()  # refused before anything was written
    (folder_run / "binary.txt").write_bytes(bytes(range(256)))
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=binary.txt", "output=out5"
    )
    assert code == 2 and "is not a text file listing image paths" in stderr and "Traceback" not in stderr


def test_predict_on_an_npz_runs_own_images_matches_evaluation(tmp_path, untouched_inputs):
    """An RGB npz run (3 channels, one-value mean): predict decodes with the run's channels and
    size, then evaluation's own resize, so the run's images get evaluation's clusters."""
    digits = load_digits()
    rgb = np.repeat(digits.images[:200, 0].numpy()[..., None], 3, axis=-1)  # (N, 8, 8, 3)
    np.savez(tmp_path / "digits.npz", x=rgb, y=digits.labels[:200].numpy())
    (tmp_path / "images").mkdir()
    for index in range(200):
        Image.fromarray(rgb[index]).save(tmp_path / "images" / f"{index:04d}.png")
    untouched_inputs(tmp_path / "images", tmp_path / "digits.npz")
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


def cluster_files(output: Path) -> list[Path]:
    return sorted(output.glob("cluster_*/*"))


def test_predict_link_then_copy_into_the_same_output_never_writes_through_the_links(
    folder_run, predict_in_process, untouched_inputs
):
    """Hole 2 of the issue: copy_images=copy overwrite=true over an earlier copy_images=link output
    copied onto the links, overwriting every input image; the reverse order ended in a traceback."""
    untouched_inputs(folder_run / "images")
    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    (folder_run / "others").mkdir()  # another input, other bytes, the same names
    for index in range(300):
        Image.fromarray(np.full((8, 8), index % 256, np.uint8)).save(
            folder_run / "others" / f"{index:04d}.png"
        )
    common = (f"ckpt_path={checkpoint}", "output=sorted", "device=cpu")
    code, stderr = predict_in_process(folder_run, *common, "input=images", "copy_images=link")
    assert code == 0, stderr[-2000:]
    linked = cluster_files(folder_run / "sorted")
    assert len(linked) == 300 and all(p.is_symlink() for p in linked)
    (folder_run / "sorted" / "notes.txt").write_text("the user's notes")  # kept by every later run

    code, stderr = predict_in_process(
        folder_run, *common, "input=others", "copy_images=copy", "overwrite=true"
    )
    assert code == 0, stderr[-2000:]
    copied = cluster_files(folder_run / "sorted")
    assert len(copied) == 300 and not any(p.is_symlink() for p in copied)  # the old links are gone
    sources = {p.name: p for p in (folder_run / "others").iterdir()}
    for path in copied:  # <index>_<name>: each a copy of the other input's image
        assert path.read_bytes() == sources[path.name.split("_", 1)[1]].read_bytes()

    code, stderr = predict_in_process(
        folder_run, *common, "input=images", "copy_images=link", "overwrite=true"
    )
    assert code == 0 and "Traceback" not in stderr, stderr[-2000:]
    relinked = cluster_files(folder_run / "sorted")
    assert len(relinked) == 300 and all(p.is_symlink() for p in relinked)
    assert all(Path(os.readlink(p)).parent.parent == (folder_run / "images").resolve() for p in relinked)
    assert (folder_run / "sorted" / "notes.txt").read_text() == "the user's notes"


def test_predict_never_replaces_a_file_it_did_not_write_nor_writes_into_its_input(
    folder_run, predict_in_process, untouched_inputs
):
    untouched_inputs(folder_run / "images")
    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    (folder_run / "mine").mkdir()
    (folder_run / "mine" / "clusters.csv").write_text("the user's own table")
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=images", "output=mine", "overwrite=true", "device=cpu"
    )
    assert code == 2 and "Traceback" not in stderr and stderr.count("\n") == 1
    assert "clusters.csv" in stderr and "not written by vtcc" in stderr
    assert (folder_run / "mine" / "clusters.csv").read_text() == "the user's own table"
    assert sorted(p.name for p in (folder_run / "mine").iterdir()) == ["clusters.csv"]
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=images", "output=images/sorted", "device=cpu"
    )
    assert code == 2 and "which this command reads" in stderr and "Traceback" not in stderr


def test_predict_with_a_curation_splits_merges_moves_names_and_sets_outliers_aside(
    folder_run, predict_in_process, untouched_inputs
):
    """curation=: the run's biggest cluster split in two by two centroids of its embedding, the
    second part merged into an unused cluster, three images moved into a new cluster, one image set
    aside, clusters named; the CSV, the Parquet file and the folders carry it all."""
    import json

    untouched_inputs(folder_run / "images")
    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=images", "output=plain", "embeddings=true"
    )
    assert code == 0, stderr[-2000:]
    plain = read_rows(folder_run / "plain/clusters.csv")
    embeddings = np.load(folder_run / "plain/embeddings.npy")
    run_clusters = np.array([int(row["cluster"]) for row in plain])
    big = int(np.bincount(run_clusters).argmax())
    unused = next(k for k in range(10) if k != big)
    members = np.flatnonzero(run_clusters == big)
    far = members[np.argmax(((embeddings[members] - embeddings[members[0]]) ** 2).sum(1))]
    centroids = embeddings[[members[0], far]]
    part = ((embeddings[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    moved = [plain[i]["path"] for i in members[:3]]
    aside = plain[int(members[3])]["path"]
    (folder_run / "curation.json").write_text(
        json.dumps(
            {
                "format": "vtcc-curation",
                "version": 1,
                "num_clusters": 10,
                "names": [
                    {"cluster": big, "name": "first half"},
                    {"cluster": 10, "name": "second half", "note": "an undeclared key: dropped"},
                    {"cluster": 11, "name": "moved/../ones"},
                ],
                "splits": [{"cluster": big, "into": [big, 10], "centroids": centroids.tolist()}],
                "merges": [[10, unused]],
                "moves": [{"path": path, "cluster": 11} for path in moved],
                "outliers": [aside],
            }
        )
    )
    code, stderr = predict_in_process(
        folder_run,
        f"ckpt_path={checkpoint}",
        "input=images",
        "output=curated",
        "curation=curation.json",
        "parquet=true",
        "copy_images=link",
        "device=cpu",
    )
    assert code == 0, stderr[-2000:]
    rows = read_rows(folder_run / "curated/clusters.csv")
    assert [row["path"] for row in rows] == [row["path"] for row in plain]
    names = {big: "first half", unused: "second half", 11: "moved/../ones"}
    for index, row in enumerate(rows):
        expected = int(run_clusters[index])
        if expected == big:
            expected = big if part[index] == 0 else unused
        expected = 11 if row["path"] in moved else expected
        assert (int(row["cluster"]), int(row["model_cluster"])) == (expected, run_clusters[index]), row
        assert row["name"] == names.get(expected, "") and row["outlier"] == str(row["path"] == aside)
    assert {int(row["cluster"]) for row in rows} >= {big, unused, 11}  # the split made two parts
    table = pq.read_table(folder_run / "curated/clusters.parquet")
    assert table.column("name").to_pylist() == [row["name"] for row in rows]
    assert table.column("outlier").to_pylist() == [row["path"] == aside for row in rows]
    folders = {p.name: len(list(p.iterdir())) for p in (folder_run / "curated").iterdir() if p.is_dir()}
    assert folders["cluster_011_moved_.._ones"] == 3 and folders["outliers"] == 1  # no path from a name
    assert folders[f"cluster_{big:03d}_first_half"] == sum(
        int(row["cluster"]) == big and row["path"] != aside for row in rows
    )
    assert f"cluster_{unused:03d}_second_half" in folders


def test_predict_refuses_a_curation_of_another_run(folder_run, predict_in_process):
    import json

    checkpoint = folder_run / "run/checkpoints/last.ckpt"
    (folder_run / "other.json").write_text(
        json.dumps({"format": "vtcc-curation", "version": 1, "num_clusters": 4, "merges": [[0, 1]]})
    )
    code, stderr = predict_in_process(
        folder_run, f"ckpt_path={checkpoint}", "input=images", "output=refused", "curation=other.json"
    )
    assert code == 2 and "other.json was made on a run with 4 clusters and this run has 10" in stderr, stderr
    assert "Traceback" not in stderr and not (folder_run / "refused").exists()
