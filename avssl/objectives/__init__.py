"""Objectives: one file per family, each registered by name for recipes to list.

Importing this package registers every built-in objective.
"""

from avssl.objectives import contrastive, health, masked
from avssl.objectives.registry import (
    OBJECTIVES,
    Objective,
    ObjectiveOutput,
    build_objective,
    check_objective_config,
    objective_weight,
    register_objective,
)

__all__ = [
    "OBJECTIVES", "Objective", "ObjectiveOutput", "build_objective", "check_objective_config", "objective_weight",
    "register_objective",
    "contrastive", "health", "masked",
]
