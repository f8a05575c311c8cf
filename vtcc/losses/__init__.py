from vtcc.losses.cluster import ClusterLoss, negative_entropy
from vtcc.losses.instance import InstanceLoss
from vtcc.losses.nt_xent import nt_xent
from vtcc.losses.scan import ScanLoss, nearest_neighbors

__all__ = ["ClusterLoss", "InstanceLoss", "ScanLoss", "negative_entropy", "nearest_neighbors", "nt_xent"]
