"""The types of the settings: a schema for the keys outside any built object, and what the
constructors' signatures do not say by themselves.

A node with a ``_target_`` is checked against the signature of what it builds (see
:mod:`vtcc.config.validate`); the tables here complete those signatures where a config says more
than a constructor sees: ``auto`` values that vtcc resolves before building, marker keys that
vtcc consumes, ``**kwargs`` that a builder hands on, and Lightning's names it accepts as ``str``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from typing import Annotated, Any, Literal

from vtcc import registry
from vtcc.config.types import DEVICE, Check, above, at_least, with_range, within
from vtcc.k_selection import CRITERIA, EMBEDDINGS

POSITIVE = above(0)
AT_LEAST_0 = at_least(0)
AT_LEAST_1 = at_least(1)
AT_LEAST_2 = at_least(2)
PROBABILITY = within(0, 1)
FRACTION = within(0, 1, open_low=True)  # a share of something that cannot be none of it
SEED = Check(lambda v: 0 <= v < 2**32, "between 0 and 2**32 - 1")  # numpy's and Lightning's bounds
FREE = Check(lambda v: True)  # declared free: any number is a valid value


# Lightning parses a devices string: "auto", "-1" (all), "2" (a count), "0,1" (these indices).
DEVICES_TEXT = re.compile(r"auto|-1|\s*\d+\s*(,\s*\d+\s*)*,?")
LIGHTNING_DEVICES = (
    list[Annotated[int, AT_LEAST_0]]  # these indices
    | Annotated[int, Check(lambda v: v == -1 or v >= 1, "-1 (all) or >= 1")]  # a count
    | Annotated[str, Check(DEVICES_TEXT.fullmatch, name="a string such as auto, -1 or '0,1'")]
)
Criterion = Literal[tuple(CRITERIA)]
Embedding = Literal[EMBEDDINGS]
COLOR_JITTER = Annotated[
    Sequence[float],
    Check(
        lambda v: len(v) == 4 and min(v) >= 0 and v[3] <= 0.5,
        name="a list of 4 numbers >= 0: brightness, contrast, saturation and hue (hue <= 0.5)",
    ),
]

# The range of every number a config can set, by the name of its parameter (or run setting): the
# first pattern that matches decides (fnmatch; ``Owner.name`` patterns name one class's or
# builder's parameter, and come first). A Check applies to each number a parameter's type admits
# (``int | None``, ``Sequence[float]``, ...); a type replaces the parameter's; FREE declares any number
# valid. A range already in a type (RunSettings', :func:`overrides`') comes first. Every numeric key of
# every shipped config has one (tests/unit/test_config_types.py): a new key without one fails there.
RANGES: tuple[tuple[str, Any], ...] = (
    # one class's or builder's meaning of a common name
    ("TemiLoss.beta", FRACTION),  # the weight of the marginal entropy (TEMI's 0.6)
    ("TemiLoss.prior_momentum", within(0, 1, open_high=True)),  # 1 would freeze the prior
    ("ConfidenceCrossEntropy.threshold", FRACTION),  # a confidence
    ("CuratedClustering.threshold", FRACTION),  # a source probability
    ("TurtleClustering.generalization_folds", Check(lambda v: v == 0 or v >= 2, "0 (no score) or >= 2")),
    ("rgb_view.color_jitter", COLOR_JITTER),
    # data loading
    ("num_workers", AT_LEAST_0),
    ("*_workers", AT_LEAST_0),
    ("batch_size", AT_LEAST_1),
    ("*_batch_size", AT_LEAST_1),  # eval_batch_size, extract_batch_size
    ("accumulate_grad_batches", AT_LEAST_1),
    ("num_threads", AT_LEAST_1),
    # sizes, widths and counts
    ("image_size", AT_LEAST_1),
    ("img_size", AT_LEAST_1),
    ("crop_scale", FRACTION),  # of the image's area
    ("cutout_scale", FRACTION),
    ("*_size", AT_LEAST_1),  # stored_size, max_stored_size, patch_size, part_size
    ("in_chans", AT_LEAST_1),
    ("depth", AT_LEAST_1),
    ("*_dim", AT_LEAST_1),  # embed_dim, hidden_dim, instance_dim
    ("*_dims", AT_LEAST_1),  # space_dims
    ("stem_channels", AT_LEAST_1),
    ("neighbor_spaces", AT_LEAST_1),  # feature widths
    ("num_clusters", AT_LEAST_2),
    ("num_classes", AT_LEAST_1),
    ("num_cluster_heads", AT_LEAST_1),
    ("num_heads", AT_LEAST_1),
    ("num_neighbors", AT_LEAST_1),
    ("num_features", AT_LEAST_1),
    ("num_nodes", AT_LEAST_1),
    ("num_ops", AT_LEAST_0),
    ("num_views", AT_LEAST_0),  # an even number >= 2 where the pairing uses views (its datamodule checks)
    ("num_sanity_val_steps", at_least(-1)),  # -1: all
    ("trainable_blocks", AT_LEAST_1),
    ("freeze_last_layer", AT_LEAST_0),  # epochs
    # probabilities and fractions
    ("*_p", PROBABILITY),  # hflip_p, blur_p, affine_p, ...
    ("*_prob", PROBABILITY),
    ("decay_fraction", FRACTION),  # of a schedule's steps after the warm-up
    ("*fraction*", PROBABILITY),
    ("*momentum", PROBABILITY),  # teacher_momentum; an optimiser's momentum
    ("min_lr_ratio", PROBABILITY),  # of the peak learning rate
    ("layer_decay", FRACTION),
    ("drop_path_rate", within(0, 1, open_high=True)),
    ("translate", PROBABILITY),  # of the image's side
    ("brightness", PROBABILITY),  # factors in [1 - b, 1 + b]
    ("contrast", PROBABILITY),
    ("betas", within(0, 1, open_high=True)),
    # learning rates, temperatures, weights
    ("lr", POSITIVE),
    ("*_lr", POSITIVE),  # inner_lr
    ("rate_width", POSITIVE),  # TURTLE's: the space width its rates are set for (null: as given)
    ("backbone_lr_scale", POSITIVE),
    ("temperature", POSITIVE),
    ("*_temperature", POSITIVE),
    ("weight_decay", AT_LEAST_0),
    ("*_weight", AT_LEAST_0),  # cluster_weight, instance_weight, entropy_weight
    ("gamma", AT_LEAST_0),
    ("eps", AT_LEAST_0),
    ("mlp_ratio", POSITIVE),
    ("crop_ratio", POSITIVE),  # aspect ratios
    # augmentation magnitudes
    ("rotation", AT_LEAST_0),  # degrees
    ("shear", AT_LEAST_0),
    ("noise_std", AT_LEAST_0),
    ("blur_sigma", POSITIVE),
    ("blur_kernel", Check(lambda v: v >= 1 and v % 2 == 1, name="an odd integer >= 1")),
    ("std", POSITIVE),  # a normalisation divides by it
    ("mean", FREE),  # a normalisation mean may be any number
    # schedules and steps
    ("warmup_steps", AT_LEAST_0),
    ("total_steps", AT_LEAST_1),
    ("steps_per_epoch", AT_LEAST_1),
    ("inner_steps", AT_LEAST_1),
    ("generalization_max_iter", AT_LEAST_1),
    # the trainer, callbacks and loggers
    ("max_epochs", AT_LEAST_1),
    ("min_epochs", AT_LEAST_0),
    ("max_steps", at_least(-1)),  # -1: no limit
    ("min_steps", AT_LEAST_0),
    ("check_val_every_n_epoch", AT_LEAST_1),
    ("flush_logs_every_n_steps", AT_LEAST_1),
    ("*every_n_*", AT_LEAST_0),  # 0: never (log_every_n_steps, every_n_epochs, every_n_train_steps)
    ("save_top_k", at_least(-1)),  # -1: every checkpoint
    ("gradient_clip_val", AT_LEAST_0),
    ("version", AT_LEAST_0),  # a logger's version_<n> folder
    # random seeds
    ("seed", SEED),
    ("*_seed", SEED),
)


def range_rule(owner: Any, name: str) -> Any:
    """The rule of :data:`RANGES` for ``owner``'s parameter ``name`` (None: no rule)."""
    qualified = f"{getattr(owner, '__name__', owner)}.{name}"
    for pattern, rule in RANGES:
        if fnmatchcase(qualified if "." in pattern else name, pattern):
            return rule
    return None


def ranged(owner: Any, name: str, annotation: Any) -> Any:
    """``annotation`` with the range :data:`RANGES` gives ``owner``'s parameter ``name``."""
    rule = range_rule(owner, name)
    if rule is None:
        return annotation
    return with_range(annotation, rule) if isinstance(rule, Check) else rule


# Keys renamed since a config or a command line may have used them: old key -> (new key, the
# entry points whose config had the old one). A config or command line that names one is refused
# with the new name; a checkpoint's stored config is upgraded on load (vtcc.config.stored.RENAMED).
RENAMED_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "module.num_heads": ("module.num_cluster_heads", ("train",)),  # model.num_heads: attention heads
    "save_embeddings": ("embeddings", ("predict",)),
    "accelerator": ("trainer.accelerator", ("eval",)),
}


def setting(help: str, example: Any = None) -> Any:
    """A schema field: what it is, and a valid value for the error message's ``e.g.``."""
    return field(metadata={"help": help, "example": example})


@dataclass
class KSearch:
    min: Annotated[int, AT_LEAST_2] = setting("the smallest K tried", 2)
    max: Annotated[int, AT_LEAST_2] | None = setting("the largest K tried; null: 50, or N/10", 20)
    criterion: Criterion = setting("what chooses K", "davies_bouldin")
    embedding: Embedding = setting("what k-means partitions", "backbone")
    refine_epochs: Annotated[int, AT_LEAST_1] | None = setting("epochs at the chosen K", 10)
    chosen: Annotated[int, AT_LEAST_2] | None = setting("the K a search chose (vtcc writes it)", 10)


@dataclass
class Paths:
    log_dir: str = setting("where runs go", "outputs")
    output_dir: str = setting("this run's folder", "outputs/train/run")


@dataclass
class RunSettings:
    """The settings of train.yaml, eval.yaml and predict.yaml that no ``_target_`` builds."""

    task_name: str = setting("the runs' folder under paths.log_dir", "train")
    seed: int | None = setting("the random seed", 42)
    num_clusters: int | Literal["auto"] | None = setting("K; auto: chosen without labels", 10)
    time_budget_minutes: Annotated[float, POSITIVE] | None = setting("minutes of training", 30)
    ckpt_path: str | None = setting("a checkpoint file", "<run>/checkpoints/last.ckpt")
    resume: Literal["latest"] | None = setting("resume the newest matching run")
    init_from: str | None = setting("a finished run's checkpoint", "<run>/checkpoints/last.ckpt")
    overwrite: bool = setting("allow a folder that already holds outputs", False)
    k_search: KSearch = setting("num_clusters=auto's search")
    paths: Paths = setting("where outputs go")
    callbacks: dict[str, Any] | None = setting("the callbacks group's nodes", {})
    logger: dict[str, Any] | None = setting("the logger group's nodes", {})
    report: bool = setting("write the report (train: at the end, on by default; eval: report=true)", False)
    input: str = setting("the images to assign", "<folder of images>")  # vtcc-predict
    output: str = setting("where clusters.csv goes", "<new folder>")
    batch_size: Annotated[int, AT_LEAST_1] = setting("images per batch", 256)
    device: DEVICE = setting("where the model runs", "auto")
    embeddings: bool = setting("write embeddings.npy and paths.txt", False)
    parquet: bool = setting("write clusters.parquet (path, cluster, confidence, 2-D map)", False)
    copy_images: Literal["none", "copy", "link"] = setting("one folder per cluster", "none")
    curation: str | None = setting(
        "a curation.json: vtcc-predict applies it; vtcc-train with init_from trains with it", "curation.json"
    )
    curated: dict[str, Any] | None = setting(
        "what a run trained with curation= took from the file (vtcc writes it): sha256, K, clusters, names"
    )


# Nodes without a _target_ that are one object's keywords: eval.yaml's trainer.
PLAIN_TARGETS = {"trainer": "lightning.pytorch.Trainer"}


def forwards() -> dict[Any, Any]:
    """A builder whose ``**kwargs`` go on to another callable: the keys are that callable's
    (each registered kind's ``forwards`` trait, :mod:`vtcc.registry`)."""
    return _tables(registry.generation())["forwards"]


def resolved_auto() -> frozenset[tuple[Any, str]]:
    """Parameters a config may leave ``auto``: vtcc replaces it before building (the constructor
    never sees it). Each registered kind says which (its ``auto`` trait), for itself and for what
    its ``**kwargs`` go on to: the data's from the images (vtcc.config.data_defaults), the strong
    view's and the self-labelling threshold from init_from's run (vtcc.config.init_from), the cached
    views from the device (vtcc.build.wrap_for_network), the contrastive heads from the time
    budget (vtcc.config.resolve), the cached features' pairing, neighbours, sampling, batch and
    steps and the head style from the objective's class (vtcc.config.recipe)."""
    return _tables(registry.generation())["auto"]


def auto_rate(owner: Any, name: str) -> bool:
    """An optimiser's ``lr`` may be ``auto``: the objective's rates (its ``auto_rates`` trait, for a
    fixed number of epochs and for a time budget) replace it before building
    (vtcc.config.recipe.resolve_learning_rate); an objective without them refuses it there, in one line."""
    from torch.optim import Optimizer

    return name == "lr" and isinstance(owner, type) and issubclass(owner, Optimizer)


def extra_keys() -> dict[tuple[Any, str], Any]:
    """Keys of a node that vtcc consumes before building it (each kind's ``extra_keys`` trait):
    ``model=auto`` and ``augment=auto``'s markers (vtcc.config.data_defaults), and
    ``features.cache`` (whether the feature node is used)."""
    return _tables(registry.generation())["extra_keys"]


@cache
def _tables(generation: int) -> dict[str, Any]:
    """The schema's tables from the registry as it is at ``generation`` (rebuilt after a plugin
    registers more). A registered class takes on the traits of the registered classes it derives
    from (a plugin's subclass of an objective leaves the same keys ``auto``)."""
    forwarding: dict[Any, Any] = {}
    auto: set[tuple[Any, str]] = set()
    extra: dict[tuple[Any, str], Any] = {}
    types: dict[tuple[Any, str], Any] = {}
    everything = registry.entries()
    for entry in everything:
        owners = [entry.obj]
        if entry.trait("forwards") is not None:
            forwarding[entry.obj] = entry.trait("forwards")
            owners.append(entry.trait("forwards"))
        bases = [entry, *(e for e in everything if e is not entry and _derives(entry.obj, e.obj))]
        for base in reversed(bases):  # its own traits last: they win
            auto.update((owner, key) for owner in owners for key in base.trait("auto", ()))
            extra.update({(entry.obj, key): kind for key, kind in base.trait("extra_keys", {}).items()})
            types.update({(entry.obj, key): kind for key, kind in base.trait("types", {}).items()})
    return {"forwards": forwarding, "auto": frozenset(auto), "extra_keys": extra, "types": types}


def _derives(kind: Any, base: Any) -> bool:
    return isinstance(kind, type) and isinstance(base, type) and issubclass(kind, base)


def overrides() -> dict[tuple[Any, str], Any]:
    """Tighter types than a signature says: choices kept in a module's constant (each registered
    kind's ``types`` trait), and the names Lightning accepts as any ``str`` (it would refuse a wrong
    one only when the trainer is built, after the data and the model)."""
    return _overrides(registry.generation())


@cache
def _overrides(generation: int) -> dict[tuple[Any, str], Any]:
    from lightning.pytorch import Trainer
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import Strategy, StrategyRegistry

    accelerators = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    strategies = ("auto", *StrategyRegistry.available_strategies())
    return {
        **_tables(generation)["types"],
        (Trainer, "accelerator"): Literal[accelerators],
        (Trainer, "strategy"): Literal[strategies] | Strategy,
        (Trainer, "devices"): LIGHTNING_DEVICES,
        (Trainer, "gradient_clip_algorithm"): Literal["norm", "value"] | None,
        (Trainer, "profiler"): Literal["simple", "advanced", "pytorch", "xla"] | None,
        (ModelCheckpoint, "mode"): Literal["min", "max"],
    }
