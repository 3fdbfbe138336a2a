"""Planning: which parts to prune at a budget, chosen from measurements.

- **HPP** (Hierarchical Position Pruning, HierarchicalPrune, arXiv 2508.04663,
  ``planning.hpp``): importance(i) = |ΔP(i)| · w(i, |B|), with ΔP the score drop from the
  contribution analysis and w a named position weighting, by default
  ``exp-decay``: w = exp(−i/|B|), which falls with depth, so that of two parts
  with equal ΔP the later one goes first. (The paper prints
  −|ΔP|·exp((i−|B|)/|B|), whose direction contradicts its own intent; this
  implements the intent.) Whole blocks go first, lowest importance first,
  while removing the next block still leaves at least the budget; then
  subcomponents of the kept blocks, lowest importance first, until the budget
  is met.
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
from generation.planning.hpp import WEIGHTINGS, exp_decay, hpp_plan

METHODS = ("hpp", "bk-sdm", "bk-sdm-uniform", "koala")

__all__ = ["METHODS", "WEIGHTINGS", "bk_sdm_plan", "exp_decay", "hpp_plan", "koala_plan"]
