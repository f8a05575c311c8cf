"""``vtcc-predict ckpt_path=<file> input=<folder or list> output=<dir>``: a cluster for every image.

Writes ``clusters.csv`` (path, cluster, confidence = the largest cluster probability), optionally
the instance embeddings (``embeddings.npy``, rows in CSV order) and one folder per cluster with
copies or links of the images. Images are preprocessed as the checkpoint's run loaded them.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from vtcc.config.validate import validate_config
from vtcc.data.folder import IMAGE_SUFFIXES, decode_image
from vtcc.data.transforms import EvalTransform
from vtcc.errors import ConfigError
from vtcc.utils.checkpoint import own_cache_dir, restore_run
from vtcc.utils.cli import CONFIG_DIR, run_safely

log = logging.getLogger("vtcc")


def list_inputs(source: str) -> list[Path]:
    """Every image under a folder (recursively), or the paths listed one per line in a text file."""
    path = Path(source)
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        paths = [Path(line) if Path(line).is_absolute() else path.parent / line for line in lines]
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise ConfigError(f"{len(absent)} listed image(s) do not exist, e.g. {absent[0]}")
    else:
        raise ConfigError(f"input={source} is neither a folder of images nor a file listing image paths")
    if not paths:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {source}")
    return paths


def prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise ConfigError(f"output={output} already has files: choose a new folder, or add overwrite=true")
    output.mkdir(parents=True, exist_ok=True)


@torch.no_grad()
def predict(cfg: DictConfig) -> Path:
    validate_config(cfg)  # every value's type, before any work
    for key in ("ckpt_path", "input", "output"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required: vtcc-predict ckpt_path=<file> input=<folder> output=<dir>")
    # a refused checkpoint stops before anything else
    run_cfg, module = restore_run(cfg.ckpt_path, cache_dir=own_cache_dir(cfg))
    paths = list_inputs(cfg.input)
    output = Path(cfg.output)
    prepare_output(output, cfg.overwrite)
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    network = module.network.to(device).eval()
    data = run_cfg.data
    interpolation = data.get("interpolation", "bilinear")
    transform = EvalTransform(data.image_size, data.mean, data.std, interpolation).to(device)
    # Decoded as the run held its images (size, channels), then evaluation's own resize: a run's
    # own images get the clusters evaluation gives them.
    record = run_cfg.get("preprocessing") or {}
    stored = record.get("stored_size") or data.image_size
    in_chans = record.get("in_chans") or data.get("in_chans", len(data.mean))
    folder = data.get("dataset") if "fit" in (data.get("dataset") or {}) else data
    fit = folder.get("fit", "whole")
    clusters, confidences, embeddings = [], [], []
    for start in tqdm(range(0, len(paths), cfg.batch_size), desc="predict", unit="batch"):
        chunk = paths[start : start + cfg.batch_size]
        batch = torch.from_numpy(np.stack([decode_image(path, stored, in_chans, fit) for path in chunk]))
        if batch.shape[1] == 1 and len(data.mean) == 3:  # gray data under an RGB (pretrained) model
            batch = batch.expand(-1, 3, -1, -1)
        images = transform(batch.to(device))
        z, p = network.embed_and_assign(images)
        confidence, cluster = p.max(dim=1)
        clusters.append(cluster.cpu())
        confidences.append(confidence.cpu())
        if cfg.save_embeddings:
            embeddings.append(z.float().cpu())
    cluster_ids = torch.cat(clusters).tolist()
    confidence_values = torch.cat(confidences).tolist()
    with open(output / "clusters.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "cluster", "confidence"])
        for path, cluster, confidence in zip(paths, cluster_ids, confidence_values, strict=True):
            writer.writerow([str(path), cluster, f"{confidence:.6f}"])
    if cfg.save_embeddings:
        np.save(output / "embeddings.npy", torch.cat(embeddings).numpy())
    if cfg.copy_images != "none":
        sort_into_folders(paths, cluster_ids, output, cfg.copy_images)
    sizes = np.bincount(cluster_ids, minlength=network.num_clusters)
    log.info(
        "%d images into %d clusters (sizes %s); written to %s",
        len(paths),
        (sizes > 0).sum(),
        sizes.tolist(),
        output,
    )
    return output / "clusters.csv"


def sort_into_folders(paths: list[Path], clusters: list[int], output: Path, mode: str) -> None:
    """``output/cluster_XXX/`` holds a copy or a symbolic link of each of its images."""
    if mode not in ("copy", "link"):
        raise ConfigError(f"copy_images={mode!r} is unknown: use none, copy or link")
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
