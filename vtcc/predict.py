"""``vtcc-predict ckpt_path=<file> input=<folder or list> output=<dir>``: a cluster for every image.

Writes ``clusters.csv`` (path, cluster, confidence = the largest cluster probability); with
``embeddings=true`` the embeddings (``embeddings.npy``, rows in CSV order, and ``paths.txt``, the
same order); with ``parquet=true`` ``clusters.parquet`` (path, cluster, confidence and 2-D map
coordinates); with ``copy_images`` one folder per cluster with copies or links of the images.
Images are preprocessed as the checkpoint's run loaded them (:class:`vtcc.inference.Assigner`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from vtcc.config.validate import validate_config
from vtcc.data.folder import IMAGE_SUFFIXES
from vtcc.errors import ConfigError
from vtcc.export import require_parquet, write_assignments
from vtcc.inference import Assigner
from vtcc.utils.checkpoint import own_cache_dir
from vtcc.utils.cli import CONFIG_DIR, run_safely

log = logging.getLogger("vtcc")


def existing_files(paths: list[Path]) -> list[Path]:
    """``paths``, each of which must exist (one line naming the first that does not)."""
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise ConfigError(f"{len(absent)} listed image(s) do not exist, e.g. {absent[0]}")
    return paths


def list_inputs(source: str) -> list[Path]:
    """Every image under a folder (recursively), or the paths listed one per line in a text file."""
    path = Path(source)
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ConfigError(
                f"input={source} is not a text file listing image paths: give a folder of images "
                "or such a list"
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        paths = existing_files(
            [Path(line) if Path(line).is_absolute() else path.parent / line for line in lines]
        )
    else:
        raise ConfigError(f"input={source} is neither a folder of images nor a file listing image paths")
    if not paths:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {source}")
    return paths


def prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"output={output} already has files: choose a new folder, or add overwrite=true")
    output.mkdir(parents=True, exist_ok=True)


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
    if assigner.reads_features:
        return predict_features(cfg, assigner, seed)
    paths = list_inputs(cfg.input)
    output = Path(cfg.output)
    prepare_output(output, cfg.overwrite)
    assigned = assigner.assign_paths(paths, cfg.batch_size)
    write_assignments(output, [str(path) for path in paths], assigned, cfg.embeddings, cfg.parquet, seed)
    if cfg.copy_images != "none":
        sort_into_folders(paths, assigned.clusters.tolist(), output, cfg.copy_images)
    sizes = np.bincount(assigned.clusters, minlength=assigner.num_clusters)
    log.info(
        "%d images into %d clusters (sizes %s); written to %s",
        len(paths),
        (sizes > 0).sum(),
        sizes.tolist(),
        output,
    )
    return output / "clusters.csv"


def predict_features(cfg: DictConfig, assigner: Assigner, seed: int) -> Path:
    """A run on precomputed features: ``input=<file>.npy`` or ``.npz`` of features of its width; the
    CSV's ``path`` is the row's image path where the file lists them, else ``<file>#<row>``."""
    from vtcc.data.feature_file import FEATURE_SUFFIXES, FORMAT, read_features

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
    output = Path(cfg.output)
    prepare_output(output, cfg.overwrite)
    write_assignments(output, names, assigned, cfg.embeddings, cfg.parquet, seed)
    if cfg.copy_images != "none":
        sort_into_folders(images, assigned.clusters.tolist(), output, cfg.copy_images)
    log.info("%d feature vectors into %d clusters; written to %s", len(names), assigner.num_clusters, output)
    return output / "clusters.csv"


def sort_into_folders(paths: list[Path], clusters: list[int], output: Path, mode: str) -> None:
    """``output/cluster_XXX/`` holds a copy or a symbolic link (``mode``, checked by :func:`predict`
    before anything is written) of each of its images."""
    width = max(3, len(str(max(clusters))))
    for index, (path, cluster) in enumerate(zip(paths, clusters, strict=True)):
        folder = output / f"cluster_{cluster:0{width}d}"
        folder.mkdir(exist_ok=True)
        target = folder / f"{index:06d}_{path.name}"  # the index keeps same-named files apart
        if mode == "copy":
            shutil.copy2(path, target)
        else:
            os.symlink(path.resolve(), target)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    run_safely(predict, cfg)


if __name__ == "__main__":
    main()
