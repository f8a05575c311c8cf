from vtcc.knn import nearest_neighbors  # mined for SCAN's loss; the search itself is vtcc.knn's
from vtcc.losses.cluster import ClusterLoss, negative_entropy
from vtcc.losses.instance import InstanceLoss
from vtcc.losses.nt_xent import nt_xent
from vtcc.losses.scan import ScanLoss
from vtcc.losses.selflabel import ConfidenceCrossEntropy
from vtcc.losses.temi import TemiLoss
from vtcc.losses.turtle import InnerClassifiers, marginal_entropy, soft_cross_entropy, turtle_loss

__all__ = [
    "ClusterLoss",
    "ConfidenceCrossEntropy",
    "InnerClassifiers",
    "InstanceLoss",
    "ScanLoss",
    "TemiLoss",
    "marginal_entropy",
    "negative_entropy",
    "nearest_neighbors",
    "nt_xent",
    "soft_cross_entropy",
    "turtle_loss",
]
