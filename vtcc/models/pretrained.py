"""A large self-supervised pretrained backbone (e.g. DINO) under the clustering heads (Zhou & Zhang 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vtcc.errors import ConfigError
from vtcc.models.network import ClusteringNetwork

MODES = ("frozen", "partial", "full")


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

    if checkpoint and str(checkpoint).endswith(".ckpt"):
        return vtcc_run_backbone(checkpoint)
    kwargs: dict[str, Any] = {"num_classes": 0, **(model_kwargs or {})}
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"model.checkpoint={path} does not exist: give a .pth or .safetensors file")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    else:
        kwargs["pretrained"] = pretrained
    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(
            f"timm has no model {name!r}: e.g. vit_small_patch16_224.dino (see timm.list_models())"
        )
    try:
        return timm.create_model(name, **kwargs)
    except (OSError, RuntimeError, ValueError) as error:
        hint = (
            "check that the file holds this model's weights"
            if checkpoint
            else ("offline? download the weights once and pass model.checkpoint=<file>")
        )
        raise ConfigError(f"could not load weights for {name!r} ({error}): {hint}") from error


def vtcc_run_backbone(checkpoint: str | Path) -> nn.Module:
    """The backbone of a vtcc training run (``.ckpt``), e.g. an end-to-end VTCC model reused frozen."""
    from vtcc.utils.checkpoint import restore_run

    _, module = restore_run(checkpoint)
    return module.network.backbone


def pretrained_data_config(
    name: str, checkpoint: str | None = None, model_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model's own preprocessing (timm's data config): image size, mean, std, interpolation.

    For a vtcc run's ``.ckpt``, the preprocessing that run used.
    """
    import timm
    from timm.data import resolve_model_data_config

    if checkpoint and str(checkpoint).endswith(".ckpt"):
        from vtcc.utils.checkpoint import CONFIG_KEY, load_checkpoint

        data = load_checkpoint(checkpoint)[CONFIG_KEY]["data"]
        keys = ("image_size", "mean", "std", "interpolation")
        return {key: data.get(key, "bilinear") for key in keys}

    model = timm.create_model(name, pretrained=False, num_classes=0, **(model_kwargs or {}))
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
        mode: str = "frozen",
        trainable_blocks: int = 2,
        backbone_lr_scale: float = 0.1,
        layer_decay: float = 0.75,
        instance_dim: int = 128,
        hidden_dim: int | None = None,
        head_style: str = "vtcc",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"model.mode={mode!r} is unknown: use one of {', '.join(MODES)}")
        super().__init__(backbone, num_clusters, instance_dim, hidden_dim, head_style)
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

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: heads at ``lr``, the trainable backbone at its scaled rates; in ``full``
        mode the backbone's weights decay by ``weight_decay`` (biases and norms do not)."""
        heads = [
            p for name, p in self.named_parameters() if not name.startswith("backbone.") and p.requires_grad
        ]
        groups: list[dict[str, Any]] = [{"params": heads, "lr": lr}]
        if self.mode == "partial":
            trainable = [p for p in self.backbone.parameters() if p.requires_grad]
            groups.append({"params": trainable, "lr": lr * self.backbone_lr_scale})
        elif self.mode == "full":
            from timm.optim import param_groups_layer_decay

            for group in param_groups_layer_decay(
                self.backbone, weight_decay=weight_decay, layer_decay=self.layer_decay
            ):
                scale = group.pop("lr_scale", 1.0)
                groups.append({**group, "lr": lr * self.backbone_lr_scale * scale})
        return groups


def pretrained_network(
    name: str,
    num_clusters: int,
    checkpoint: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    pretrained: bool = True,
    **options: Any,
) -> PretrainedClusteringNetwork:
    """The ``model=pretrained`` node: ``name`` is any timm model, e.g. ``vit_small_patch16_224.dino``.

    ``options`` are :class:`PretrainedClusteringNetwork`'s (``mode``, ``trainable_blocks``, ...).
    ``pretrained=False`` builds the architecture only (a vtcc checkpoint then supplies the weights).
    """
    run_backbone = bool(checkpoint) and str(checkpoint).endswith(".ckpt")  # its architecture is that run's
    weights = checkpoint if pretrained or run_backbone else None
    backbone = create_pretrained_backbone(name, weights, pretrained, model_kwargs)
    return PretrainedClusteringNetwork(backbone, num_clusters, **options)
