"""Backbone, cluster heads and, for the objectives that train one, an instance projector."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vtcc.errors import ConfigError
from vtcc.models.heads import ClusterProjector, HeadStyle, InstanceProjector, TaskEncoder
from vtcc.models.spaces import normalize_each_space
from vtcc.models.vit import vit_conv_stem
from vtcc.registry import register


class ClusteringNetwork(nn.Module):
    """Shared backbone feeding ``num_cluster_heads`` cluster projectors and, when ``instance_dim``
    is set, an instance projector.

    The instance projector belongs to the objectives that train it (those whose class sets
    ``trains_instance_projector``: Contrastive Clustering's); for the others the resolver sets
    ``model.instance_dim: null`` and the network has none, so no untrained projector is stored,
    restored or used for embeddings. ``backbone`` maps ``(B, C, H, W)`` to ``(B, D)`` and exposes
    ``num_features = D``.
    ``hidden_dim`` defaults to ``4 D`` for VTCC heads and ``D`` for Contrastive Clustering's.
    Several cluster heads train side by side (SCAN, TEMI); ``best_head`` (a buffer, so checkpoints
    keep it) is the one with the lowest training loss, and the one evaluation and prediction use.

    ``space_dims``: the representation spaces the backbone's features hold side by side (several
    backbones, :class:`vtcc.models.spaces.SpacesBackbone`); default one space of width ``D``.
    ``normalize_spaces``: :meth:`features` L2-normalises each space's part (so that no backbone
    outweighs another by its scale); TURTLE's task encoder (``head_style="turtle"``, one layer per
    space) reads the raw features instead.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_clusters: int,
        instance_dim: int | None = 128,
        hidden_dim: int | None = None,
        head_style: HeadStyle = "vtcc",
        num_cluster_heads: int = 1,
        space_dims: list[int] | None = None,
        normalize_spaces: bool = False,
    ) -> None:
        super().__init__()
        feature_dim = int(backbone.num_features)
        self.space_dims = [feature_dim] if space_dims is None else [int(d) for d in space_dims]
        if sum(self.space_dims) != feature_dim or min(self.space_dims) < 1:
            raise ConfigError(
                f"the representation spaces {self.space_dims} do not add up to the backbone's "
                f"{feature_dim} features: give each backbone's own width"
            )
        self.normalize_spaces = bool(normalize_spaces)
        hidden = hidden_dim or (4 * feature_dim if head_style == "vtcc" else feature_dim)
        self.backbone = backbone
        self.instance_projector = (
            None if instance_dim is None else InstanceProjector(feature_dim, hidden, instance_dim, head_style)
        )
        self._cluster_head_shape = (feature_dim, hidden, head_style)
        self.register_buffer("best_head", torch.zeros((), dtype=torch.long))
        self.cluster_heads = self._new_heads(num_clusters, num_cluster_heads)
        self.register_load_state_dict_pre_hook(_single_head_keys)
        self.register_load_state_dict_pre_hook(_instance_projector_keys)
        self._reads_features = False  # True: inputs are this backbone's cached features

    @property
    def frozen(self) -> bool:
        """Whether the backbone is fixed (its features can then be cached); trained from scratch: no."""
        return False

    @property
    def pretrained(self) -> bool:
        """Whether the backbone's features mean something before training (neighbours can be mined)."""
        return False

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimiser groups (named where there are several). Here one, unnamed (the learning-rate
        monitor keeps logging ``lr-<Optimiser>``): every trainable parameter at the optimiser's
        settings."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def read_cached_features(self) -> None:
        """From now on inputs are ``(B, D)`` features of this backbone (a frozen backbone's cache):
        the backbone is skipped, as if it were the identity."""
        if not self.frozen:
            raise ConfigError("cached features need a frozen backbone: model.mode=frozen")
        self._reads_features = True

    def _new_heads(self, num_clusters: int, num_cluster_heads: int) -> nn.ModuleList:
        if num_cluster_heads < 1:
            raise ConfigError(f"module.num_cluster_heads={num_cluster_heads}: train at least 1 cluster head")
        feature_dim, hidden, style = self._cluster_head_shape
        if style == "turtle":
            return nn.ModuleList(TaskEncoder(self.space_dims, num_clusters) for _ in range(num_cluster_heads))
        return nn.ModuleList(
            ClusterProjector(feature_dim, hidden, num_clusters, style) for _ in range(num_cluster_heads)
        )

    def reset_cluster_heads(self, num_clusters: int, num_cluster_heads: int | None = None) -> None:
        """Fresh cluster projectors: for ``num_clusters`` (num_clusters=auto, once K is chosen) or
        for ``num_cluster_heads`` heads; the best head is the first until training losses say otherwise."""
        device = self.best_head.device
        heads = self.num_cluster_heads if num_cluster_heads is None else num_cluster_heads
        self.cluster_heads = self._new_heads(num_clusters, heads).to(device)
        self.best_head.zero_()

    def per_cluster_keys(self) -> set[str]:
        """The entries of a cluster head's state that hold one row per cluster (their shape follows K)."""
        other = self._new_heads(self.num_clusters + 1, 1)[0].state_dict()
        return {k for k, v in self.cluster_heads[0].state_dict().items() if other[k].shape != v.shape}

    @property
    def num_cluster_heads(self) -> int:
        return len(self.cluster_heads)

    @property
    def cluster_projector(self) -> ClusterProjector:
        """The head that clusters: the best one (lowest training loss) when there are several."""
        return self.cluster_heads[int(self.best_head)]

    @property
    def num_clusters(self) -> int:
        return self.cluster_heads[0].num_clusters

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` through the backbone; after :meth:`read_cached_features`, the
        ``(B, D)`` inputs are the backbone's features already. With ``normalize_spaces``, each
        space's part L2-normalised."""
        features = inputs if self._reads_features else self.backbone(inputs)
        if features.shape[-1] != sum(self.space_dims):
            raise ConfigError(
                f"the features have {features.shape[-1]} columns, the network's spaces "
                f"{self.space_dims} {sum(self.space_dims)}: the feature cache is another backbone's "
                "(set features.cache_dir to a fresh folder)"
            )
        return normalize_each_space(features, self.space_dims) if self.normalize_spaces else features

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return instance vectors ``(B, instance_dim)`` and every head's cluster probabilities ``(B, K)``.

        Call it once per view: BatchNorm layers then normalise each view with its own batch
        statistics, as the official VTCC and Contrastive Clustering networks do.
        """
        if self.instance_projector is None:
            raise ConfigError("this network has no instance projector: model.instance_dim is null")
        features = self.features(inputs)
        return self.instance_projector(features), [head(features) for head in self.cluster_heads]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The embedding of backbone ``features`` the run's clustering lives in: the instance
        vectors where an instance projector was trained, else the L2-normalised features."""
        if self.instance_projector is None:
            return F.normalize(features.float(), dim=1)
        return self.instance_projector(features)

    @torch.no_grad()
    def embed_and_assign(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (:meth:`embed`) and the best head's probabilities, for evaluation and prediction."""
        features = self.features(inputs)
        return self.embed(features), self.cluster_projector(features)

    @torch.no_grad()
    def cluster_probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """Soft assignments ``(B, K)`` without the instance branch, for evaluation."""
        return self.cluster_projector(self.features(inputs))


@register(
    "model",
    "vtcc",
    target="vtcc.models.vtcc_network",
    forwards=vit_conv_stem,  # **backbone: the conv-stem ViT's settings
    auto=("patch_size",),  # from the image size (vtcc.config.data_defaults)
    extra_keys={"size": Literal["auto"]},  # model=auto's marker (vtcc.config.data_defaults)
)
def vtcc_network(
    num_clusters: int,
    instance_dim: int | None = 128,
    hidden_dim: int | None = None,
    head_style: HeadStyle = "vtcc",
    **backbone: Any,
) -> ClusteringNetwork:
    """VTCC: a conv-stem ViT trained from scratch under both projectors.

    One flat Hydra node: ``backbone`` holds :func:`vtcc.models.vit.vit_conv_stem`'s arguments
    (``img_size``, ``patch_size``, ``in_chans``, ``embed_dim``, ``depth``, ``num_heads``, ...).
    """
    return ClusteringNetwork(vit_conv_stem(**backbone), num_clusters, instance_dim, hidden_dim, head_style)


@register("model", "timm", target="vtcc.models.timm_network")
def timm_network(
    name: str,
    num_clusters: int,
    in_chans: int = 3,
    pretrained: bool = False,
    instance_dim: int | None = 128,
    hidden_dim: int | None = None,
    head_style: HeadStyle = "vtcc",
    model_kwargs: dict[str, Any] | None = None,
) -> ClusteringNetwork:
    """Any timm model as the backbone (e.g. ``resnet34`` for Contrastive Clustering's runs).

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``{zero_init_last: false}`` for CC's ResNet).
    """
    import timm

    try:
        backbone = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **timm_arguments(model_kwargs)
        )
    except RuntimeError as error:
        raise ConfigError(f"timm has no model {name!r}: pick one from timm.list_models()") from error
    return ClusteringNetwork(backbone, num_clusters, instance_dim, hidden_dim, head_style)


# timm.create_model arguments that fetch or read weights from elsewhere: vtcc's own settings
# (model.pretrained, model.checkpoint) decide where weights come from, never model_kwargs.
WEIGHT_SOURCES = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def timm_arguments(model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``model.model_kwargs`` for ``timm.create_model``, without the arguments that fetch weights."""
    given = dict(model_kwargs or {})
    refused = sorted(set(given) & set(WEIGHT_SOURCES))
    if refused:
        raise ConfigError(
            f"model.model_kwargs.{refused[0]} would make timm fetch or read weights itself: use "
            "model.pretrained or model.checkpoint=<file> instead"
        )
    return given


def upgrade_single_head_keys(state_dict: dict[str, Any], prefix: str = "") -> None:
    """Checkpoints from before several heads (``cluster_projector.*``) load as head 0 (in place)."""
    old = f"{prefix}cluster_projector."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}cluster_heads.0.{key[len(old) :]}"] = state_dict.pop(key)
    state_dict.setdefault(f"{prefix}best_head", torch.zeros((), dtype=torch.long))


def _single_head_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    upgrade_single_head_keys(state_dict, prefix)


def _instance_projector_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A network without an instance projector (its objective trains none) drops the one an
    earlier checkpoint or an ``init_from`` run stored, unused (in place)."""
    if module.instance_projector is None:
        for key in [k for k in state_dict if k.startswith(f"{prefix}instance_projector.")]:
            del state_dict[key]
