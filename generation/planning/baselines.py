"""The baselines the paper compares HPP with, at the same budget: BK-SDM and KOALA."""

from __future__ import annotations

from generation.adapters import ModelAdapter
from generation.measurement.contrib import Contribution
from generation.transforms.plan import PlanBuilder, PrunePlan, check_budget
from hprune.errors import UserError


def bk_sdm_plan(
    adapter: ModelAdapter, budget: float, *, original_parameters: int, layout: str = "middle"
) -> PrunePlan:
    """BK-SDM-style: whole blocks from the middle outwards, or evenly spaced, until the budget."""
    budget = check_budget(budget)
    removable = adapter.removable_blocks()
    n = adapter.num_blocks
    if layout == "middle":
        centre = (n - 1) / 2
        planner = PlanBuilder(adapter, "bk-sdm", budget, original_parameters)
        planner.remove_blocks_until_met(sorted(removable, key=lambda i: (abs(i - centre), -i)))
        return planner.finish()
    if layout != "uniform":
        raise ValueError(f"unknown layout {layout!r}")
    planner = PlanBuilder(adapter, "bk-sdm-uniform", budget, original_parameters)
    for k in range(1, len(removable) + 1):
        planner = PlanBuilder(adapter, "bk-sdm-uniform", budget, original_parameters)
        step = len(removable) / k
        for index in sorted({removable[int((j + 0.5) * step)] for j in range(k)}):
            if planner.can_remove_block(index):
                planner.remove_block(index)
        if planner.met():
            break
    return planner.finish()


def koala_plan(
    adapter: ModelAdapter, contrib: Contribution, budget: float, *, original_parameters: int
) -> PrunePlan:
    """KOALA-style: remove the blocks whose output is most similar to their input, no position prior."""
    budget = check_budget(budget)
    contrib.check_fits(adapter)
    similarity = contrib.block_similarity
    if not similarity or any(s is None for s in similarity):
        raise UserError(
            "the contribution file has no block similarities (needed by --method koala)"
        )
    planner = PlanBuilder(adapter, "koala", budget, original_parameters)
    order = sorted(range(adapter.num_blocks), key=lambda i: (-similarity[i], -i))
    planner.remove_blocks_until_met(order, similarity=dict(enumerate(similarity)))
    return planner.finish()
