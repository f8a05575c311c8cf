"""``vtcc-train``: train a clustering model from the Hydra config (``conf/train.yaml``)."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vtcc.config.data_defaults import resolve_data_defaults
from vtcc.config.init_from import command_line_overrides, load_run_weights, take_run_settings
from vtcc.config.validate import validate_config
from vtcc.data.features import wrap_for_network
from vtcc.errors import ConfigError
from vtcc.k_selection import check_criterion, choose, embed, score_candidates, search_range, write_table
from vtcc.models.pretrained import pretrained_data_config
from vtcc.module import validation_metrics
from vtcc.optim import check_budget_can_move
from vtcc.utils.callbacks import StoreConfig, TimeBudget
from vtcc.utils.checkpoint import (
    CONFIG_KEY,
    NON_STRUCTURAL,
    AtomicCheckpointIO,
    config_differences,
    find_checkpoints,
    load_checkpoint,
)
from vtcc.utils.cli import CONFIG_DIR, run_safely
from vtcc.utils.environment import collect_environment, write_environment
from vtcc.utils.loggers import build_loggers

log = logging.getLogger("vtcc")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=<file>`` resumes that checkpoint; ``resume=latest`` the newest run whose model,
    K, data and objective match this one (other runs under ``paths.log_dir`` are passed over)."""
    if cfg.get("resume") not in (None, "latest"):
        raise ConfigError(f"resume={cfg.resume!r} is unknown: use resume=latest or ckpt_path=<file>")
    current = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        differences = resume_differences(load_checkpoint(path)[CONFIG_KEY], current)
        if differences:
            raise ConfigError(
                f"{path} was trained with other settings: {'; '.join(differences)}. "
                "Resume with the checkpoint's settings (its config.yaml), or start a new run"
            )
        return str(path)
    if cfg.get("resume") != "latest":
        return None
    candidates = find_checkpoints(cfg.paths.log_dir, cfg.task_name)
    for path in candidates:
        if not resume_differences(load_checkpoint(path)[CONFIG_KEY], current):
            log.info(
                "resume=latest: %s, the newest of %d run(s) with this model, data and objective",
                path,
                len(candidates),
            )
            return str(path)
    newest = resume_differences(load_checkpoint(candidates[0])[CONFIG_KEY], current)
    raise ConfigError(
        f"resume=latest found no run with this model, data and objective under "
        f"{Path(cfg.paths.log_dir, cfg.task_name)} (the newest, {candidates[0]}, differs: "
        f"{'; '.join(newest[:3])}): pass ckpt_path=<file>, or start a new run"
    )


# What identifies the data a run trains on (loader settings such as batch size may change).
DATA_IDENTITY = ("_target_", "root", "name", "dataset", "image_size", "in_chans", "eval_split")


def resume_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored -> current`` for each setting that must match to resume: the model and K, the
    data (its identity, not its loader settings) and the objective (the module's class and its
    number of cluster heads, whose weights the checkpoint holds)."""
    views = []
    for config in (stored, current):
        model = {k: v for k, v in (config.get("model") or {}).items() if k not in NON_STRUCTURAL}
        data = {k: v for k, v in (config.get("data") or {}).items() if k in DATA_IDENTITY}
        module = config.get("module") or {}
        objective = {"_target_": module.get("_target_"), "num_heads": module.get("num_heads", 1)}
        views.append(
            {"model": model, "num_clusters": config.get("num_clusters"), "data": data, "module": objective}
        )
    return config_differences(*views, ("model", "num_clusters", "data", "module"))


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """A run never writes over another run's checkpoints unless asked to."""
    checkpoints = output_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and not overwrite:
        raise ConfigError(
            f"{output_dir} already holds a run's checkpoints: choose another hydra.run.dir, "
            "or add overwrite=true to reuse it"
        )


def adapt_to_model(cfg: DictConfig) -> None:
    """A pretrained backbone brings its own preprocessing (timm's data config): use it for the data."""
    if not str(cfg.model.get("_target_", "")).endswith("pretrained_network"):
        return
    preprocessing = pretrained_data_config(
        cfg.model.name, cfg.model.get("checkpoint"), cfg.model.get("model_kwargs")
    )
    with open_dict(cfg.data):
        cfg.data.update(preprocessing)
    log.info("data preprocessing from %s: %s", cfg.model.name, preprocessing)


def adapt_to_data(cfg: DictConfig, datamodule) -> list[int] | None:
    """Take K from the data when not given; record the size the images are held at. With
    ``num_clusters=auto``: the candidate Ks (the backbone first trains at the largest)."""
    candidates = None
    if cfg.get("num_clusters") == "auto":
        search = cfg.k_search
        candidates = search_range(search.min, search.max, len(datamodule))
        check_criterion(search.criterion)  # an unknown criterion stops now, not after training
        cfg.num_clusters = max(candidates)
        log.info(
            "num_clusters=auto: K from %d to %d, chosen by %s on the %s embeddings after training",
            min(candidates),
            max(candidates),
            search.criterion,
            search.embedding,
        )
    if cfg.get("num_clusters") is None:
        if datamodule.num_classes is None:
            raise ConfigError(
                "the images have no class folders to count clusters from: set num_clusters=<K>, "
                "or num_clusters=auto to choose K from the data"
            )
        cfg.num_clusters = datamodule.num_classes
    if cfg.num_clusters > len(datamodule):
        raise ConfigError(
            f"num_clusters={cfg.num_clusters} is more than the {len(datamodule)} images: lower num_clusters"
        )
    for node in (cfg.data, cfg.data.get("dataset")):  # folder: data.dataset; streaming: data
        if isinstance(node, DictConfig) and "stored_size" in node and node.stored_size is None:
            node.stored_size = datamodule.stored_size
    with open_dict(cfg):  # what vtcc-predict needs to decode new images as evaluation saw the data
        cfg.preprocessing = {"stored_size": datamodule.stored_size, "in_chans": datamodule.in_chans}
    best = (cfg.get("callbacks") or {}).get("best_by_labels")
    if best is not None and not datamodule.labeled:
        raise ConfigError("callbacks=best_by_labels needs labelled data: use callbacks=default")
    return candidates


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then evaluate the final model once; returns the final metrics."""
    validate_config(cfg)  # every value's type, before any work
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir, cfg.get("overwrite", False))
    loggers = build_loggers(cfg.get("logger"))  # a missing optional extra stops before any work
    initial = start_from(cfg)  # init_from: that run's model, K and data
    if cfg.get("time_budget_minutes") is not None and cfg.module.get("scheduler"):
        check_budget_can_move(instantiate(cfg.module.scheduler))
    adapt_to_model(cfg)
    resolve_data_defaults(cfg)  # data=folder/npz: channels, size, statistics, augmentation from the images
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # load data first: its errors and its class count come before the model
    candidates = adapt_to_data(cfg, datamodule)
    if candidates and (cfg.get("ckpt_path") or cfg.get("resume")):
        raise ConfigError(
            "num_clusters=auto starts a new run: resume an auto run with num_clusters=<its K> "
            "(the integer in its config.yaml)"
        )
    ckpt_path = resolve_ckpt_path(cfg)
    stored = load_checkpoint(ckpt_path)[CONFIG_KEY] if ckpt_path else {}
    budget = resumed_budget(cfg, stored)
    network = instantiate(cfg.model)
    datamodule = wrap_for_network(cfg, datamodule, network)
    datamodule.setup("fit")  # with a frozen backbone: extract or load the cached features now
    module = instantiate(cfg.module, network=network)
    if initial is not None and not ckpt_path:  # a resumed run has its own weights
        load_run_weights(module, initial, str(cfg.init_from))
    started = time.perf_counter()  # a K search counts against the time budget too
    if candidates:
        module = search_k(cfg, module, datamodule, candidates, output_dir, budget, started)  # the integer K
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    if budget is not None:
        callbacks.append(TimeBudget(budget, started_at=started if candidates else None))
    environment = collect_environment()
    callbacks.append(StoreConfig(config, environment))
    # num_clusters=auto's refine phase, or a resumed one: the refine plan (k_search.refine_epochs)
    refine = candidates or (stored.get("k_search") or {}).get("chosen") is not None
    epochs = {"max_epochs": refine_epochs(cfg)} if refine else {}
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()], **epochs
    )

    if trainer.is_global_zero:  # one writer under DDP
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        write_environment(output_dir, environment)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = validation_metrics(trainer, module, datamodule)
    if not trainer.is_global_zero:
        return metrics
    (output_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("final metrics: %s", _format(metrics))
    log.info("outputs in %s", output_dir)
    return metrics


def start_from(cfg: DictConfig) -> dict[str, Any] | None:
    """``init_from``: the checkpoint whose weights the run starts from (its settings now in ``cfg``)."""
    needs_run = str(cfg.module.get("_target_", "")).endswith("SelfLabelClustering")
    if not cfg.get("init_from"):
        if needs_run:
            raise ConfigError(
                "objective=selflabel starts from a trained run: add init_from=<its .ckpt> "
                "(e.g. outputs/train/runs/<run>/checkpoints/last.ckpt)"
            )
        return None
    if cfg.get("num_clusters") == "auto":
        raise ConfigError("init_from takes K from its checkpoint: drop num_clusters=auto")
    return take_run_settings(cfg, command_line_overrides())


def resumed_budget(cfg: DictConfig, stored: dict[str, Any]) -> float | None:
    """``time_budget_minutes``; resuming a budgeted run without it keeps the run's budget (the time
    spent and the plan come back from the checkpoint: a resumed run gets no fresh budget)."""
    budget = cfg.get("time_budget_minutes")
    if budget is None and stored.get("time_budget_minutes") is not None:
        budget = stored["time_budget_minutes"]
        cfg.time_budget_minutes = budget
        log.info("resuming a run with a time budget of %s min: its time spent counts", budget)
    return float(budget) if budget is not None else None


def refine_epochs(cfg: DictConfig) -> int:
    """Epochs of the fresh cluster head at the chosen K: ``k_search.refine_epochs``, or half the run's."""
    epochs = cfg.k_search.get("refine_epochs")
    return int(epochs) if epochs is not None else max(1, int(cfg.trainer.max_epochs) // 2)


def search_k(
    cfg: DictConfig,
    module,
    datamodule,
    candidates: list[int],
    output_dir: Path,
    budget: float | None,
    start: float,
):
    """num_clusters=auto: train at the largest candidate K (no checkpoints: only the backbone is
    kept), score every candidate on its embeddings, then return a module whose fresh cluster head
    has the chosen K; ``cfg.num_clusters`` becomes that integer and ``cfg.k_search`` records the
    choice and the refine plan (a resumed refine phase follows them). With a time budget, the
    search trains within its share (its epochs over all the run's epochs) of the budget."""
    from lightning.pytorch.loggers import CSVLogger

    callbacks = []
    if budget is not None:
        search_epochs = int(cfg.trainer.max_epochs)
        share = search_epochs / (search_epochs + refine_epochs(cfg))
        callbacks.append(TimeBudget(budget * share, started_at=start))
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=CSVLogger(output_dir, name="", version="k_search"),
        enable_checkpointing=False,
    )
    log.info("K search: training the backbone at K=%d for %d epochs", max(candidates), trainer.max_epochs)
    trainer.fit(module, datamodule=datamodule)
    device = trainer.strategy.root_device
    embeddings = embed(
        module.network,
        datamodule.val_dataloader(),
        lambda batch: datamodule.on_after_batch_transfer(batch, 0),
        device,
        cfg.k_search.embedding,
    )
    rows = score_candidates(embeddings, candidates, seed=cfg.get("seed") or 0)
    chosen = choose(rows, cfg.k_search.criterion)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_table(output_dir / "k_selection.csv", rows, chosen, cfg.k_search.criterion)
    log.info(
        "num_clusters=auto chose K=%d by %s (k_selection.csv); backbone trained in %.0f s; "
        "now %d epochs of a fresh cluster head at K=%d",
        chosen,
        cfg.k_search.criterion,
        time.perf_counter() - start,
        refine_epochs(cfg),
        chosen,
    )
    cfg.num_clusters = chosen
    with open_dict(cfg.k_search):
        cfg.k_search.refine_epochs = refine_epochs(cfg)
        cfg.k_search.chosen = chosen
    network = module.network
    network.reset_cluster_heads(chosen)
    return instantiate(cfg.module, network=network)


def _format(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    # A job started in the background of a script inherits an ignored SIGINT; Ctrl-C and
    # `kill -INT` must still stop the run (saving interrupted.ckpt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_safely(train, cfg)


if __name__ == "__main__":
    main()
