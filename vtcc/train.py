"""``vtcc-train``: train a clustering model from the Hydra config (``conf/train.yaml``)."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vtcc.build import (
    Prepared,
    Run,
    build_loggers,
    build_module,
    build_object,
    build_run,
    build_trainer,
    prepare_run,
    start_from_run,
)
from vtcc.config.init_from import command_line_overrides
from vtcc.config.resume import own_run_folder, requeued_job
from vtcc.config.spec import RunSpec
from vtcc.config.validate import validate_config
from vtcc.errors import ConfigError
from vtcc.io.writer import Writer
from vtcc.k_selection import choose, embed, score_candidates, write_table
from vtcc.objectives import validation_metrics
from vtcc.quality import embed_and_assign_heads, head_structures
from vtcc.report import report_run
from vtcc.utils.callbacks import ReportOnInterrupt, StopRecord, StoreConfig, TimeBudget, describe_stop
from vtcc.utils.checkpoint import record_best_head
from vtcc.utils.cli import CONFIG_DIR, checks_command_line, run_safely
from vtcc.utils.environment import collect_environment, write_environment

log = logging.getLogger("vtcc")


def check_output_dir(output_dir: Path, overwrite: bool, requeued: bool = False) -> None:
    """A run never writes over another run's checkpoints unless asked to; a ``requeued`` SLURM job
    continues its own (:func:`vtcc.config.resume.requeued_checkpoint`) or starts it over, in a
    folder that records it as its own (:func:`vtcc.config.resume.own_run_folder`) and no other."""
    checkpoints = output_dir / "checkpoints"
    if not checkpoints.is_dir() or not any(checkpoints.iterdir()) or overwrite:
        return
    if requeued and own_run_folder(output_dir):
        return
    whose = " (not this requeued job's: its environment.yaml records another run)" if requeued else ""
    raise ConfigError(
        f"{output_dir} already holds a run's checkpoints{whose}: choose another hydra.run.dir, "
        "or add overwrite=true to reuse it"
    )


@dataclass
class Trained:
    """What a finished ``vtcc-train`` run leaves in the process: its final metrics, its run (the
    objective with the trained network, and its data) and its folder."""

    metrics: dict[str, float]
    run: Run
    output_dir: Path


def train(cfg: DictConfig) -> dict[str, float]:
    """``vtcc-train``: :func:`train_run` with the command line's overrides; the final metrics."""
    return train_run(cfg).metrics


def train_run(cfg: DictConfig, overrides: list[str] | None = None) -> Trained:
    """Check, resolve, build, fit, then evaluate the final model once. ``overrides``: the
    ``key=value`` items the config was composed with (default: the command line's); ``init_from``
    keeps what they set."""
    validate_config(cfg)  # every value's type, before any work
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir, cfg.get("overwrite", False), requeued_job())
    loggers = build_loggers(cfg.get("logger"))  # a missing optional extra stops before any work
    prepared = prepare_run(cfg, command_line_overrides() if overrides is None else overrides)
    spec, run, started = _build_at_k(prepared, output_dir)
    cfg = spec.config  # resolved, read-only
    config = spec.container()
    environment = collect_environment()

    stop, callbacks = _callbacks(spec, started, output_dir, config, environment)
    epochs = {"max_epochs": spec.refine_epochs} if spec.refines else {}
    trainer = build_trainer(cfg, callbacks, loggers, **epochs)
    if trainer.is_global_zero:  # one writer under DDP
        writer = Writer(output_dir)  # every file of the run: inside its folder, atomically
        writer.write_text(output_dir / "config.yaml", OmegaConf.to_yaml(config))
        write_environment(output_dir, environment, writer)
    _fit(trainer, run, spec.ckpt_path, stop, output_dir)
    keep_supported_head(trainer, run, cfg.get("seed") or 0)
    metrics = validation_metrics(trainer, run.module, run.datamodule)
    if trainer.is_global_zero:
        _write_results(trainer, run, metrics, stop, output_dir, config, environment, cfg.get("report"))
    return Trained(metrics, run, output_dir)


def _build_at_k(prepared: Prepared, output_dir: Path) -> tuple[RunSpec, Run, float]:
    """The run built from the prepared spec (with ``init_from``'s weights, unless it resumes, which
    has its own) and, for num_clusters=auto, the K search (:func:`search_k`): the spec and run at
    the K it trains, and when the search began (it counts against the time budget too)."""
    spec = prepared.spec
    cfg = spec.config  # resolved, read-only
    initial = spec.initial if not spec.ckpt_path else None  # a resumed run has its own weights
    run = build_run(cfg, prepared.source, weights=start_from_run(cfg, initial, prepared.source))
    started = time.perf_counter()  # a K search counts against the time budget too
    if spec.candidates:
        spec, run = search_k(spec, run, output_dir, started)  # now at the chosen K
    return spec, run, started


def _callbacks(
    spec: RunSpec, started: float, output_dir: Path, config: dict[str, Any], environment: dict[str, Any]
) -> tuple[StopRecord, list[pl.Callback]]:
    """The training's callbacks: the time budget (first, when there is one; it began with the K
    search if there was one), the stored config, why training ended, and the report on an
    interruption (``report=true``); the record of why it ended is also returned."""
    budget = None
    if spec.budget is not None:
        budget = TimeBudget(spec.budget, started_at=started if spec.candidates else None)
    stop = StopRecord(budget)  # why training ended: the log, final_metrics.json and the report
    callbacks: list[pl.Callback] = [StoreConfig(config, environment), stop]
    if spec.config.get("report"):
        callbacks.append(
            ReportOnInterrupt(
                lambda module, data: write_run_report(
                    module, data, output_dir, config, environment, stopped=describe_stop(stop.record)
                )
            )
        )
    if budget is not None:
        callbacks.insert(0, budget)
    return stop, callbacks


def _fit(trainer: pl.Trainer, run: Run, ckpt_path: str | None, stop: StopRecord, output_dir: Path) -> None:
    """Train (resuming ``ckpt_path`` when given); however it ends, why training ended is recorded
    in ``final_metrics.json`` (by the first process)."""
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    try:
        trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    except BaseException:  # a signal, a NaN loss, an error: why training ended is still recorded
        if stop.record is not None and trainer.is_global_zero:
            Writer(output_dir).write_json(output_dir / "final_metrics.json", {"stopped": stop.record})
        raise


def _write_results(
    trainer: pl.Trainer,
    run: Run,
    metrics: dict[str, float],
    stop: StopRecord,
    output_dir: Path,
    config: dict[str, Any],
    environment: dict[str, Any],
    report: bool,
) -> None:
    """The first process's end of a run: ``metrics`` gain the label-free scores, then go to
    ``final_metrics.json`` (with why training ended), the log and the report (``report=true``)."""
    metrics.update(run.module.label_free_scores(run.datamodule))  # e.g. TURTLE's generalisation score
    Writer(output_dir).write_json(output_dir / "final_metrics.json", {**metrics, "stopped": stop.record})
    log.info("final metrics: %s", _format(metrics))
    if report:
        run.module.to(trainer.strategy.root_device)  # Lightning's teardown moved it to the CPU
        write_run_report(
            run.module, run.datamodule, output_dir, config, environment, metrics, describe_stop(stop.record)
        )
    log.info("outputs in %s", output_dir)


def supported_head(network: Any, datamodule: Any, device: Any, seed: int) -> tuple[int, list[float]]:
    """The cluster head whose clusters the run's own embedding supports best: the highest
    ``structure`` (vtcc.quality, the report's score) over the evaluation images, and every head's."""
    network.to(device)
    batches = (datamodule.evaluation_batch(batch)[0].to(device) for batch in datamodule.val_dataloader())
    embeddings, per_head = embed_and_assign_heads(network, batches)
    scores = head_structures(embeddings, per_head, network.num_clusters, seed)
    return int(np.argmax(scores)), scores


def keep_supported_head(trainer: pl.Trainer, run: Run, seed: int) -> None:
    """Of several cluster heads of an objective that chooses so (``final_head_by_structure``), the
    :func:`supported_head` clusters from now on, and the newest checkpoint records it. Labels never
    choose it; the first process computes it, every process takes it."""
    network = run.network
    if not run.module.final_head_by_structure or network.num_cluster_heads == 1:
        return
    head = int(network.best_head)
    if trainer.is_global_zero:
        lowest_loss = head
        head, scores = supported_head(network, run.datamodule, trainer.strategy.root_device, seed)
        log.info(
            "cluster head %d clusters: its clusters agree best with k-means on the run's embedding "
            "(structure of heads 0-%d: %s; the lowest training loss chose head %d)",
            head,
            network.num_cluster_heads - 1,
            ", ".join(f"{score:.3f}" for score in scores),
            lowest_loss,
        )
        callback = trainer.checkpoint_callback  # vtcc's: top-1 without a monitor, the newest
        newest = (
            callback.last_model_path or callback.best_model_path
            if isinstance(callback, ModelCheckpoint)
            else ""
        )
        if newest and Path(newest).is_file():
            record_best_head(Path(newest), head)
    network.best_head.fill_(int(trainer.strategy.broadcast(head, src=0)))


def search_k(spec: RunSpec, run: Run, output_dir: Path, start: float) -> tuple[RunSpec, Run]:
    """num_clusters=auto, a stage of its own: train at the largest candidate K (no checkpoints: only
    the backbone is kept), score every candidate on its embeddings, and return the spec at the
    chosen K (:meth:`~vtcc.config.spec.RunSpec.with_k`, which records the choice) with the run
    given a fresh cluster head at that K. With a time budget, the search trains within its share
    (its epochs over all the run's epochs) of the budget."""
    from lightning.pytorch.loggers import CSVLogger

    cfg = spec.config
    candidates = spec.candidates
    callbacks = []
    if spec.budget is not None:
        search_epochs = int(cfg.trainer.max_epochs)
        share = search_epochs / (search_epochs + spec.refine_epochs)
        callbacks.append(TimeBudget(spec.budget * share, started_at=start))
    trainer = build_object(
        cfg.trainer,
        callbacks=callbacks,
        logger=CSVLogger(output_dir, name="", version="k_search"),
        enable_checkpointing=False,
    )
    log.info("K search: training the backbone at K=%d for %d epochs", max(candidates), trainer.max_epochs)
    trainer.fit(run.module, datamodule=run.datamodule)
    datamodule = run.datamodule
    embeddings = embed(
        run.network,
        datamodule.val_dataloader(),
        datamodule.evaluation_batch,
        trainer.strategy.root_device,
        cfg.k_search.embedding,
    )
    rows = score_candidates(
        embeddings, candidates, seed=cfg.get("seed") or 0, criterion=cfg.k_search.criterion
    )
    chosen = choose(rows, cfg.k_search.criterion)
    if trainer.is_global_zero:
        write_table(output_dir / "k_selection.csv", rows, chosen, cfg.k_search.criterion, Writer(output_dir))
    spec = spec.with_k(chosen)
    log.info(
        "num_clusters=auto chose K=%d by %s (k_selection.csv); backbone trained in %.0f s; "
        "now %d epochs of a fresh cluster head at K=%d",
        chosen,
        cfg.k_search.criterion,
        time.perf_counter() - start,
        spec.refine_epochs,
        chosen,
    )
    network = run.network
    network.reset_cluster_heads(chosen)
    return spec, Run(build_module(spec.config, network), datamodule)


def write_run_report(
    module: Any,
    datamodule: Any,
    output_dir: Path,
    config: dict[str, Any],
    environment: dict[str, Any],
    metrics: dict[str, float] | None = None,
    stopped: str | None = None,
) -> None:
    """``<run>/report``: the figures, the page and the label-free quality line (and ``stopped``,
    why training ended). A report that cannot be made (an unusual K, a figure matplotlib refuses)
    is said in one line; the trained run, its checkpoints and metrics are already written and stay
    a success."""
    try:
        page, quality = report_run(
            module,
            datamodule,
            output_dir / "report",
            metrics,
            run_dir=output_dir,
            settings=config,
            environment=environment,
            writer=Writer(output_dir),
            stopped=stopped,
        )
    except KeyboardInterrupt:
        log.warning("report skipped; the run itself is complete")
        return
    except Exception as error:  # noqa: BLE001 - the run is complete; a figure's failure must not undo it
        log.warning(
            "the report was not written (%s: %s); the run itself is complete", type(error).__name__, error
        )
        log.debug("report failure", exc_info=True)
        return
    log.info(quality.line())
    log.info("report: %s", page)


def _format(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


@checks_command_line("train")  # a value with a space, a renamed key: one line before Hydra
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    # A job started in the background of a script inherits an ignored SIGINT; Ctrl-C and
    # `kill -INT` must still stop the run (saving interrupted.ckpt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_safely(train, cfg)


if __name__ == "__main__":
    main()
