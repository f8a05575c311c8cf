"""``init_from=<a finished run's .ckpt>``: a new run (new optimiser, new folder) that starts from
another run's weights, e.g. self-labelling after a contrastive or SCAN run.

The model, K and data come from that run unless the command line sets them; a model or K that
differs from the checkpoint's cannot take its weights and is refused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vtcc import registry
from vtcc.config.stored import without_downloads
from vtcc.errors import ConfigError
from vtcc.models.network import upgrade_single_head_keys
from vtcc.utils.checkpoint import CONFIG_KEY, NON_STRUCTURAL, config_differences, load_checkpoint

log = logging.getLogger("vtcc")


def command_line_overrides() -> list[str]:
    """The ``key=value`` overrides of this ``vtcc-train`` call (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def override_key(override: str) -> str:
    """The dotted key of a command-line override (``+data.x=1``, ``~data.x`` -> ``data.x``)."""
    return re.sub(r"^[+~]+", "", override).split("=", 1)[0]


def _overridden(overrides: list[str], section: str) -> tuple[bool, list[tuple[str, bool]]]:
    """Whether ``section=<choice>`` replaces the section on the command line, and the
    ``(key, deleted)`` of each ``section.<key>=value`` (or ``~section.<key>``) override of one key."""
    replaced, keys = False, []
    for override in overrides:
        key = override_key(override)
        if key == section or key.startswith(f"{section}@"):
            replaced = True
        elif key.startswith(f"{section}."):
            keys.append((key, override.startswith("~")))
    return replaced, keys


def _stored_with_overrides(cfg: DictConfig, stored: dict[str, Any], keys: list[tuple[str, bool]]) -> Any:
    """The checkpoint's section with each overridden key set to the command line's value."""
    section = OmegaConf.create({"root": stored})
    for key, deleted in keys:
        inner = "root" + key[key.index(".") :]
        if deleted:
            parent, _, leaf = inner.rpartition(".")
            node = OmegaConf.select(section, parent)
            if node is not None and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(section, inner, OmegaConf.select(cfg, key), force_add=True)
    return section.root


def take_run_settings(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Put the model, K and data of ``cfg.init_from``'s run into ``cfg``; returns the checkpoint.

    ``model=<choice>`` / ``data=<choice>`` on the command line replace that section; an override
    of one key (``data.batch_size=64``) changes that key of the checkpoint's section, nothing else."""
    path = Path(str(cfg.init_from))
    if not path.is_file():
        raise ConfigError(
            f"init_from={path} does not exist: give the .ckpt of a finished vtcc run "
            "(e.g. outputs/train/runs/<run>/checkpoints/last.ckpt)"
        )
    checkpoint = load_checkpoint(path)  # not a vtcc checkpoint: one clear line
    stored = checkpoint[CONFIG_KEY]
    if "state_dict" not in checkpoint or not stored.get("model"):
        raise ConfigError(f"init_from={path} holds no trained network: give a vtcc training checkpoint")
    own_model, model_keys = _overridden(overrides, "model")
    own_data, data_keys = _overridden(overrides, "data")
    own_k = any(override_key(o) == "num_clusters" for o in overrides)
    with open_dict(cfg):
        if not own_model:
            cfg.model = _stored_with_overrides(cfg, stored["model"], model_keys)
        current = OmegaConf.to_container(cfg.model, resolve=True)
        differences = config_differences(
            _structural(stored["model"]), _structural(current), tuple(_structural(stored["model"]))
        )
        if differences:
            raise ConfigError(
                f"init_from={path} has another model ({'; '.join(differences[:3])}): drop the model "
                "overrides (the model comes from the checkpoint), or start without init_from"
            )
        if own_k and cfg.num_clusters != stored["num_clusters"]:
            raise ConfigError(
                f"init_from={path} clusters into K={stored['num_clusters']}, "
                f"not num_clusters={cfg.num_clusters}: drop num_clusters (K comes from the checkpoint), "
                "or start without init_from"
            )
        cfg.num_clusters = stored["num_clusters"]
        if not own_data:  # the run's data where it lies: downloading is this command's to ask for
            cfg.data = _stored_with_overrides(cfg, without_downloads(stored["data"]), data_keys)
            if "train_transform" in cfg.data:  # images (not features): this run's augmentation
                cfg.data.train_transform = "${augment}"  # at that run's size
    resolve_strong_view(cfg, stored)
    resolve_threshold(cfg, stored)
    log.info(
        "init_from=%s: its model, K=%d%s; new optimiser and run folder",
        path,
        cfg.num_clusters,
        "" if own_data else " and data",
    )
    return checkpoint


def _structural(model: dict[str, Any]) -> dict[str, Any]:
    return {"model": {k: v for k, v in model.items() if k not in NON_STRUCTURAL}}


def resolve_strong_view(cfg: DictConfig, stored: dict[str, Any]) -> None:
    """``augment=selflabel``'s ``auto`` settings from the run it starts from: a run trained with the
    small-image recipe (gray digits-like images) keeps that recipe under Cutout as its strong view
    (``base``; SCAN's ops measured worse there, README), with that recipe's own flips and
    inversion (its ``hflip_p``, ``invert_p``) and no second flip; others get SCAN's ops, with flips
    unless the run trained without them."""
    view = (cfg.get("augment") or {}).get("view_b") or {}
    source = (stored.get("augment") or {}).get("view_a") or {}
    small = registry.builds(source, "view", strong_view_base=True)
    if view.get("base") == "auto":
        view.base = OmegaConf.create(source) if small else None
    if view.get("hflip_p") == "auto":
        view.hflip_p = 0.5 if not small and source.get("hflip_p", 0.5) > 0 else 0.0


# Heads that SCAN-like objectives trained are sharp (their class says so: ``sharp_heads``): SCAN's
# 0.99 suits them. Contrastive Clustering's heads are softer: at 0.99 self-labelling the 30-epoch
# digits run collapsed (ACC 0.887 -> 0.551, 11 % of the images confident), at 0.9 it gained 3 points
# (0.918; docs/selflabel-temi-k.md).


def resolve_threshold(cfg: DictConfig, stored: dict[str, Any]) -> None:
    """``module.selflabel_loss.threshold: auto``: 0.99 (SCAN's) after SCAN, TEMI or self-labelling
    runs, 0.9 after contrastive ones."""
    loss = (cfg.get("module") or {}).get("selflabel_loss") or {}
    if loss.get("threshold") != "auto":
        return
    source = registry.node_entry(stored.get("module"))
    sharp = source is not None and source.kind == "objective" and source.obj.sharp_heads
    loss.threshold = 0.99 if sharp else 0.9
    log.info(
        "self-labelling threshold %.2f (%s heads; set module.selflabel_loss.threshold to change)",
        loss.threshold,
        source.name if source is not None else "unknown",
    )


def load_run_weights(module: Any, checkpoint: dict[str, Any], path: str) -> None:
    """The checkpoint's network weights into ``module.network``. A run with several heads gives its
    best one (lowest training loss) to a one-head run; otherwise the head counts must match."""
    state = {
        k.removeprefix("network."): v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")
    }
    state = _keep_heads(state, module.network.num_cluster_heads, path)
    try:
        module.network.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ConfigError(
            f"init_from={path} does not fit this model ({first}): drop the model overrides"
        ) from error
    module.network_loaded()


def _keep_heads(state: dict[str, torch.Tensor], wanted: int, path: str) -> dict[str, torch.Tensor]:
    upgrade_single_head_keys(state)  # a checkpoint from before several heads
    heads = {int(k.split(".")[1]) for k in state if k.startswith("cluster_heads.")}
    if len(heads) == wanted:
        return state
    if wanted != 1:
        raise ConfigError(
            f"init_from={path} has {len(heads)} cluster heads and this run trains {wanted}: "
            f"set module.num_cluster_heads={len(heads)} or 1 (its best head)"
        )
    best = int(state.get("best_head", torch.tensor(0)))
    kept = {k: v for k, v in state.items() if not k.startswith("cluster_heads.")}
    prefix = f"cluster_heads.{best}."
    kept.update({"cluster_heads.0." + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    kept["best_head"] = torch.zeros((), dtype=torch.long)
    log.info("init_from: head %d of %d (the one the run kept) continues", best, len(heads))
    return kept
