"""Planning: which parts to prune at a budget, chosen from measurements.

- **HPP** (Hierarchical Position Pruning, HierarchicalPrune, arXiv 2508.04663,
  ``planning.hpp``; the rule in ``docs/hpp-rule.md``): critical blocks (drop at least a
  quarter of the largest) and the first half of the stack are never removed whole; late
  non-critical blocks go first, lowest |ΔP|·exp((i−|B|)/|B|) first, down to the moderate
  level; then subcomponents, lowest own drop first, in the middle of the stack (from a third
  to a half of the depth), attention excluded. From the authors' published scores it
  reproduces both released SD3.5-Large-Turbo cuts.
- **BK-SDM**-style baseline (``planning.baselines``): whole blocks from the middle of the
  stack outwards (``bk-sdm``), or evenly spaced over the stack (``bk-sdm-uniform``).
- **KOALA**-style baseline (``planning.baselines``): whole blocks whose output is most
  similar to their input (cosine similarity of the image tokens, measured during the
  contribution analysis), no position prior.

Every method returns a ``generation.transforms.plan.PrunePlan`` built with its
``PlanBuilder``; the budget and the explicit ``--remove`` plan are defined there.
"""

from __future__ import annotations

from generation.planning.baselines import bk_sdm_plan, koala_plan
from generation.planning.hpp import LEVELS, PRESETS, WEIGHTINGS, HPPRule, hpp_plan, parse_budget

METHODS = ("hpp", "bk-sdm", "bk-sdm-uniform", "koala")

__all__ = [
    "LEVELS",
    "METHODS",
    "PRESETS",
    "WEIGHTINGS",
    "HPPRule",
    "bk_sdm_plan",
    "hpp_plan",
    "koala_plan",
    "parse_budget",
]
