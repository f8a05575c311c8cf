"""``vtcc-train``: train a clustering model from the Hydra config (``conf/train.yaml``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vtcc.errors import ConfigError
from vtcc.utils.callbacks import StoreConfig
from vtcc.utils.checkpoint import find_latest_checkpoint
from vtcc.utils.cli import CONFIG_DIR, run_safely

log = logging.getLogger("vtcc")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=<file>`` resumes that checkpoint; ``resume=latest`` the newest run's last.ckpt."""
    if cfg.get("resume") not in (None, "latest"):
        raise ConfigError(f"resume={cfg.resume!r} is unknown: use resume=latest or ckpt_path=<file>")
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path={path} does not exist: give the .ckpt file of an earlier run")
        return str(path)
    if cfg.get("resume") == "latest":
        return str(find_latest_checkpoint(cfg.paths.log_dir, cfg.task_name))
    return None


def adapt_to_data(cfg: DictConfig, datamodule) -> None:
    """Take K from the data when not given; without labels, keep the best checkpoint by loss."""
    if cfg.get("num_clusters") is None:
        if datamodule.num_classes is None:
            raise ConfigError("the images have no class folders to count clusters from: set num_clusters=<K>")
        cfg.num_clusters = datamodule.num_classes
    if cfg.num_clusters > len(datamodule.arrays):
        raise ConfigError(
            f"num_clusters={cfg.num_clusters} is more than the {len(datamodule.arrays)} images: "
            "lower num_clusters"
        )
    best = (cfg.get("callbacks") or {}).get("best_checkpoint")
    if not datamodule.labeled and best is not None and best.get("monitor") == "val/acc":
        best.monitor, best.mode = "train/loss", "min"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then evaluate the final model once; returns the final metrics."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resolve_ckpt_path(cfg)
    output_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # load data first: its errors and its class count come before the model
    adapt_to_data(cfg, datamodule)
    network = instantiate(cfg.model)
    module = instantiate(cfg.module, network=network)
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    callbacks.append(StoreConfig(config))
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {key.removeprefix("val/"): float(value) for key, value in results.items()}
    if not trainer.is_global_zero:
        return metrics
    (output_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("final metrics: %s", _format(metrics))
    log.info("outputs in %s", output_dir)
    return metrics


def _format(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    run_safely(train, cfg)


if __name__ == "__main__":
    main()
