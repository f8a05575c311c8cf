"""Resolve: the one stage that turns a composed ``vtcc-train`` config into a frozen run spec.

Every ``auto`` is decided here (the objective's recipe in the features node and the head style,
:mod:`vtcc.config.recipe`; the data's channels, size and statistics, ``model=auto``,
``augment=auto``, the patch size, the cached views, the contrastive objective's cluster heads),
``init_from``'s run settings are taken, a pretrained backbone's preprocessing reaches the data,
K comes from the data (or the ``num_clusters=auto`` range is set; the K the search chooses is a
new spec, :meth:`~vtcc.config.spec.RunSpec.with_k`), and a resumed run keeps its time budget.

:func:`resolve` builds nothing: what it needs to know of the data it asks the assembly
(``gather``, :func:`vtcc.build.data_facts` through :func:`vtcc.build.prepare_run`), which builds
the data source from the data node as resolved so far and answers with typed
:class:`~vtcc.config.spec.DataFacts`. It works on a copy: the composed config is left as it was,
and no other module writes to a run's config (a test greps for it). The result,
:class:`~vtcc.config.spec.RunSpec`, holds the config read-only: what ``config.yaml`` records and
what checkpoints store. One ``auto`` is left to the run on purpose: TEMI's
``module.teacher_momentum``, which follows the planned steps while a time budget re-plans them.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vtcc import registry
from vtcc.config.curation_run import take_curated_clusters, take_curation
from vtcc.config.data_defaults import auto_option_changes, keep_resumed_recipe, resolve_data_defaults
from vtcc.config.init_from import take_run_settings
from vtcc.config.recipe import resolve_learning_rate, take_recipe
from vtcc.config.resume import requeued_checkpoint, resumed_checkpoint
from vtcc.config.spec import DataFacts, RunSpec, frozen_config
from vtcc.data.pairings import pairing_for
from vtcc.errors import ConfigError
from vtcc.k_selection import check_criterion, search_range
from vtcc.knn import choose_backend
from vtcc.models.pretrained import pretrained_data_config, resolved_backbones, spaces_data_config
from vtcc.objectives import objective_class
from vtcc.plugins import VTCC_CONFIG_DIR
from vtcc.utils.checkpoint import CONFIG_KEY, load_checkpoint

log = logging.getLogger("vtcc")

# What resolving asks the assembly: the facts of the data its (read-only) data node describes.
Gather = Callable[[DictConfig], DataFacts]


def resolve(cfg: DictConfig, overrides: list[str], gather: Gather) -> RunSpec:
    """The frozen spec of the run ``cfg`` composes (``cfg`` itself is left as it was).
    ``overrides``: the command line's ``key=value`` items (what ``init_from`` keeps of this run);
    ``gather``: the facts of the data a data node describes (the assembly's, which sets the source
    up: its errors and its class count come before the model)."""
    cfg = copy.deepcopy(cfg)
    take_curation(cfg, overrides)  # curation=: objective=curated, before anything reads the objective
    objective = objective_class(cfg)
    take_recipe(cfg, objective)  # first: the features node and the model's heads are read from here on
    initial = _start_from(cfg, overrides, objective.needs_source_run)
    take_curated_clusters(cfg)  # curation=: K' from the file and init_from's K
    _feature_input(cfg)
    take_recipe(cfg, objective)  # model=auto under data=features became model=features: its heads
    _pretrained_preprocessing(cfg)
    _spaces(cfg, objective)
    resolve_data_defaults(cfg)  # data=folder/npz: channels, size, statistics, augmentation from the images
    _instance_projector(cfg, objective.trains_instance_projector)  # after model=auto's check
    _requeued(cfg)  # before K: a requeued num_clusters=auto run continues at the K it chose
    facts = gather(frozen_config(cfg.data))
    _feature_width(cfg, facts)
    candidates = _from_the_data(cfg, facts)
    if candidates and (cfg.get("ckpt_path") or cfg.get("resume")):
        raise ConfigError(
            "num_clusters=auto starts a new run: resume an auto run with num_clusters=<its K> "
            "(the integer in its config.yaml)"
        )
    ckpt_path, stored = resumed_checkpoint(cfg)
    keep_resumed_recipe(cfg, stored)
    resolve_cluster_heads(cfg, stored, initial)
    _refine_plan(cfg, stored)
    _cached_views(cfg)
    _feature_store(cfg, facts.length)
    _neighbor_search(cfg, facts.train_length)
    budget = _budget(cfg, stored)
    resolve_learning_rate(cfg, objective, stored)
    return RunSpec(cfg, initial, tuple(candidates) if candidates else None, ckpt_path, budget)


def _start_from(cfg: DictConfig, overrides: list[str], needs_run: bool) -> dict[str, Any] | None:
    """``init_from``: the checkpoint whose weights the run starts from (its settings now in ``cfg``)."""
    if not cfg.get("init_from"):
        if needs_run:
            raise ConfigError(
                "objective=selflabel starts from a trained run: add init_from=<its .ckpt> "
                "(e.g. outputs/train/runs/<run>/checkpoints/last.ckpt)"
            )
        return None
    if cfg.get("num_clusters") == "auto":
        raise ConfigError("init_from takes K from its checkpoint: drop num_clusters=auto")
    return take_run_settings(cfg, overrides)


def _instance_projector(cfg: DictConfig, trained: bool) -> None:
    """The network carries an instance projector only for an objective that trains one: for the
    others ``model.instance_dim`` is null (an ``init_from`` run's projector is not carried on)."""
    if not trained and "instance_dim" in cfg.model:
        cfg.model.instance_dim = None


def _builds_pretrained(cfg: DictConfig) -> bool:
    """A model whose backbone is pretrained (its kind says so: the ``pretrained`` trait)."""
    return registry.builds(cfg.model, "model", pretrained=True)


def _pretrained_preprocessing(cfg: DictConfig) -> None:
    """A pretrained backbone brings its own preprocessing (timm's data config): use it for the data.
    Several backbones (``model.backbones``): the largest one's size, pixels in [0, 1]; each
    backbone then brings them to its own preprocessing."""
    if not _builds_pretrained(cfg):
        return
    if cfg.model.get("backbones"):
        cfg.model.backbones = resolved_backbones(cfg.model.backbones)
        preprocessing = spaces_data_config(cfg.model.backbones)
        source = f"{len(cfg.model.backbones)} backbones (each then its own)"
    else:
        preprocessing = pretrained_data_config(
            cfg.model.name, cfg.model.get("checkpoint"), cfg.model.get("model_kwargs")
        )
        source = cfg.model.name
    with open_dict(cfg.data):
        cfg.data.update(preprocessing)
    log.info("data preprocessing from %s: %s", source, preprocessing)


def _builds_features_model(cfg: DictConfig) -> bool:
    """A model that reads feature vectors, not images (its kind's ``reads_features`` trait)."""
    return registry.builds(cfg.model, "model", reads_features=True)


def _reads_feature_file(cfg: DictConfig) -> bool:
    """Data of feature vectors, not images (its kind's ``reads_features`` trait)."""
    return registry.builds(cfg.data, "datamodule", reads_features=True)


# What an objective's pairing of augmented views becomes on precomputed features (one vector an
# image): SCAN's neighbours pair the vectors of an image and a neighbour (TEMI's way), self-labelling's
# weak and strong views the vector with itself.
ONE_VECTOR_PAIRING = {"neighbors": "eval_neighbors", "weak_strong": "eval"}


def _feature_input(cfg: DictConfig) -> None:
    """``data=features``: the heads on the file's vectors. ``model=auto`` becomes ``model=features``,
    no augmentation is recorded (there are no images), and a pairing of augmented views becomes
    its one-vector form (:data:`ONE_VECTOR_PAIRING`); an objective that needs two views of each
    image is refused. ``model=features`` without ``data=features`` is refused too."""
    if not _reads_feature_file(cfg):
        if _builds_features_model(cfg):
            raise ConfigError(
                "model=features clusters precomputed features: add data=features data.root=<file>.npy, "
                "or pick a model for images (model=auto)"
            )
        return
    if cfg.model.get("size") == "auto":  # model=auto
        _features_model(cfg)
    if not _builds_features_model(cfg):
        raise ConfigError(
            "data=features holds feature vectors, not images: use model=features (or leave model=auto)"
        )
    features = cfg.features
    if not features or not features.get("cache"):
        raise ConfigError("data=features: the file's features are the cache; drop features.cache=false")
    with open_dict(cfg):
        cfg.augment = None  # no images, no augmentation
    name = str(features.get("pairing", "views"))
    if pairing_for(name).uses_views:
        if name not in ONE_VECTOR_PAIRING:
            raise ConfigError(
                f"features.pairing={name}: this objective trains on augmented views of images and "
                "data=features holds one vector per image: use objective=temi, turtle, scan or selflabel"
            )
        features.pairing = ONE_VECTOR_PAIRING[name]
        log.info("data=features: features.pairing=%s (one vector per image, no views)", features.pairing)


def _features_model(cfg: DictConfig) -> None:
    """``model=auto`` under ``data=features``: ``model=features``, keeping the settings given for
    the auto model that ``model=features`` has too (a ``model.head_style``, a ``model.hidden_dim``;
    its ``head_style: auto`` is then the objective's); a setting only image models have is refused."""
    changed = auto_option_changes(cfg, "model", "size", "vit_tiny")
    model = OmegaConf.load(VTCC_CONFIG_DIR / "model" / "features.yaml")
    foreign = sorted(key for key in changed if key not in model)
    if foreign:
        raise ConfigError(
            f"model.{foreign[0]} is a setting of image models and data=features takes model=features: drop it"
        )
    with open_dict(model):
        model.update({key: value for key, value in changed.items()})
    cfg.model = model


def _feature_width(cfg: DictConfig, facts: DataFacts) -> None:
    """``model.num_features: auto`` of ``model=features``: the width of the file's features."""
    if not _builds_features_model(cfg):
        return
    width = facts.feature_width
    given = cfg.model.get("num_features")
    if given not in ("auto", width):
        raise ConfigError(
            f"model.num_features={given} but {cfg.data.root} holds {width} columns: leave it auto"
        )
    cfg.model.num_features = width


def _frozen_backbone(cfg: DictConfig) -> bool:
    """Whether only the heads train: a frozen pretrained backbone, or precomputed features
    (``data=features``)."""
    return (_builds_pretrained(cfg) and cfg.model.get("mode") == "frozen") or _builds_features_model(cfg)


def _on_cached_features(cfg: DictConfig) -> bool:
    """Whether the run trains on features computed once: a frozen backbone's cache."""
    return bool(_frozen_backbone(cfg) and (cfg.get("features") or {}).get("cache"))


def _spaces(cfg: DictConfig, objective: Any) -> None:
    """An objective on cached features needs a frozen pretrained backbone (or precomputed
    features); ``model.normalize_spaces: auto`` becomes whether each space is L2-normalised: with
    several backbones (or ``model.space_dims``), unless the objective reads each space's raw
    features (TURTLE)."""
    on_features = _builds_features_model(cfg)
    if objective.requires_frozen_backbone and not _on_cached_features(cfg):
        raise ConfigError(
            f"{objective.__name__} trains on a frozen backbone's cached features: use model=pretrained "
            "model.mode=frozen (with features.cache=true), or data=features"
        )
    if not (_builds_pretrained(cfg) or on_features) or cfg.model.get("normalize_spaces", "auto") != "auto":
        return
    several = len(cfg.model.get("backbones") or cfg.model.get("space_dims") or []) > 1
    with open_dict(cfg.model):
        cfg.model.normalize_spaces = several and not objective.reads_raw_spaces


def _from_the_data(cfg: DictConfig, data: DataFacts) -> list[int] | None:
    """Take K from the data when not given; record the size the images are held at. With
    ``num_clusters=auto``: the candidate Ks (the backbone first trains at the largest)."""
    candidates = None
    if cfg.get("num_clusters") == "auto":
        search = cfg.k_search
        candidates = search_range(search.min, search.max, data.length)
        check_criterion(search.criterion)  # an unknown criterion stops now, not after training
        if search.embedding == "instance" and cfg.model.get("instance_dim") is None:
            raise ConfigError(
                "k_search.embedding=instance needs an objective that trains instance vectors "
                "(objective=contrastive): use k_search.embedding=backbone"
            )
        cfg.num_clusters = max(candidates)
        log.info(
            "num_clusters=auto: K from %d to %d, chosen by %s on the %s embeddings after training",
            min(candidates),
            max(candidates),
            search.criterion,
            search.embedding,
        )
    if cfg.get("num_clusters") is None:
        if data.num_classes is None:
            raise ConfigError(
                "the images have no class folders to count clusters from: set num_clusters=<K>, "
                "or num_clusters=auto to choose K from the data"
            )
        cfg.num_clusters = data.num_classes
    if cfg.num_clusters > data.length:
        raise ConfigError(
            f"num_clusters={cfg.num_clusters} is more than the {data.length} images: lower num_clusters"
        )
    for node in (cfg.data, cfg.data.get("dataset")):  # folder: data.dataset; streaming: data
        if isinstance(node, DictConfig) and "stored_size" in node and node.stored_size is None:
            node.stored_size = data.stored_size
    with open_dict(cfg):  # what vtcc-predict needs to decode new images as evaluation saw the data
        cfg.preprocessing = {"stored_size": data.stored_size, "in_chans": data.in_chans}
    best = (cfg.get("callbacks") or {}).get("best_by_labels")
    if best is not None and not data.labeled:
        raise ConfigError("callbacks=best_by_labels needs labelled data: use callbacks=default")
    return candidates


def _requeued(cfg: DictConfig) -> None:
    """A SLURM job started again by the scheduler resumes its own last checkpoint (recorded as
    ``ckpt_path``, with ``resume`` dropped): the run goes on where its last epoch ended. A
    ``num_clusters=auto`` run has checkpoints only in its refine phase: it continues at the K its
    search chose, recorded in the checkpoint."""
    own = requeued_checkpoint(cfg)
    if own is None:
        return
    cfg.ckpt_path = str(own)
    cfg.resume = None
    if cfg.get("num_clusters") == "auto":
        cfg.num_clusters = int(load_checkpoint(own)[CONFIG_KEY]["num_clusters"])
    log.info("SLURM requeued this job (restart %s): resuming %s", os.environ["SLURM_RESTART_COUNT"], own)


# measured in docs/own-folder.md#five-cluster-heads-the-one-the-embedding-supports-clusters
SEVERAL_HEADS = 5


def resolve_cluster_heads(
    cfg: DictConfig, stored: dict[str, Any], initial: dict[str, Any] | None = None
) -> None:
    """``module.num_cluster_heads=auto`` (contrastive): five heads when a time budget plans the run
    or when only the heads train (a frozen backbone: SCAN's official code trains ten heads there
    and keeps one), one on a fixed number of epochs end to end, as the papers; a
    resumed run keeps its checkpoint's heads, a run started from another (``init_from``) that
    run's."""
    if cfg.module.get("num_cluster_heads") != "auto":
        return
    source = stored or (initial or {}).get(CONFIG_KEY)
    if source:
        heads = int((source.get("module") or {}).get("num_cluster_heads", 1))
    else:
        several = cfg.get("time_budget_minutes") is not None or _frozen_backbone(cfg)
        heads = SEVERAL_HEADS if several else 1
    cfg.module.num_cluster_heads = heads


def _refine_plan(cfg: DictConfig, stored: dict[str, Any]) -> None:
    """Resuming num_clusters=auto's refine phase: the run's chosen K and refine epochs, recorded
    again in this run's config (a second resume then follows them too)."""
    search = stored.get("k_search") or {}
    if search.get("chosen") is None:
        return
    with open_dict(cfg.k_search):
        cfg.k_search.chosen = search["chosen"]
        if cfg.k_search.get("refine_epochs") is None:
            cfg.k_search.refine_epochs = search.get("refine_epochs")


def _cached_views(cfg: DictConfig) -> None:
    """``features.num_views``: none for the pairings of evaluation features; ``auto``: 10 views on
    a GPU, 4 on a CPU (each view is a backbone pass per image). Part of the cache key."""
    features = cfg.get("features")
    if not features:
        return
    if not pairing_for(features.get("pairing", "views")).uses_views:
        features.num_views = 0
    elif features.get("num_views") == "auto":
        on_gpu = torch.cuda.is_available() and features.get("device", "auto") in ("auto", "cuda")
        features.num_views = 10 if on_gpu else 4
        if cfg.model.get("mode") == "frozen":  # only then are views extracted
            log.info(
                "features.num_views=%d (%s; set it to change)", features.num_views, "GPU" if on_gpu else "CPU"
            )


# features.store=auto: a memory-mapped store above this many cached feature rows (images x
# (views + 1)): 2 million rows of width 384 are 3 GB in float32, about an eighth of a 24 GB machine.
MAPPED_ROWS = 2_000_000


def _feature_store(cfg: DictConfig, images: int) -> None:
    """``features.store=auto``: ``mapped`` above :data:`MAPPED_ROWS` feature rows (``images`` x
    (views + 1)), else ``memory``."""
    features = cfg.get("features")
    if not features or features.get("store", "memory") != "auto":
        return
    rows = images * (int(features.get("num_views") or 0) + 1)
    features.store = "mapped" if rows > MAPPED_ROWS else "memory"


def _neighbor_search(cfg: DictConfig, training_images: int) -> None:
    """``features.neighbor_search=auto``: exact up to :data:`vtcc.knn.EXACT_LIMIT` training images,
    FAISS above when it is installed; recorded, so a resumed run mines its neighbours as it did."""
    features = cfg.get("features")
    if not features or features.get("neighbor_search", "auto") != "auto":
        return
    mines = pairing_for(features.get("pairing", "views")).uses_neighbors
    features.neighbor_search = choose_backend(training_images, warn=mines)


def _budget(cfg: DictConfig, stored: dict[str, Any]) -> float | None:
    """``time_budget_minutes``; resuming a budgeted run without it keeps the run's budget (the time
    spent and the plan come back from the checkpoint: a resumed run gets no fresh budget)."""
    budget = cfg.get("time_budget_minutes")
    if budget is None and stored.get("time_budget_minutes") is not None:
        budget = stored["time_budget_minutes"]
        cfg.time_budget_minutes = budget
        log.info("resuming a run with a time budget of %s min: its time spent counts", budget)
    return float(budget) if budget is not None else None
