"""``vtcc-predict ckpt_path=<file> input=<folder or list> output=<dir>``: a cluster for every image.

Writes ``clusters.csv`` (path, cluster, confidence = the largest cluster probability); with
``embeddings=true`` the embeddings (``embeddings.npy``, rows in CSV order, and ``paths.txt``, the
same order); with ``parquet=true`` ``clusters.parquet`` (path, cluster, confidence and 2-D map
coordinates); with ``copy_images`` one folder per cluster with copies or links of the images.
With ``curation=<curation.json>`` (:mod:`vtcc.curation`) the person's merges, splits, moves and
names apply: the tables gain ``name``, ``outlier`` and ``model_cluster``, the folders are named
``cluster_XXX_<name>`` and the outliers go to ``outliers/``. A run trained with a curation
(``vtcc-train init_from=... curation=...``) has the curated clusters itself, and its names: without
a file, its tables have those columns too and its folders the names.
Images are preprocessed as the checkpoint's run loaded them (:class:`vtcc.inference.Assigner`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from vtcc.config.validate import validate_config
from vtcc.curation import Curated, Curation, apply_curation, read_curation, sorted_folders
from vtcc.data.feature_file import FEATURE_SUFFIXES, FORMAT, read_features
from vtcc.data.folder import IMAGE_SUFFIXES, images_under
from vtcc.errors import ConfigError
from vtcc.export import require_parquet, write_assignments
from vtcc.inference import Assigner
from vtcc.io.json_records import refuse_interpolation
from vtcc.io.reader import check_regular, read_bytes, reader
from vtcc.io.writer import Writer
from vtcc.utils.checkpoint import own_cache_dir
from vtcc.utils.cli import CONFIG_DIR, checks_command_line, run_safely

log = logging.getLogger("vtcc")


def existing_files(paths: list[Path]) -> list[Path]:
    """``paths``, each of which must exist and be a regular file (one line naming the first that
    does not: never a FIFO, device or folder to copy)."""
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise ConfigError(f"{len(absent)} listed image(s) do not exist, e.g. {absent[0]}")
    for path in paths:
        check_regular(path)
    return paths


@reader("path_list")
def read_path_list(path: Path) -> list[Path]:
    """The image paths a text file lists, one a line (relative to the file's folder, or absolute),
    each an existing regular file; a line holding ``${`` or a NUL is refused in one line."""
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"input={path} is not a text file listing image paths: give a folder of images or such a list"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    refuse_interpolation(lines, path)
    if any("\x00" in line for line in lines):
        raise ConfigError(f"input={path} is not a text file listing image paths: it holds a NUL character")
    return existing_files([Path(line) if Path(line).is_absolute() else path.parent / line for line in lines])


def list_inputs(source: str) -> list[Path]:
    """Every image under a folder (recursively), or the paths listed one per line in a text file."""
    path = Path(source)
    if path.is_dir():
        paths = images_under(path, recursive=True)  # regular files; any other entry skipped and named
    elif path.is_file():
        paths = read_path_list(path)
    else:
        raise ConfigError(f"input={source} is neither a folder of images nor a file listing image paths")
    if not paths:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {source}")
    return paths


# What vtcc-predict writes in its output folder: a later prediction there replaces all of it.
PREDICTED = ("clusters.csv", "clusters.parquet", "embeddings.npy", "paths.txt", "cluster_*/*", "outliers/*")


def prepare_output(output: Path, overwrite: bool, reads: list[Path] = ()) -> Writer:
    """The writer of the output folder (made here); a folder with files needs ``overwrite``, and
    none may lie inside what the command ``reads`` (its input folder or list, the images' folders)."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output={output} is a file: give a folder for the results")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"output={output} already has files: choose a new folder, or add overwrite=true")
    writer = Writer(output, protect=reads)
    writer.make_dirs(output)
    return writer


def read_folders(source: str, images: list[Path]) -> list[Path]:
    """What a prediction reads and never writes into: its input, and the folders of its images."""
    return [Path(source), *{path.parent for path in images}]


def write_outputs(
    writer: Writer,
    output: Path,
    names: list[str],
    images: list[Path],
    assigned,
    cfg: DictConfig,
    seed: int,
) -> None:
    """Every destination checked first (a file vtcc did not write stops it before anything
    changes), then what an earlier prediction wrote here removed (its files and links, never what
    a link points to), then the results, the copies or links of ``images`` (``cfg.copy_images``)."""
    files = ["clusters.csv"]
    files += ["embeddings.npy", "paths.txt"] if cfg.embeddings else []
    files += ["clusters.parquet"] if cfg.parquet else []
    clusters = assigned.clusters.tolist()
    folders = sorted_folders(assigned) if isinstance(assigned, Curated) else None  # named, outliers
    targets = cluster_targets(images, clusters, output, folders) if cfg.copy_images != "none" else []
    destinations = [output / name for name in files] + targets
    writer.check(*destinations)
    writer.remove_recorded(*PREDICTED)
    writer.claim(destinations)
    write_assignments(output, names, assigned, cfg.embeddings, cfg.parquet, seed, writer)
    if cfg.copy_images != "none":
        sort_into_folders(images, clusters, output, cfg.copy_images, writer, folders)


def curated(
    assigned, curation: Curation | None, names: list[str], cluster_names: dict[int, str] | None = None
):
    """``assigned`` with the person's ``curation`` applied (:mod:`vtcc.curation`); without one, with
    the names of a run trained with a curation (``cluster_names``), or as it is."""
    if curation is None:
        if not cluster_names:
            return assigned
        clusters = assigned.clusters
        return Curated(
            clusters,
            assigned.confidence,
            clusters,
            np.zeros(len(clusters), dtype=bool),
            cluster_names,
            assigned.probabilities,
            assigned.embeddings,
        )
    result = apply_curation(curation, assigned.probabilities, assigned.embeddings, names)
    changed = int((result.clusters != result.model_clusters).sum())
    log.info(
        "curation %s: %d images in another cluster than the run's, %d outliers, %d named clusters",
        curation.where,
        changed,
        int(result.outlier.sum()),
        len(set(result.clusters.tolist()) & set(result.names)),
    )
    return result


def read_curation_setting(cfg: DictConfig, num_clusters: int) -> Curation | None:
    """``curation=<file>`` read and checked against the run's K (None: no curation)."""
    if not cfg.get("curation"):
        return None
    curation = read_curation(cfg.curation)
    curation.check_run(num_clusters)
    return curation


def predict(cfg: DictConfig) -> Path:
    validate_config(cfg)  # every value's type, before any work
    for key in ("ckpt_path", "input", "output"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required: vtcc-predict ckpt_path=<file> input=<folder> output=<dir>")
    if cfg.parquet:
        require_parquet()
    seed = 0 if cfg.seed is None else int(cfg.seed)
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed} must be between 0 and 2**32 - 1 (the 2-D map's random state)")
    # a refused checkpoint stops before anything else
    assigner = Assigner(cfg.ckpt_path, cache_dir=own_cache_dir(cfg), device=cfg.device)
    if cfg.copy_images not in ("none", "copy", "link"):
        raise ConfigError(f"copy_images={cfg.copy_images!r} is unknown: use none, copy or link")
    curation = read_curation_setting(cfg, assigner.num_clusters)  # before anything is written
    if assigner.reads_features:
        return predict_features(cfg, assigner, seed, curation)
    paths = list_inputs(cfg.input)
    output = Path(cfg.output)
    writer = prepare_output(output, cfg.overwrite, read_folders(cfg.input, paths))
    names = [str(path) for path in paths]
    assigned = curated(assigner.assign_paths(paths, cfg.batch_size), curation, names, assigner.cluster_names)
    write_outputs(writer, output, names, paths, assigned, cfg, seed)
    sizes = np.bincount(assigned.clusters, minlength=assigner.num_clusters)
    log.info(
        "%d images into %d clusters (sizes %s); written to %s",
        len(paths),
        (sizes > 0).sum(),
        sizes.tolist(),
        output,
    )
    return output / "clusters.csv"


def predict_features(
    cfg: DictConfig, assigner: Assigner, seed: int, curation: Curation | None = None
) -> Path:
    """A run on precomputed features: ``input=<file>.npy`` or ``.npz`` of features of its width; the
    CSV's ``path`` is the row's image path where the file lists them, else ``<file>#<row>``."""
    if Path(cfg.input).suffix not in FEATURE_SUFFIXES:
        raise ConfigError(f"input={cfg.input}: this run clusters feature vectors; give {FORMAT}")
    arrays = read_features(cfg.input)
    if cfg.copy_images != "none" and arrays.paths is None:
        raise ConfigError(
            f"copy_images={cfg.copy_images}: {cfg.input} lists no image paths to copy; save the "
            "features with paths (N,), or drop copy_images"
        )
    names = (
        [str(p) for p in arrays.paths]
        if arrays.paths is not None
        else [f"{cfg.input}#{row}" for row in range(len(arrays.features))]
    )
    images = existing_files(arrays.paths) if cfg.copy_images != "none" else []  # before writing
    assigned = assigner.assign_features(arrays.features.numpy(), cfg.batch_size)  # checked before writing
    assigned = curated(assigned, curation, names, assigner.cluster_names)
    output = Path(cfg.output)
    writer = prepare_output(output, cfg.overwrite, read_folders(cfg.input, images))
    write_outputs(writer, output, names, images, assigned, cfg, seed)
    log.info("%d feature vectors into %d clusters; written to %s", len(names), assigner.num_clusters, output)
    return output / "clusters.csv"


def cluster_targets(
    paths: list[Path], clusters: list[int], output: Path, folders: list[str] | None = None
) -> list[Path]:
    """``output/cluster_XXX/<index>_<name>`` of each image (the index keeps same-named files apart);
    ``folders``: each image's folder instead (a curation's named folders and ``outliers``)."""
    width = max(3, len(str(max(clusters, default=0))))
    folders = folders or [f"cluster_{cluster:0{width}d}" for cluster in clusters]
    return [
        output / folder / f"{index:06d}_{path.name}"
        for index, (path, folder) in enumerate(zip(paths, folders, strict=True))
    ]


def sort_into_folders(
    paths: list[Path],
    clusters: list[int],
    output: Path,
    mode: str,
    writer: Writer | None = None,
    folders: list[str] | None = None,
) -> None:
    """``output/cluster_XXX/`` holds a copy or a symbolic link (``mode``, checked by :func:`predict`
    before anything is written) of each of its images: each made new and renamed into place, so
    what vtcc had there (a link of an earlier prediction) is replaced, never written through."""
    writer = writer or Writer(output)
    for path, target in zip(paths, cluster_targets(paths, clusters, output, folders), strict=True):
        if mode == "copy":
            writer.copy_file(path, target)
        else:
            writer.link_file(path.resolve(), target)


@checks_command_line("predict")  # a value with a space, a renamed key: one line before Hydra
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    run_safely(predict, cfg)


if __name__ == "__main__":
    main()
