"""Pruning: plans (HPP and the BK-SDM / KOALA baselines) and the surgery that applies them."""

from generation.pruning.plan import (
    METHODS,
    WEIGHTINGS,
    PrunePlan,
    bk_sdm_plan,
    explicit_plan,
    hpp_plan,
    koala_plan,
    parse_removal,
)
from generation.pruning.surgery import apply_plan, prune_model, save_transformer

__all__ = [
    "METHODS",
    "WEIGHTINGS",
    "PrunePlan",
    "apply_plan",
    "bk_sdm_plan",
    "explicit_plan",
    "hpp_plan",
    "koala_plan",
    "parse_removal",
    "prune_model",
    "save_transformer",
]
