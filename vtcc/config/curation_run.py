"""``curation=<curation.json>`` with ``init_from=<the .ckpt of the run it was made on>``: a new run
that fine-tunes that run with the person's decisions (``objective=curated``,
:mod:`vtcc.objectives.curated`), whose clusters are the curated clusters.

:func:`take_curation` comes first in resolving, before anything reads the objective: it refuses a
curation without ``init_from`` (and ``objective=curated`` without a curation), or one given with an
objective or objective settings on the command line that are not ``objective=curated``'s; else it
puts ``objective=curated`` (and its views, ``augment=selflabel``, unless ``augment=`` was given) in
place of the composed objective. :func:`take_curated_clusters`, once ``init_from``'s K is taken,
reads the file, checks it against that run (its K, the clusters it names), sets K to K', the
number of final clusters, and records what the run takes from the file under ``curated``: the
file's sha256, the source run's K, each cluster's id in the file and its name.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from vtcc.config.init_from import override_key
from vtcc.curation import final_names, read_curation
from vtcc.errors import ConfigError
from vtcc.objectives import objective_class
from vtcc.plugins import VTCC_CONFIG_DIR

log = logging.getLogger("vtcc")


def take_curation(cfg: DictConfig, overrides: list[str]) -> None:
    """``objective=curated`` for a run given ``curation=`` (see the module docstring); ``overrides``:
    the command line's ``key=value`` items (what it chose itself)."""
    objective = objective_class(cfg)
    if not cfg.get("curation"):
        if objective.takes_curation:
            raise ConfigError(
                f"{objective.__name__} trains with a person's decisions: add curation=<curation.json> "
                "and init_from=<the .ckpt of the run it was made on>"
            )
        return
    if not cfg.get("init_from"):
        raise ConfigError(
            f"curation={cfg.curation} fine-tunes the run it was made on: add init_from=<that run's "
            "checkpoints/last.ckpt> (to sort new images with it instead: vtcc-predict "
            "ckpt_path=<the run's .ckpt> curation=<file>)"
        )
    if objective.takes_curation:
        return
    chosen = [o for o in overrides if override_key(o) == "objective" or override_key(o).startswith("module.")]
    if chosen:
        raise ConfigError(
            f"{chosen[0]}: with curation= the run trains objective=curated (each image towards its "
            "curated cluster): drop it, or add objective=curated to set its settings (module.threshold, "
            "module.optimizer.lr)"
        )
    views = [o for o in overrides if override_key(o).startswith("augment.")]
    if views:  # its views are chosen here, after Hydra composed the ones these keys would change
        raise ConfigError(
            f"{views[0]}: with curation= alone the run takes objective=curated's views: add "
            "objective=curated to change them"
        )
    node = OmegaConf.load(VTCC_CONFIG_DIR / "objective" / "curated.yaml")
    node.pop("defaults", None)  # its choice of views, taken here
    with open_dict(cfg):
        cfg.module = node
        if not any(override_key(o) == "augment" for o in overrides):
            cfg.augment = OmegaConf.load(VTCC_CONFIG_DIR / "augment" / "selflabel.yaml")
    log.info("curation=%s: objective=curated (the person's clusters as targets)", cfg.curation)


def take_curated_clusters(cfg: DictConfig) -> None:
    """K' and the ``curated`` record of a run given ``curation=``, once ``init_from``'s K is taken."""
    if not cfg.get("curation"):
        return
    curation = read_curation(str(cfg.curation))
    source_k = int(cfg.num_clusters)
    curation.check_run(source_k)  # another K, a cluster the run does not have: one line
    final = curation.final_clusters(source_k)
    if len(final) < 2:
        raise ConfigError(
            f"{curation.where} leaves {len(final)} cluster and a run clusters into at least 2: "
            "keep two clusters apart"
        )
    if (cfg.get("data") or {}).get("unlabeled_training") == "instance_phase":
        raise ConfigError(
            f"curation={cfg.curation}: init_from's run trained on an unlabelled pool the person never "
            "saw (data.unlabeled_training=instance_phase): add data.unlabeled_training=joint"
        )
    names = final_names(curation)
    with open_dict(cfg):
        cfg.num_clusters = len(final)
        if "num_clusters" in cfg.model:
            cfg.model.num_clusters = len(final)
        cfg.curated = {
            "sha256": curation.sha256,
            "source_clusters": source_k,
            "clusters": final,  # this run's cluster i is the file's cluster clusters[i]
            "names": [names.get(k, "") for k in final],
        }
    log.info(
        "curation=%s: init_from's %d clusters become %d, numbered in the order of their ids in the file",
        cfg.curation,
        source_k,
        len(final),
    )
