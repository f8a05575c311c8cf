"""Where checkpoints written before ``vtcc/objectives/`` name their objective (``vtcc.module.X``):
the same classes, so such a checkpoint still rebuilds. New code imports ``vtcc.objectives``."""

from vtcc.objectives import (  # noqa: F401
    ClusteringModule,
    ContrastiveClustering,
    ScanClustering,
    SelfLabelClustering,
    TemiClustering,
    auto_teacher_momentum,
    objective_class,
    per_head,
    validation_metrics,
)
from vtcc.objectives.temi import TEMI_RECIPE_MOMENTUM, TEMI_RECIPE_STEPS, pair_information_score  # noqa: F401
