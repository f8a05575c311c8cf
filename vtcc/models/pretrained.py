"""A large self-supervised pretrained backbone (e.g. DINO) under the clustering heads (Zhou & Zhang 2022)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.io.reader import check_regular
from vtcc.models.heads import HeadStyle
from vtcc.models.network import ClusteringNetwork, timm_arguments
from vtcc.models.spaces import PREPROCESSING, SpaceMember, SpacesBackbone, backbone_entries
from vtcc.registry import register

Mode = Literal["frozen", "partial", "full"]
MODES = get_args(Mode)


@dataclass
class RunCheckpoints:
    """How a vtcc run's ``.ckpt`` named as a backbone (``model.checkpoint=<run>.ckpt``) is read. The
    models sit below the checkpoint I/O and the assembly and never import them: those layers fill
    these in when they are imported (:func:`vtcc.utils.checkpoint.run_preprocessing`,
    :func:`vtcc.build.run_backbone`)."""

    preprocessing: Callable[[str | Path], dict[str, Any]] | None = None  # the run's image preprocessing
    backbone: Callable[[str | Path], nn.Module] | None = None  # the run's trained backbone

    def read(self, what: str) -> Callable[[str | Path], Any]:
        function = getattr(self, what)
        if function is None:
            raise RuntimeError(
                f"a vtcc run's .ckpt as a backbone: its {what} is read by "
                f"{'vtcc.utils.checkpoint' if what == 'preprocessing' else 'vtcc.build'}; import it first"
            )
        return function


RUN_CHECKPOINTS = RunCheckpoints()


def is_run_checkpoint(checkpoint: str | Path | None) -> bool:
    """Whether a ``checkpoint`` setting names a vtcc run's ``.ckpt`` (its backbone, architecture included)."""
    return bool(checkpoint) and str(checkpoint).endswith(".ckpt")


def create_pretrained_backbone(
    name: str,
    checkpoint: str | None = None,
    pretrained: bool = True,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """timm model ``name`` without classifier; weights from ``checkpoint`` (.pth, .safetensors) or the hub.

    A vtcc run's ``.ckpt`` as ``checkpoint`` gives that run's backbone (``name`` is then ignored).
    """
    import timm

    if is_run_checkpoint(checkpoint):
        return vtcc_run_backbone(checkpoint)
    kwargs: dict[str, Any] = {**timm_arguments(model_kwargs), "num_classes": 0, "pretrained": pretrained}
    if checkpoint and not Path(checkpoint).is_file():
        raise ConfigError(f"model.checkpoint={checkpoint} does not exist: give a .pth or .safetensors file")
    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(
            f"timm has no model {name!r}: e.g. vit_small_patch16_224.dino (see timm.list_models())"
        )
    if checkpoint:  # timm adapts the tensors (input channels, position embeddings) as for its own files
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": read_weights(Path(checkpoint))})
    try:
        model = timm.create_model(name, **kwargs)
        model.pretrained_cfg.pop("state_dict", None)  # timm keeps its config: not a copy of the weights
        return model
    except (OSError, RuntimeError, ValueError) as error:
        hint = (
            "check that the file holds this model's weights"
            if checkpoint
            else ("offline? download the weights once and pass model.checkpoint=<file>")
        )
        raise ConfigError(f"could not load weights for {name!r} ({error}): {hint}") from error


def _one_line(error: Exception) -> str:
    """torch's unpickling errors run to a page; the first line names the problem."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` or ``.pth`` file, read as data (``weights_only=True``).

    Read here rather than by timm's file loader: timm releases within our range differ in what
    their ``torch.load`` admits, and a weights file from the internet must not run code.
    """
    try:
        check_regular(path)  # never a FIFO or device: the read would hang or never end
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint: Any = load_file(str(path))
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable, or objects other than tensors: the file is unusable
        raise ConfigError(
            f"model.checkpoint={path} is not a readable weights file ({_one_line(error)}): "
            "give a .safetensors or .pth file of tensors"
        ) from error
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):  # timm's order for training files
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"model.checkpoint={path} holds no state dict: give a file of named tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}  # DataParallel's prefix


def vtcc_run_backbone(checkpoint: str | Path) -> nn.Module:
    """The backbone of a vtcc training run (``.ckpt``), e.g. an end-to-end VTCC model reused frozen."""
    return RUN_CHECKPOINTS.read("backbone")(checkpoint)


def pretrained_data_config(
    name: str, checkpoint: str | None = None, model_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model's own preprocessing (timm's data config): image size, mean, std, interpolation.

    For a vtcc run's ``.ckpt``, the preprocessing that run used.
    """
    import timm
    from timm.data import resolve_model_data_config

    if is_run_checkpoint(checkpoint):
        return RUN_CHECKPOINTS.read("preprocessing")(checkpoint)

    model = timm.create_model(name, pretrained=False, num_classes=0, **timm_arguments(model_kwargs))
    config = resolve_model_data_config(model)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or config["input_size"][1:]
    return {
        "image_size": int(size[0]),
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "interpolation": config.get("interpolation", "bilinear"),
    }


class PretrainedClusteringNetwork(ClusteringNetwork):
    """Clustering heads on a pretrained backbone, trained ``frozen``, ``partial`` or ``full``.

    frozen: backbone fixed and in eval mode (its features can be cached);
    partial: the last ``trainable_blocks`` blocks (and the final norm) train at ``backbone_lr_scale``;
    full: every layer trains, with layer-wise learning-rate decay ``layer_decay`` from the top block.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_clusters: int,
        mode: Mode = "frozen",
        trainable_blocks: int = 2,
        backbone_lr_scale: float = 0.1,
        layer_decay: float = 0.75,
        instance_dim: int | None = 128,
        hidden_dim: int | None = None,
        head_style: HeadStyle = "vtcc",
        space_dims: list[int] | None = None,
        normalize_spaces: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"model.mode={mode!r} is unknown: use one of {', '.join(MODES)}")
        super().__init__(
            backbone,
            num_clusters,
            instance_dim,
            hidden_dim,
            head_style,
            space_dims=space_dims,
            normalize_spaces=normalize_spaces,
        )
        self.mode = mode
        self.backbone_lr_scale = backbone_lr_scale
        self.layer_decay = layer_decay
        if mode != "full":
            backbone.requires_grad_(False)
        if mode == "partial":
            blocks = getattr(backbone, "blocks", None)
            if blocks is None or not 0 < trainable_blocks <= len(blocks):
                raise ConfigError(
                    f"model.trainable_blocks={trainable_blocks} must be between 1 and the backbone's "
                    f"{len(blocks) if blocks is not None else 0} transformer blocks"
                )
            for module in [*blocks[-trainable_blocks:], getattr(backbone, "norm", nn.Identity())]:
                module.requires_grad_(True)

    def train(self, mode: bool = True) -> PretrainedClusteringNetwork:
        super().train(mode)
        if self.mode == "frozen":
            self.backbone.eval()  # a frozen backbone keeps its dropout / norm statistics fixed
        return self

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    @property
    def pretrained(self) -> bool:
        return True

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: heads at ``lr``, the trainable backbone at its scaled rates; in ``full``
        mode the backbone's weights decay by ``weight_decay`` (biases and norms do not)."""
        heads = [
            p for name, p in self.named_parameters() if not name.startswith("backbone.") and p.requires_grad
        ]
        groups: list[dict[str, Any]] = [{"name": "heads", "params": heads, "lr": lr}]
        if self.mode == "partial":
            trainable = [p for p in self.backbone.parameters() if p.requires_grad]
            groups.append({"name": "backbone", "params": trainable, "lr": lr * self.backbone_lr_scale})
        elif self.mode == "full":
            from timm.optim import param_groups_layer_decay

            for index, group in enumerate(
                param_groups_layer_decay(
                    self.backbone, weight_decay=weight_decay, layer_decay=self.layer_decay
                )
            ):
                scale = group.pop("lr_scale", 1.0)
                groups.append(
                    {**group, "name": f"backbone{index}", "lr": lr * self.backbone_lr_scale * scale}
                )
        return groups


# pretrained: its backbone brings its own preprocessing (the data takes it), model.mode=frozen caches features
@register(
    "model",
    "pretrained",
    forwards=PretrainedClusteringNetwork,
    auto=("head_style",),  # the objective's (its class's head_style, vtcc.config.recipe)
    pretrained=True,
)
def pretrained_network(
    name: str,
    num_clusters: int,
    checkpoint: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    pretrained: bool = True,
    backbones: list[Any] | None = None,
    normalize_spaces: bool | Literal["auto"] = "auto",
    **options: Any,
) -> PretrainedClusteringNetwork:
    """The ``model=pretrained`` node: ``name`` is any timm model, e.g. ``vit_small_patch16_224.dino``.

    ``options`` are :class:`PretrainedClusteringNetwork`'s (``mode``, ``trainable_blocks``, ...).
    ``pretrained=False`` builds the architecture only (a vtcc checkpoint then supplies the weights).
    ``backbones``: several backbones instead of ``name`` (timm names, vtcc runs' ``.ckpt`` files, or
    ``{name, checkpoint}`` mappings), each a representation space behind its own preprocessing
    (:mod:`vtcc.models.spaces`); ``normalize_spaces`` (the resolver decides ``auto``: with several
    spaces, unless the objective reads raw spaces) L2-normalises each space's features.
    """
    if backbones is not None and not backbones:
        raise ConfigError("model.backbones is empty: give one or more backbones, or null for model.name")
    if backbones:
        spaces = spaces_backbone(backbones, pretrained)
        if options.get("mode", "frozen") != "frozen":
            raise ConfigError(
                f"model.mode={options['mode']} with model.backbones: several backbones train frozen "
                "(model.mode=frozen); fine-tune one backbone with model.name / model.checkpoint"
            )
        normalize = len(spaces.space_dims) > 1 if normalize_spaces == "auto" else bool(normalize_spaces)
        return PretrainedClusteringNetwork(
            spaces, num_clusters, space_dims=spaces.space_dims, normalize_spaces=normalize, **options
        )
    weights = checkpoint if pretrained or is_run_checkpoint(checkpoint) else None  # a run's: its architecture
    backbone = create_pretrained_backbone(name, weights, pretrained, model_kwargs)
    return PretrainedClusteringNetwork(
        backbone, num_clusters, normalize_spaces=normalize_spaces is True, **options
    )


class FeatureInput(nn.Module):
    """The backbone of ``model=features``: the precomputed features ``(B, D)`` pass as they are."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@register(
    "model",
    "features",
    forwards=PretrainedClusteringNetwork,
    # num_features: the feature file's width (vtcc.config.resolve); head_style: the objective's
    auto=("num_features", "head_style"),
    reads_features=True,  # its inputs are feature vectors (data=features), not images
)
def features_network(
    num_features: int,
    num_clusters: int,
    space_dims: list[int] | None = None,
    normalize_spaces: bool | Literal["auto"] = "auto",
    **options: Any,
) -> PretrainedClusteringNetwork:
    """The ``model=features`` node: the clustering heads on precomputed features (``data=features``)
    of width ``num_features`` (the resolver reads it from the file), frozen by nature.
    ``space_dims``: the widths of several representation spaces the columns hold side by side
    (TURTLE's; default one space); ``normalize_spaces`` as for several backbones."""
    if not isinstance(num_features, int) or num_features < 1:
        raise ConfigError(
            f"model.num_features={num_features!r}: the features' width, read from data=features "
            "(leave it auto)"
        )
    if options.pop("mode", "frozen") != "frozen":
        raise ConfigError("model.mode: precomputed features train frozen; drop model.mode")
    spaces = [int(d) for d in space_dims] if space_dims else None
    normalize = (
        spaces is not None and len(spaces) > 1 if normalize_spaces == "auto" else bool(normalize_spaces)
    )
    return PretrainedClusteringNetwork(
        FeatureInput(num_features),
        num_clusters,
        mode="frozen",
        space_dims=spaces,
        normalize_spaces=normalize,
        **options,
    )


def member_preprocessing(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``model.backbones`` entry's own preprocessing: image size, mean, std, interpolation;
    as the resolver stored it in the entry, else from the model (timm's data config, or the
    run's preprocessing)."""
    if all(key in entry for key in PREPROCESSING):
        return {key: entry[key] for key in PREPROCESSING}
    return pretrained_data_config(entry["name"], entry["checkpoint"], entry["model_kwargs"])


def resolved_backbones(backbones: list[Any]) -> list[dict[str, Any]]:
    """``model.backbones`` as the resolver records them: every entry a mapping holding its own
    preprocessing, so a stored run prepares images as it trained (whatever timm's defaults or
    the source run's files become)."""
    return [{**entry, **member_preprocessing(entry)} for entry in backbone_entries(backbones)]


def spaces_backbone(backbones: list[Any], pretrained: bool = True) -> nn.Module:
    """``model.backbones`` as one :class:`~vtcc.models.spaces.SpacesBackbone`."""
    members = []
    for entry in backbone_entries(backbones):
        checkpoint = entry["checkpoint"]
        use_weights = (pretrained and entry["pretrained"]) or is_run_checkpoint(checkpoint)
        backbone = create_pretrained_backbone(
            entry["name"], checkpoint if use_weights else None, use_weights, entry["model_kwargs"]
        )
        members.append(SpaceMember(backbone, **member_preprocessing(entry)))
    return SpacesBackbone(members)


def spaces_data_config(backbones: list[Any]) -> dict[str, Any]:
    """The data's preprocessing under several backbones: the largest backbone's size, pixels left in
    [0, 1] (each backbone normalises them itself), three channels if any backbone takes three."""
    configs = [member_preprocessing(entry) for entry in backbone_entries(backbones)]  # stored or derived
    channels = max(len(config["mean"]) for config in configs)
    return {
        "image_size": max(int(config["image_size"]) for config in configs),
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "interpolation": configs[0].get("interpolation", "bilinear"),
    }
