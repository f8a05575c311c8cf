"""curation.json: its schema read strictly, and what applying it does to a run's assignments."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from vtcc.curation import (
    CURATION_LIMIT,
    Curation,
    Split,
    apply_curation,
    build_curation,
    curation_from_record,
    read_curation,
)
from vtcc.errors import ConfigError

VALID = {
    "format": "vtcc-curation",
    "version": 1,
    "num_clusters": 4,
    "names": [{"cluster": 0, "name": "zeros"}, {"cluster": 5, "name": "new"}],
    "merges": [[2, 1]],
    "splits": [{"cluster": 3, "into": [3, 4], "centroids": [[0.0, 0.0], [10.0, 10.0]]}],
    "moves": [{"path": "photos/a.png", "cluster": 5}],
    "outliers": ["photos/b.png"],
}


def written(tmp_path: Path, document, name: str = "curation.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_a_valid_file_reads_as_written_and_writes_back_the_same(tmp_path):
    curation = read_curation(written(tmp_path, VALID))
    assert curation.names == {0: "zeros", 5: "new"} and curation.merges == ((2, 1),)
    assert curation.canonical() == {2: 1, 1: 1} and curation.moves == {"photos/a.png": 5}
    assert curation.splits[0].into == (3, 4) and curation.splits[0].centroids.shape == (2, 2)
    assert curation.outliers == ("photos/b.png",) and curation.created() == {3, 4, 5}
    again = read_curation(curation.save(tmp_path / "again.json"))
    assert again.as_record() == curation.as_record()
    kinds = [row["kind"] for row in curation.table()]
    assert kinds.count("merge") == 2 and kinds.count("move") == 1 and kinds.count("outlier") == 1
    minimal = read_curation(written(tmp_path, {"format": "vtcc-curation", "version": 1}, "min.json"))
    assert minimal == Curation(where=str(tmp_path / "min.json"))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(version=2), "version is 2: this vtcc reads version 1"),
        (lambda d: d.update(format="other"), "format must be one of vtcc-curation"),
        (lambda d: d.update(merges=[[1]]), "merges[0] must be a list of 2 to"),
        (lambda d: d.update(merges=[[1, 2], [2, 3]]), "merges name a cluster twice"),
        (lambda d: d.update(merges=[["1", 2]]), "merges[0][0] must be an integer"),
        (lambda d: d["names"].append({"cluster": 0, "name": "again"}), "names cluster 0 twice"),
        (lambda d: d["names"].append({"cluster": 9, "name": "x"}), "names cluster 9, which this run"),
        (lambda d: d["moves"].append({"path": "photos/a.png", "cluster": 1}), "moves photos/a.png a second"),
        (lambda d: d["moves"].append({"path": 7, "cluster": 1}), "moves[1].path must be a string"),
        (lambda d: d["moves"].append({"path": "a\x00b", "cluster": 1}), "moves[1].path must be a string"),
        (lambda d: d["splits"][0].update(into=[3]), "splits[0].into must be a list of 2 to"),
        (lambda d: d["splits"][0]["centroids"].append([1.0, 1.0]), "one centroid per part"),
        (lambda d: d["splits"][0].update(cluster=7), "names cluster 7, which this run"),
        (lambda d: d["outliers"].append("${oc.env:HOME}"), "outliers[1] holds an interpolation"),
        (lambda d: d["names"][0].update(name="${oc.env:HOME}"), "holds an interpolation"),
        (lambda d: d.update(num_clusters="4"), "num_clusters must be an integer"),
    ],
)
def test_a_wrong_file_is_refused_in_one_line_naming_the_file_and_the_field(tmp_path, change, named):
    document = json.loads(json.dumps(VALID))
    change(document)
    with pytest.raises(ConfigError) as raised:
        read_curation(written(tmp_path, document))
    message = str(raised.value)
    assert named in message and "curation.json" in message and "\n" not in message, message


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "curation.json"
    with path.open("wb") as handle:
        handle.truncate(CURATION_LIMIT + 1)  # sparse: no memory used
    with pytest.raises(ConfigError, match=f"holds {CURATION_LIMIT + 1} bytes"):
        read_curation(path)


def assignments(count: int = 8, k: int = 4) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Image ``i`` in cluster ``i % k`` with probability 0.7 (0.1 each other); embeddings at
    ``(i, i)``; paths ``photos/<i>.png``."""
    probabilities = np.full((count, k), 0.3 / (k - 1), dtype=np.float32)
    probabilities[np.arange(count), np.arange(count) % k] = 0.7
    embeddings = np.repeat(np.arange(count, dtype=np.float32)[:, None], 2, axis=1)
    return probabilities, embeddings, [f"photos/{i}.png" for i in range(count)]


def test_merges_splits_moves_outliers_and_names_apply_in_order(caplog):
    probabilities, embeddings, paths = assignments()
    document = json.loads(json.dumps(VALID))
    document["moves"] = [
        {"path": "photos/0.png", "cluster": 5},
        {"path": "photos/4.png", "cluster": 2},  # merged into 1: lands in 1
        {"path": "elsewhere/x.png", "cluster": 0},
    ]
    document["outliers"] = ["photos/6.png"]
    curation = curation_from_record(document, "curation.json")
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        curated = apply_curation(curation, probabilities, embeddings, paths)
    # run's clusters 0 1 2 3 0 1 2 3; 2 -> 1; cluster 3's images at (3, 3) and (7, 7): centroid (0, 0)
    # is nearer to (3, 3) (part 3) and (10, 10) to (7, 7) (part 4); 0 -> 5 and 4 -> 1 by their moves.
    assert curated.clusters.tolist() == [5, 1, 1, 3, 1, 1, 1, 4]
    assert curated.model_clusters.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert curated.outlier.tolist() == [False] * 6 + [True, False]
    assert curated.name_of()[0] == "new" and curated.name_of()[2] == ""
    assert np.allclose(curated.confidence, [0, 0.8, 0.8, 0.7, 0.2, 0.8, 0.8, 0.7])  # merged mass
    assert "1 of its 4 image decisions name images not among these 8 (e.g. elsewhere/x.png)" in caplog.text


def test_a_path_matches_as_written_or_as_the_same_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    probabilities, embeddings, _ = assignments(4)
    paths = [str(tmp_path / "photos" / f"{i}.png") for i in range(4)]
    curation = build_curation(4, moves={"photos/../photos/1.png": 3, Path(paths[2]): 0})
    assert apply_curation(curation, probabilities, embeddings, paths).clusters.tolist() == [0, 3, 0, 3]


def test_a_curation_of_another_run_is_refused():
    probabilities, embeddings, paths = assignments(6, k=3)
    with pytest.raises(ConfigError, match="made on a run with 4 clusters and this run has 3"):
        apply_curation(build_curation(4, names={0: "a"}), probabilities, embeddings, paths)
    split = Curation(splits=(Split(0, (0, 3), np.zeros((2, 3), np.float32)),))
    with pytest.raises(ConfigError, match="centroids 3 wide and this run's embeddings are 2"):
        apply_curation(split, probabilities, embeddings, paths)


def test_names_of_merged_clusters_go_to_the_kept_cluster():
    probabilities, embeddings, paths = assignments(4)
    kept_own = build_curation(4, names={1: "one", 2: "two"}, merges=[[2, 1]])
    assert apply_curation(kept_own, probabilities, embeddings, paths).names == {1: "one"}
    merged_only = build_curation(4, names={2: "two"}, merges=[[2, 1]])
    assert apply_curation(merged_only, probabilities, embeddings, paths).names == {1: "two"}


def test_build_curation_takes_numpy_integers_and_refuses_wrong_types():
    assert build_curation(4, merges=[[np.int64(1), np.int64(2)]]).merges == ((1, 2),)
    with pytest.raises(ConfigError, match=r"Clusterer.curate: names\[0\].name must be a string"):
        build_curation(4, names={0: 5})
    with pytest.raises(ConfigError, match="moves as {path: cluster}"):
        build_curation(4, moves=["a.png"])


def test_the_file_reads_into_pandas(tmp_path):
    pandas = pytest.importorskip("pandas")  # not a vtcc dependency: where it is installed
    curation = read_curation(written(tmp_path, VALID))
    table = pandas.DataFrame(curation.table())
    assert table.groupby("kind").size().to_dict() == {
        "merge": 2,
        "move": 1,
        "name": 2,
        "outlier": 1,
        "split": 2,
    }
    moves = pandas.json_normalize(json.loads((tmp_path / "curation.json").read_text()), record_path="moves")
    assert moves.to_dict("records") == [{"path": "photos/a.png", "cluster": 5}]


def test_paths_outside_the_inputs_are_never_opened_and_are_named(tmp_path, caplog):
    """Moves and outliers naming a FIFO, a device, a file outside and a parent path: nothing is
    opened (a read of the FIFO would hang), nothing is written, and the first is named."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "secret.txt").write_text("secret")
    before = sorted(p.name for p in tmp_path.iterdir())
    named = [str(tmp_path / "pipe"), "/dev/zero", str(tmp_path / "secret.txt"), "../../etc/passwd"]
    curation = build_curation(4, moves={named[0]: 1, named[1]: 2}, outliers=named[2:])
    probabilities, embeddings, paths = assignments(4)
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        curated = apply_curation(curation, probabilities, embeddings, paths)
    assert curated.clusters.tolist() == [0, 1, 2, 3] and not curated.outlier.any()
    assert f"4 of its 4 image decisions name images not among these 4 (e.g. {named[0]})" in caplog.text
    inputs = [*paths[:3], named[0]]  # the FIFO given as an input: matched by name, never read
    assert apply_curation(curation, probabilities, embeddings, inputs).clusters.tolist() == [0, 1, 2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
