"""What a person decided about a run's clusters: ``curation.json``, read strictly, applied to images.

The report's explorer exports the file (names, merges, splits, moves, outliers); ``vtcc-predict
curation=<file>`` and :meth:`vtcc.Clusterer.apply_curation` apply it to new images;
:meth:`vtcc.Clusterer.curate` builds one from Python. Schema (``version`` 1, every list optional)::

    {"format": "vtcc-curation", "version": 1,
     "num_clusters": 10,                                  # K of the run it was made on (or null)
     "names":    [{"cluster": 0, "name": "cats"}],        # a final cluster's name
     "merges":   [[1, 4], [2, 7]],                        # each group becomes its smallest id
     "splits":   [{"cluster": 3, "into": [3, 10],         # the run's cluster 3 in two: each image
                   "centroids": [[...], [...]]}],         # to the nearest centroid (embedding)
     "moves":    [{"path": "photos/a.png", "cluster": 2}],  # this image into cluster 2
     "outliers": ["photos/b.png"]}                        # set aside (marked, never moved)

Applied in that order: the run's cluster, its split part, its merged id; a moved image's cluster is
its move's (merged); ids at or above K are new clusters (a split's parts, a selection moved out).
Paths are plain strings, compared with the images given (as written, or as the same absolute
path); they are never opened, followed or written. The file is data: ``${`` anywhere, a wrong
type, a value out of range or a file over :data:`CURATION_LIMIT` bytes is refused in one line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.errors import ConfigError
from vtcc.io.json_records import Float, Int, List, Maybe, Record, Str, check_record, parse_json
from vtcc.io.reader import UnreadableFile, read_bytes, reader
from vtcc.io.writer import Writer

log = logging.getLogger("vtcc")

FORMAT = "vtcc-curation"
VERSION = 1
CURATION_LIMIT = 32 * 2**20  # bytes: about 250,000 moved images with their paths
MAX_CLUSTER = 100_000  # the largest cluster id a file may name
MAX_IMAGES = 1_000_000  # moves, outliers
MAX_PARTS = 64  # sub-clusters of one split
MAX_WIDTH = 65_536  # a centroid's dimensions
CLUSTER = Int(0, MAX_CLUSTER)
PATH = Str(4096)
CURATION_RECORD = Record(
    format=Str(choices=(FORMAT,)),
    version=Int(1, 2**31),
    num_clusters=Maybe(Int(2, MAX_CLUSTER)),
    names=Maybe(List(Record(cluster=CLUSTER, name=Str(200)), max_length=MAX_CLUSTER)),
    merges=Maybe(List(List(CLUSTER, 2, MAX_CLUSTER), max_length=MAX_CLUSTER)),
    splits=Maybe(
        List(
            Record(
                cluster=CLUSTER,
                into=List(CLUSTER, 2, MAX_PARTS),
                centroids=List(List(Float(-1e6, 1e6), 1, MAX_WIDTH), 2, MAX_PARTS),
            ),
            max_length=MAX_CLUSTER,
        )
    ),
    moves=Maybe(List(Record(path=PATH, cluster=CLUSTER), max_length=MAX_IMAGES)),
    outliers=Maybe(List(PATH, max_length=MAX_IMAGES)),
)
FIX = "export it again from the report's explorer, or see docs/curation.md"


@dataclass(frozen=True)
class Split:
    cluster: int
    into: tuple[int, ...]
    centroids: np.ndarray  # float32 (len(into), D), in the run's embedding


@dataclass(frozen=True)
class Curation:
    """A checked curation (see the module docstring); :func:`read_curation` reads one."""

    names: dict[int, str] = field(default_factory=dict)
    merges: tuple[tuple[int, ...], ...] = ()
    splits: tuple[Split, ...] = ()
    moves: dict[str, int] = field(default_factory=dict)
    outliers: tuple[str, ...] = ()
    num_clusters: int | None = None
    where: str = "the curation"  # what one-line errors name
    sha256: str | None = field(default=None, compare=False)  # of the file read (None: made in Python)

    def canonical(self) -> dict[int, int]:
        """Merged id -> the id it becomes (a group's smallest)."""
        return {member: min(group) for group in self.merges for member in group}

    def owners(self, num_clusters: int) -> dict[int, list[int]]:
        """Final id -> the run's clusters it is made of (a split part: its parent; a merge: all)."""
        canonical, parts, owners = self.canonical(), {s.cluster: s.into for s in self.splits}, {}
        for k in range(num_clusters):
            for part in parts.get(k, (k,)):
                owners.setdefault(canonical.get(part, part), []).append(k)
        return owners

    def final_clusters(self, num_clusters: int) -> list[int]:
        """Every final id this curation gives a run of ``num_clusters`` clusters, in increasing
        order: the run's clusters after the splits and merges, and the clusters moves make."""
        canonical = self.canonical()
        return sorted(set(self.owners(num_clusters)) | {canonical.get(k, k) for k in self.moves.values()})

    def created(self) -> set[int]:
        """The ids the file makes (a split's parts, a move's new cluster) beside the run's."""
        made = {part for split in self.splits for part in split.into}
        return made | set(self.moves.values())

    def check_run(self, num_clusters: int, width: int | None = None) -> None:
        """One line when this curation does not fit a run of ``num_clusters`` clusters and
        embeddings ``width`` wide: another K, a merged, split or named cluster it does not have."""
        if self.num_clusters is not None and self.num_clusters != num_clusters:
            raise ConfigError(
                f"{self.where} was made on a run with {self.num_clusters} clusters and this run has "
                f"{num_clusters}: use the curation with the run it was made on"
            )
        known = set(range(num_clusters)) | self.created()
        named = [*(m for g in self.merges for m in g), *self.names, *(s.cluster for s in self.splits)]
        unknown = sorted({k for k in named if k not in known})
        if unknown:
            raise ConfigError(
                f"{self.where} names cluster {unknown[0]}, which this run of {num_clusters} clusters "
                f"does not have and no split or move makes: {FIX}"
            )
        if any(s.cluster >= num_clusters for s in self.splits):
            raise ConfigError(f"{self.where} splits a cluster the run does not have: {FIX}")
        for split in self.splits:
            if width is not None and split.centroids.shape[1] != width:
                raise ConfigError(
                    f"{self.where}: the split of cluster {split.cluster} has centroids "
                    f"{split.centroids.shape[1]} wide and this run's embeddings are {width}: {FIX}"
                )

    def as_record(self) -> dict[str, Any]:
        """The file's JSON content (:data:`CURATION_RECORD`)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "num_clusters": self.num_clusters,
            "names": [{"cluster": k, "name": name} for k, name in sorted(self.names.items())],
            "merges": [list(group) for group in self.merges],
            "splits": [
                {"cluster": s.cluster, "into": list(s.into), "centroids": s.centroids.round(6).tolist()}
                for s in self.splits
            ],
            "moves": [{"path": path, "cluster": k} for path, k in self.moves.items()],
            "outliers": list(self.outliers),
        }

    def table(self) -> list[dict[str, Any]]:
        """One row per decision (``kind``, ``cluster``, ``into``, ``name``, ``path``), for
        ``pandas.DataFrame(curation.table())``."""
        rows = [dict(kind="name", cluster=k, into=None, name=n, path=None) for k, n in self.names.items()]
        rows += [
            dict(kind="merge", cluster=k, into=min(g), name=None, path=None) for g in self.merges for k in g
        ]
        rows += [
            dict(kind="split", cluster=s.cluster, into=k, name=None, path=None)
            for s in self.splits
            for k in s.into
        ]
        rows += [dict(kind="move", cluster=None, into=k, name=None, path=p) for p, k in self.moves.items()]
        return rows + [
            dict(kind="outlier", cluster=None, into=None, name=None, path=p) for p in self.outliers
        ]

    def save(self, path: str | Path, writer: Writer | None = None) -> Path:
        """Write the file at ``path`` (through ``writer``; default: one over its folder that may
        replace the file named, as :meth:`vtcc.Clusterer.save`)."""
        target = Path(path)
        return (writer or Writer(target.parent, replace_named=True)).write_json(target, self.as_record())


def _problem(where: Any, field_name: str, problem: str) -> UnreadableFile:
    return UnreadableFile(where, problem, FIX, field=field_name)


def _splits(record: list[dict[str, Any]], where: Any) -> tuple[Split, ...]:
    splits, seen, parts = [], set(), set()
    for index, item in enumerate(record):
        name = f"splits[{index}]"
        widths = {len(c) for c in item["centroids"]}
        if len(item["into"]) != len(item["centroids"]) or len(widths) != 1:
            raise _problem(where, name, "must have one centroid per part in into, all of one width")
        if (
            item["cluster"] in seen
            or len(set(item["into"])) != len(item["into"])
            or parts & set(item["into"])
        ):
            raise _problem(where, name, "splits a cluster twice or makes a part twice")
        seen.add(item["cluster"])
        parts |= set(item["into"])
        centroids = np.asarray(item["centroids"], dtype=np.float32)
        splits.append(Split(item["cluster"], tuple(item["into"]), centroids))
    return tuple(splits)


def curation_from_record(record: Any, where: Any) -> Curation:
    """A :class:`Curation` of plain JSON values, each type and rule checked (one line naming
    ``where`` and the field otherwise)."""
    value = check_record(record, CURATION_RECORD, where, FIX)
    if value["version"] != VERSION:
        raise _problem(
            where,
            "version",
            f"is {value['version']}: this vtcc reads version {VERSION} (a newer vtcc wrote it; upgrade vtcc)",
        )
    names: dict[int, str] = {}
    for index, item in enumerate(value["names"] or []):
        if item["cluster"] in names:
            raise _problem(where, f"names[{index}]", f"names cluster {item['cluster']} twice")
        names[item["cluster"]] = item["name"]
    merges = tuple(tuple(group) for group in value["merges"] or [])
    members = [m for group in merges for m in group]
    if len(set(members)) != len(members):
        raise _problem(where, "merges", "name a cluster twice: give each merged cluster in one group")
    moves: dict[str, int] = {}
    for index, item in enumerate(value["moves"] or []):
        if item["path"] in moves:
            raise _problem(where, f"moves[{index}]", f"moves {item['path']} a second time")
        moves[item["path"]] = item["cluster"]
    curation = Curation(
        names=names,
        merges=merges,
        splits=_splits(value["splits"] or [], where),
        moves=moves,
        outliers=tuple(dict.fromkeys(value["outliers"] or [])),
        num_clusters=value["num_clusters"],
        where=str(where),
    )
    if curation.num_clusters is not None:
        curation.check_run(curation.num_clusters)
    return curation


@reader("curation")
def read_curation(path: str | Path) -> Curation:
    """``curation.json`` (a regular file of at most :data:`CURATION_LIMIT` bytes) as a
    :class:`Curation`; anything else is refused in one line naming the file and the field."""
    data = read_bytes(path, CURATION_LIMIT)
    curation = curation_from_record(parse_json(data, path, FIX), path)
    return replace(curation, sha256=hashlib.sha256(data).hexdigest())


def build_curation(
    num_clusters: int,
    names: dict[int, str] | None = None,
    merges: list[list[int]] | None = None,
    moves: dict[str | Path, int] | None = None,
    outliers: list[str | Path] | None = None,
) -> Curation:
    """A curation from Python values, checked as the file is (``where``: ``Clusterer.curate``)."""
    if not isinstance(names or {}, dict) or not isinstance(moves or {}, dict):
        raise ConfigError("Clusterer.curate: give names as {cluster: name} and moves as {path: cluster}")
    record = {
        "format": FORMAT,
        "version": VERSION,
        "num_clusters": int(num_clusters),
        "names": [{"cluster": k, "name": n} for k, n in (names or {}).items()],
        "merges": [list(group) for group in merges or []],
        "moves": [{"path": str(p), "cluster": k} for p, k in (moves or {}).items()],
        "outliers": [str(p) for p in outliers or []],
    }
    return curation_from_record(_plain(record), "Clusterer.curate")


def _plain(value: Any) -> Any:
    """NumPy integers as ``int`` (a label array's items), anything else as it is."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, np.integer) else value


def path_key(path: str) -> str:
    """How a curation's path is compared with an image's: the same absolute path (a string's
    operation only; no file is looked at)."""
    return os.path.normpath(os.path.abspath(path))


@dataclass
class Curated:
    """Assignments with a curation applied, rows in input order: what ``vtcc-predict`` writes
    (``clusters``, ``confidence``, ``embeddings`` as :class:`vtcc.inference.Assignments` has them;
    :meth:`columns` the extra ones)."""

    clusters: np.ndarray  # the final cluster of each image
    confidence: np.ndarray  # the run's probability of it (merged clusters summed; 0: a new cluster)
    model_clusters: np.ndarray  # the run's own cluster, before the curation
    outlier: np.ndarray  # bool: set aside by the person
    names: dict[int, str]
    probabilities: np.ndarray
    embeddings: np.ndarray
    moved: np.ndarray | None = None  # bool: moved by the person (None: not recorded)

    def name_of(self) -> list[str]:
        return [self.names.get(k, "") for k in self.clusters.tolist()]

    def columns(self) -> dict[str, list[Any]]:
        """``name`` (empty where unnamed), ``outlier``, ``model_cluster``."""
        return {
            "name": self.name_of(),
            "outlier": self.outlier.tolist(),
            "model_cluster": self.model_clusters.tolist(),
        }


def final_ids(curation: Curation, model: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Each image's cluster after the splits and the merges (moves not yet)."""
    clusters = model.astype(np.int64).copy()
    for split in curation.splits:
        members = np.flatnonzero(model == split.cluster)
        if len(members):
            distance = ((embeddings[members, None, :] - split.centroids[None]) ** 2).sum(-1)
            clusters[members] = np.asarray(split.into)[distance.argmin(axis=1)]
    canonical = curation.canonical()
    return np.asarray([canonical.get(k, k) for k in clusters.tolist()], dtype=np.int64)


def final_names(curation: Curation) -> dict[int, str]:
    """The name of each final cluster: its own, else that of a cluster merged into it."""
    canonical = curation.canonical()
    names: dict[int, str] = {}
    for k, name in sorted(
        curation.names.items(), key=lambda item: canonical.get(item[0], item[0]) != item[0]
    ):
        names.setdefault(canonical.get(k, k), name)
    return names


def apply_curation(
    curation: Curation, probabilities: np.ndarray, embeddings: np.ndarray, paths: list[str] | None = None
) -> Curated:
    """``curation`` applied to a run's ``probabilities`` ``(N, K)`` and ``embeddings`` ``(N, D)``
    of images named ``paths`` (None: no path decision applies). Decisions naming images not given
    are left out, and a warning names the first."""
    count, num_clusters = probabilities.shape
    curation.check_run(num_clusters, embeddings.shape[1])
    model = probabilities.argmax(axis=1)
    clusters = final_ids(curation, model, embeddings)
    canonical = curation.canonical()
    keys = {path_key(p): i for i, p in enumerate(paths or [])}
    exact = {p: i for i, p in enumerate(paths or [])}
    missing: list[str] = []

    def rows_of(path: str) -> int | None:
        row = exact.get(path, keys.get(path_key(path)))
        if row is None:
            missing.append(path)
        return row

    moved = np.zeros(count, dtype=bool)
    for path, cluster in curation.moves.items():
        row = rows_of(path)
        if row is not None:
            clusters[row], moved[row] = canonical.get(cluster, cluster), True
    outlier = np.zeros(count, dtype=bool)
    for path in curation.outliers:
        row = rows_of(path)
        if row is not None:
            outlier[row] = True
    if missing and paths is not None:
        log.warning(
            "%s: %d of its %d image decisions name images not among these %d (e.g. %s): not applied",
            curation.where,
            len(missing),
            len(curation.moves) + len(curation.outliers),
            count,
            missing[0],
        )
    owners = curation.owners(num_clusters)  # final id -> the run's clusters whose probability it sums
    mass = np.zeros(count, dtype=np.float32)
    for k in np.unique(clusters).tolist():
        rows = clusters == k
        mass[rows] = probabilities[rows][:, owners.get(k, [])].sum(axis=1)
    return Curated(clusters, mass, model, outlier, final_names(curation), probabilities, embeddings, moved)


def folder_name(cluster: int, name: str, width: int) -> str:
    """``cluster_003`` or, named, ``cluster_003_<name>`` (letters, digits, ``.``, ``-`` and ``_``
    only: a name can never make a path)."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._-")[:60]
    return f"cluster_{cluster:0{width}d}" + (f"_{safe}" if safe else "")


def sorted_folders(curated: Curated) -> list[str]:
    """Each image's folder under ``copy_images``: its cluster's (named) folder, or ``outliers``."""
    width = max(3, len(str(int(curated.clusters.max(initial=0)))))
    return [
        "outliers" if outlier else folder_name(k, curated.names.get(k, ""), width)
        for k, outlier in zip(curated.clusters.tolist(), curated.outlier.tolist(), strict=True)
    ]
