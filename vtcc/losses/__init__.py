from vtcc.losses.cluster import ClusterLoss, negative_entropy
from vtcc.losses.instance import InstanceLoss
from vtcc.losses.nt_xent import nt_xent

__all__ = ["ClusterLoss", "InstanceLoss", "negative_entropy", "nt_xent"]
