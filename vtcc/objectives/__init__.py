"""The objectives: one LightningModule per method over a shared base (``base.py``)."""

from vtcc.objectives.base import (
    AutoRates,
    ClusteringModule,
    feature_recipe,
    objective_class,
    per_head,
    validation_metrics,
)
from vtcc.objectives.contrastive import ContrastiveClustering
from vtcc.objectives.curated import CuratedClustering
from vtcc.objectives.scan import ScanClustering
from vtcc.objectives.selflabel import SelfLabelClustering
from vtcc.objectives.temi import TemiClustering, auto_teacher_momentum
from vtcc.objectives.turtle import TurtleClustering

__all__ = [
    "AutoRates",
    "ClusteringModule",
    "ContrastiveClustering",
    "CuratedClustering",
    "ScanClustering",
    "SelfLabelClustering",
    "TemiClustering",
    "TurtleClustering",
    "auto_teacher_momentum",
    "feature_recipe",
    "objective_class",
    "per_head",
    "validation_metrics",
]
