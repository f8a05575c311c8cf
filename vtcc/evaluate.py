"""``vtcc-eval ckpt_path=<file>``: rebuild a run from its checkpoint and report ACC / NMI / ARI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
import yaml
from omegaconf import DictConfig, OmegaConf

from vtcc.build import build_data, restore_run
from vtcc.config.validate import validate_config
from vtcc.errors import ConfigError
from vtcc.io.reader import read_bytes, reader
from vtcc.io.writer import Writer
from vtcc.objectives import validation_metrics
from vtcc.report import report_run
from vtcc.utils.checkpoint import own_cache_dir
from vtcc.utils.cli import CONFIG_DIR, checks_command_line, run_safely
from vtcc.utils.environment import ENVIRONMENT_FILE

log = logging.getLogger("vtcc")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    validate_config(cfg)  # every value's type, before any work
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("no checkpoint given: run vtcc-eval ckpt_path=<run>/checkpoints/last.ckpt")
    run_cfg, module = restore_run(cfg.ckpt_path, cache_dir=own_cache_dir(cfg))
    datamodule = build_data(run_cfg, module.network)
    trainer = pl.Trainer(
        **cfg.trainer,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    metrics = validation_metrics(trainer, module, datamodule)
    if trainer.global_rank != 0:
        return metrics
    writer = Writer(cfg.paths.output_dir)  # this command's folder: everything it writes goes there
    output = writer.write_json(
        Path(cfg.paths.output_dir) / "metrics.json", {"ckpt_path": str(cfg.ckpt_path), **metrics}
    )
    if cfg.get("report"):
        module.to(trainer.strategy.root_device)  # Lightning's teardown moved it back to the CPU
        page = report_for_checkpoint(
            module, datamodule, metrics, Path(cfg.paths.output_dir) / "report", cfg.ckpt_path, run_cfg, writer
        )
        log.info("report: %s", page)
    print(json.dumps(metrics, indent=2))
    log.info("metrics written to %s", output)
    return metrics


def report_for_checkpoint(
    module,
    datamodule,
    metrics: dict[str, float],
    output: Path,
    ckpt_path: str,
    run_cfg: DictConfig,
    writer: Writer | None = None,
) -> Path:
    """The report of a checkpoint's run, with its curves, settings and environment when its folder
    is beside the checkpoint."""
    run_dir = Path(ckpt_path).resolve().parents[1]  # <run>/checkpoints/<file>.ckpt
    if not (run_dir / "config.yaml").is_file():
        run_dir = None  # a checkpoint moved out of its run folder: no curves
    environment_file = run_dir / ENVIRONMENT_FILE if run_dir is not None else None
    environment = (
        read_environment(environment_file)
        if environment_file is not None and environment_file.is_file()
        else None
    )
    page, quality = report_run(
        module,
        datamodule,
        output,
        metrics,
        run_dir=run_dir,
        settings=OmegaConf.to_container(run_cfg, resolve=True),
        environment=environment,
        writer=writer,
    )
    log.info(quality.line())
    return page


@reader("run_environment")
def read_environment(path: Path) -> dict | None:
    """The run folder's environment file (a regular file of at most 1 MiB, plain YAML) for the
    report; one that is not readable is skipped and named (the report shows no environment)."""
    try:
        environment = yaml.safe_load(read_bytes(path, 2**20))
        yaml.safe_dump(environment)  # as the report shows it: nested too deep to, it is skipped here
    except (ValueError, yaml.YAMLError, RecursionError) as error:  # UnreadableFile is a ValueError
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        log.warning("the report shows no environment: %s is not readable (%s)", path, reason)
        return None
    return environment if isinstance(environment, dict) else None


@checks_command_line("eval")  # a value with a space, a renamed key: one line before Hydra
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_safely(evaluate, cfg)


if __name__ == "__main__":
    main()
