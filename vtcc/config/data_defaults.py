"""Settings from the data: what ``auto`` means for your own images (``data=folder``,
``folder_streaming``, ``npz``, ``shards``), decided before the model is built and logged on one line.

Rules (measured on digits as PNG folders and on colour images, see the README):
- ``data.in_chans``: 1 when every sampled image is gray, else 3.
- ``data.image_size``: small images keep about their native size (at least 16 px, a multiple of
  4); larger ones are brought down to what the device trains in reasonable time: 64 px on a CPU,
  224 px on a GPU.
- ``data.mean`` / ``data.std``: the sampled images' own channel statistics.
- ``model.patch_size`` (``model=vit_tiny``'s conv stem): the smallest power of two from 4 that
  keeps the tokens within 16 on a CPU and 196 on a GPU (16 px digits: 4, 16 tokens; 32 px: 8);
  an image size chosen from the data then moves to the nearest multiple of the patch.
- ``model=auto`` (the default): ``vit_tiny`` (width 96, depth 4), or on a GPU for images from
  96 px VTCC's ViT-small (width 384, depth 8, 12 heads, patch 16).
- ``augment=auto`` (the default): ``small`` (mild crops, rotations) for gray images up to 64 px,
  else Contrastive Clustering's colour recipe ``cc`` (crops, flips, colour jitter, grayscale).
- ``augment.view_a.hflip_p`` of ``augment=auto``'s ``small``: 0.5 when the sampled images' mirror
  images look like the images (:func:`mirror_flip`), else 0. Only folders and ``.npz`` files are
  sampled: other datasets (the built-in digits, MNIST, Fashion-MNIST) keep 0. Flips change the
  meaning of text, digits or some medical images: ``augment=small`` (no flips) makes sure.
- ``augment.view_a.invert_p`` of the same recipe: 0.5 when the sampled images with their gray
  levels inverted look like the images (:func:`invert_gray`: the data holds both polarities,
  pictograms dark on light and light on dark, textures), else 0 (digits, letters, lit objects).
Any value set explicitly (not ``auto``) is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vtcc import registry
from vtcc.data.probe import ImageProbe, probe_folder, probe_npz
from vtcc.data.shards import read_index
from vtcc.errors import ConfigError
from vtcc.plugins import VTCC_CONFIG_DIR as CONFIG_DIR

log = logging.getLogger("vtcc")

AUTO = "auto"
SMALL = 64  # px: above it, an image is brought down to the device's size
DEVICE_SIZE = {"cpu": 64, "cuda": 224}
MAX_TOKENS = {"cpu": 16, "cuda": 196}
LARGE_ON_GPU = 96  # px: from here model=auto takes VTCC's ViT-small on a GPU
MIRROR_TOLERATED = 1.10  # mirror_ratio up to this: augment=auto's small recipe flips (see mirror_flip)
INVERT_TOLERATED = 1.10  # invert_ratio up to this: it inverts gray levels (see invert_gray)


def device_kind(cfg: DictConfig) -> str:
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def image_size_for(median_side: int, device: str) -> int:
    if median_side <= SMALL:
        return max(16, 4 * round(median_side / 4))
    return min(DEVICE_SIZE[device], 4 * round(median_side / 4))


def patch_size_for(image_size: int, device: str, fixed: bool = False) -> int:
    """The smallest power of two from 4 that keeps the tokens within the device's cap. ``fixed``:
    the image size cannot move to the patch grid (a dataset's own size, or one you set), so the
    patch must divide it: the smallest such patch within the cap, else the largest that divides
    (28 px MNIST on a CPU: 4, 49 tokens; 8 would not divide 28)."""
    patch = 4
    while (image_size // patch) ** 2 > MAX_TOKENS[device] and patch < 32:
        patch *= 2
    if not fixed or image_size % patch == 0:
        return patch
    dividing = [p for p in (4, 8, 16, 32) if image_size % p == 0]
    within = [p for p in dividing if (image_size // p) ** 2 <= MAX_TOKENS[device]]
    return (within or dividing or [patch])[0 if within else -1]


def fit_to_patch(image_size: int, patch: int) -> int:
    """The stem needs a multiple of the patch: round to the nearest one (at least one patch)."""
    return max(patch, patch * round(image_size / patch))


def augment_for(in_chans: int, image_size: int, model_channels: int | None = None) -> str:
    """``small`` for small gray images, ``cc`` for colour or large ones; a model that sees one
    channel (gray images normalised as gray, not a pretrained RGB model) gets ``small`` at any
    size: ``cc``'s colour jitter and grayscale need three channels."""
    if model_channels == 1:
        return "small"
    return "small" if in_chans == 1 and image_size <= SMALL else "cc"


def mirror_flip(ratio: float | None) -> float:
    """``hflip_p`` of augment=auto's small recipe: 0.5 when the data's mirror images look like its
    images (:func:`vtcc.data.probe.mirror_ratio` at most 1.10), else 0. Measured on five folders
    (scripts/folders.py, 256 sampled images): animal silhouettes 1.03 and drawn shapes 1.05,
    whose mirror images are of their kind; letters in many fonts 1.14 and digits 1.63-1.64,
    whose mirror images are not."""
    return 0.5 if ratio is not None and ratio <= MIRROR_TOLERATED else 0.0


def model_for(image_size: int, device: str) -> str:
    return "vit_small" if device == "cuda" and image_size >= LARGE_ON_GPU else "vit_tiny"


def auto_option_changes(cfg: DictConfig, group: str, marker: str, base: str) -> dict[str, Any]:
    """The keys of ``<group>=auto``'s node that differ from its ``base`` option (overrides, or an
    objective's settings of that group), with their values."""
    given = OmegaConf.to_container(cfg[group], resolve=False)
    given.pop(marker)
    own = OmegaConf.load(Path(CONFIG_DIR, group, "auto.yaml"))  # what auto sets beside its base
    own = {k: v for k, v in OmegaConf.to_container(own).items() if k not in ("defaults", marker)}
    reference = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.load(Path(CONFIG_DIR, group, f"{base}.yaml")), own)
    )
    absent = object()
    changed = {k: v for k, v in given.items() if reference.get(k, absent) != v}
    changed.update({k: None for k in reference if k not in given})  # a key deleted with ~
    return changed


def resolve_auto_option(cfg: DictConfig, group: str, marker: str, base: str, pick: str, why: str) -> str:
    """``<group>=auto`` starts as the ``base`` option plus a ``marker: auto`` key. Becomes ``pick``:
    the base as given (marker dropped), or ``pick``'s own config; overrides of the base's keys keep
    the base, and where the rule picks another option they are refused. Returns what was used."""
    changed = bool(auto_option_changes(cfg, group, marker, base))
    if changed and pick != base:
        raise ConfigError(
            f"{group}=auto would pick {pick} {why}, but {group}.* settings of {base} were given: "
            f"choose it explicitly ({group}={base} or {group}={pick})"
        )
    if pick != base:
        cfg[group] = OmegaConf.load(Path(CONFIG_DIR, group, f"{pick}.yaml"))
        return pick
    with open_dict(cfg[group]):
        cfg[group].pop(marker)
    return f"{base} (with your {group}.* settings)" if changed else base


def invert_gray(ratio: float | None) -> float:
    """``invert_p`` of augment=auto's small recipe: 0.5 when the data's inverted images look like
    its images (:func:`vtcc.data.probe.invert_ratio` at most 1.10, the mirror test's bound for the
    same statistic), else 0. Measured on eight folders (``scripts/folders.py``): pictograms drawn
    either way round 0.995 and textures 0.994, which hold both polarities; letters 2.48, animal
    silhouettes 2.64, drawn shapes 2.66, lit solids 3.04, digits 4.6-4.7, which hold one."""
    return 0.5 if ratio is not None and ratio <= INVERT_TOLERATED else 0.0


# augment=auto's small recipe: each key the data decides, its rule, the probe's ratio and the words
# of the log line (what the changed images are, what the changed ones are like)
LOOK_ALIKE = (
    ("hflip_p", mirror_flip, "mirror_ratio", "mirror images"),
    ("invert_p", invert_gray, "invert_ratio", "inverted images"),
)


def _resolve_look_alike(view: DictConfig, sample: ImageProbe | None) -> list[str]:
    """Every ``auto`` of :data:`LOOK_ALIKE` from the sample's ratios (none sampled: 0); the log's
    reasons."""
    reasons = []
    for key, rule, ratio_name, what in LOOK_ALIKE:
        if view.get(key) != AUTO:
            continue
        ratio = getattr(sample, ratio_name) if sample is not None else None
        view[key] = rule(ratio)
        if ratio is not None:
            alike = "look like" if view[key] else "do not look like"
            reasons.append(f"{key}={view[key]} ({what} {alike} the others: ratio {ratio})")
        elif sample is not None:  # fewer than 128 images sampled, or a shard index from before the test
            reasons.append(f"{key}={view[key]} (the sample cannot tell whether {what} look like the others)")
    return reasons


def _probe_style(data: DictConfig) -> str | None:
    """How the data's images are sampled before loading, as its kind declares it (the ``probe``
    trait of its datamodule or loader: ``folder``, ``npz`` or ``shards``); None: not sampled."""
    kind = registry.node_entry(data.get("dataset")) or registry.node_entry(data)
    return kind.trait("probe") if kind is not None else None


def _probeable(cfg: DictConfig) -> bool:
    """Images vtcc samples before loading them (a folder, a streamed folder, shards or an .npz on disk)."""
    data = cfg.data
    return _probe_style(data) is not None and isinstance(data.get("root"), str) and Path(data.root).exists()


def _probe(cfg: DictConfig):
    data = cfg.data
    root = Path(str(data.root))
    style = _probe_style(data)
    if style == "npz":
        return probe_npz(root)
    if style == "shards":  # the sample vtcc-shards took when it wrote them
        return ImageProbe(**read_index(root)[0]["sample"])
    dataset = data.get("dataset") or {}
    subdir = dataset.get("subdir") or data.get("subdir")
    classes = dataset.get("classes") or data.get("classes")
    return probe_folder(root / subdir if subdir else root, classes)


def resolve_data_defaults(cfg: DictConfig, probe: bool = True) -> dict[str, Any]:
    """Replace every ``auto`` of the data, ``model.patch_size`` and ``augment=auto`` by the rule's
    value; returns what was chosen (also recorded as ``cfg.data_defaults``). ``probe=False``
    leaves the data's own ``auto`` values (for composing configs of data that is not there)."""
    data = cfg.data
    keys = ("in_chans", "image_size", "mean", "std")
    unset = [key for key in keys if probe and data.get(key) == AUTO]
    choices: dict[str, Any] = {}
    reasons: list[str] = []
    sample = _choose_from_sample(cfg, unset, choices, reasons) if unset else None
    if cfg.model.get("size") == AUTO and isinstance(data.get("image_size"), int):
        _choose_model(cfg, choices, reasons)
    if cfg.model.get("patch_size") == AUTO and isinstance(data.get("image_size"), int):
        _choose_patch_size(cfg, unset, choices, reasons)
    augment = cfg.get("augment") or {}  # none: data=features, no images to augment
    if augment.get("family") == AUTO:
        if not isinstance(data.get("in_chans"), int) or not isinstance(data.get("image_size"), int):
            if not probe:
                return choices
            raise ConfigError(
                "augment=auto needs data.in_chans and data.image_size: set them, or pick an augment="
            )
        _choose_augment(cfg, choices, reasons)
    view = (cfg.get("augment") or {}).get("view_a") or {}
    if any(view.get(key) == AUTO for key, *_ in LOOK_ALIKE):  # augment=auto's small recipe
        _choose_look_alike(cfg, view, unset, probe, sample, choices, reasons)
    if choices:
        with open_dict(cfg):
            cfg.data_defaults = choices
    if reasons:
        log.info("settings from the data (override any of them): %s", "; ".join(reasons))
    return choices


def _choose_from_sample(
    cfg: DictConfig, unset: list[str], choices: dict[str, Any], reasons: list[str]
) -> ImageProbe:
    """The data's ``unset`` values from a sample of its images: ``in_chans`` (gray or colour),
    ``image_size`` (for the device) and ``mean``/``std`` (as many as the channels); the sample."""
    data = cfg.data
    sample = _probe(cfg)
    device = device_kind(cfg)
    with open_dict(data):
        if data.get("in_chans") == AUTO:
            data.in_chans = 1 if sample.gray else 3
            reasons.append(f"in_chans={data.in_chans} ({'all gray' if sample.gray else 'colour'})")
        if data.get("image_size") == AUTO:
            data.image_size = image_size_for(sample.median_side, device)
            reasons.append(f"image_size={data.image_size} (median side {sample.median_side} px, {device})")
        for key in ("mean", "std"):
            if data.get(key) == AUTO:
                values = getattr(sample, key)
                if data.in_chans == 3 and len(values) == 1:
                    values = values * 3
                if data.in_chans == 1 and len(values) == 3:
                    values = [round(sum(values) / 3, 3)]
                data[key] = values
        if "mean" in unset:
            reasons.append(f"mean/std={list(data.mean)}/{list(data.std)} (of the sample)")
    choices.update({key: list(data[key]) if key in ("mean", "std") else data[key] for key in unset})
    choices["sampled_images"] = f"{sample.sampled} of {sample.images}"
    return sample


def _choose_model(cfg: DictConfig, choices: dict[str, Any], reasons: list[str]) -> None:
    """``model=auto``: the model for the data's image size on the device (:func:`model_for`)."""
    data = cfg.data
    pick = model_for(data.image_size, device_kind(cfg))
    why = f"for {data.image_size} px images on a GPU"
    choices["model"] = resolve_auto_option(cfg, "model", "size", "vit_tiny", pick, why)
    reasons.append(f"model={choices['model']}")


def _choose_patch_size(
    cfg: DictConfig, unset: list[str], choices: dict[str, Any], reasons: list[str]
) -> None:
    """``model.patch_size=auto`` (:func:`patch_size_for`); an image size the data chose moves to
    the patch grid, one given (or a dataset's own) stays and the patch divides it."""
    data = cfg.data
    fixed = "image_size" not in unset  # a size given (or a dataset's own) cannot move to the grid
    cfg.model.patch_size = patch_size_for(data.image_size, device_kind(cfg), fixed)
    if "image_size" in unset:  # a size the data chose may move to the patch grid
        data.image_size = fit_to_patch(data.image_size, cfg.model.patch_size)
    choices["patch_size"] = cfg.model.patch_size
    if unset:  # only worth a word when the size itself came from the data
        tokens = (data.image_size // cfg.model.patch_size) ** 2
        reasons.append(f"model.patch_size={cfg.model.patch_size} ({tokens} tokens)")


def _choose_augment(cfg: DictConfig, choices: dict[str, Any], reasons: list[str]) -> None:
    """``augment=auto``: ``small`` or ``cc`` for the data's channels and size, and the channels the
    model sees (:func:`augment_for`)."""
    data = cfg.data
    channels = len(data.mean) if OmegaConf.is_list(data.get("mean")) else None  # what the model sees
    family = augment_for(data.in_chans, data.image_size, channels)
    why = "small gray images" if family == "small" else "colour or large images"
    choices["augment"] = resolve_auto_option(cfg, "augment", "family", "small", family, f"for {why}")
    reasons.append(f"augment={choices['augment']} ({why})")


def _choose_look_alike(
    cfg: DictConfig,
    view: DictConfig,
    unset: list[str],
    probe: bool,
    sample: ImageProbe | None,
    choices: dict[str, Any],
    reasons: list[str],
) -> None:
    """``augment.view_a.hflip_p`` / ``invert_p`` = ``auto``: flips when the sampled images are
    mirror-symmetric, inversion when they hold both polarities (the sample already taken, else
    one taken now where the data can be sampled; none: neither)."""
    if not unset and probe and _probeable(cfg):  # no sample taken yet (one is, when a setting was unset)
        sample = _probe(cfg)
    auto = [key for key, *_ in LOOK_ALIKE if view.get(key) == AUTO]
    reasons.extend(_resolve_look_alike(view, sample))
    choices.update({key: view[key] for key in auto})


def keep_resumed_recipe(cfg: DictConfig, stored: dict[str, Any]) -> None:
    """A resumed run whose stored recipe predates an op the data now decides (its config has no
    ``invert_p``: it trained without inversion) keeps training without it, and says so; a value
    the checkpoint records is compared as ever (:func:`vtcc.config.resume.resume_differences`)."""
    stored_view = (stored.get("augment") or {}).get("view_a") or {}
    view = (cfg.get("augment") or {}).get("view_a") or {}
    decided = cfg.get("data_defaults") or {}
    if not stored_view:
        return
    for key, *_ in LOOK_ALIKE:
        if key in decided and key not in stored_view and view.get(key):
            view[key] = decided[key] = 0.0
            log.info(
                "augment.view_a.%s=0.0: the run resumed was trained before vtcc decided it from the data, "
                "and keeps its recipe",
                key,
            )
