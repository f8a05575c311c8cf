from vtcc.models.conv_stem import ConvStem
from vtcc.models.heads import ClusterProjector, InstanceProjector
from vtcc.models.network import ClusteringNetwork, timm_network, vtcc_network
from vtcc.models.vit import vit_conv_stem

__all__ = [
    "ClusterProjector",
    "ClusteringNetwork",
    "ConvStem",
    "InstanceProjector",
    "timm_network",
    "vit_conv_stem",
    "vtcc_network",
]
