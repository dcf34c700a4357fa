"""Objectives: one file per family, each registered by name for recipes to list.

Importing this package registers every built-in objective.
"""

from avssl.objectives import contrastive, masked
from avssl.objectives.registry import (
    OBJECTIVES,
    Objective,
    build_objective,
    check_objective_config,
    register_objective,
)

__all__ = ["OBJECTIVES", "Objective", "build_objective", "check_objective_config", "register_objective", "contrastive", "masked"]
