"""HPP (Hierarchical Position Pruning): position-weighted contribution drops, whole blocks first.

See ``generation.planning`` for the rule; the position weightings are named here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from generation.adapters import BLOCK, ModelAdapter, Part
from generation.measurement.contrib import Contribution
from generation.transforms.plan import PlanBuilder, PrunePlan, check_budget
from hprune.errors import UserError

# ----- position weightings --------------------------------------------------------------


def exp_decay(index: int, num_blocks: int) -> float:
    """w(i) = exp(−i/|B|): 1 for the first block, 1/e after the last; later blocks matter less."""
    return math.exp(-index / num_blocks)


def no_prior(index: int, num_blocks: int) -> float:
    """w(i) = 1: importance is the measured drop alone."""
    return 1.0


WEIGHTINGS: dict[str, Callable[[int, int], float]] = {"exp-decay": exp_decay, "none": no_prior}


def get_weighting(name: str) -> Callable[[int, int], float]:
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise UserError(
            f"unknown position weighting {name!r} (choose {', '.join(WEIGHTINGS)})"
        ) from None


def hpp_plan(
    adapter: ModelAdapter,
    contrib: Contribution,
    budget: float,
    *,
    original_parameters: int,
    weighting: str = "exp-decay",
) -> PrunePlan:
    """HierarchicalPrune's HPP: position-weighted importance, whole blocks first, then subcomponents."""
    budget = check_budget(budget)
    contrib.check_fits(adapter)
    weight = get_weighting(weighting)
    n = adapter.num_blocks

    def importance(part: Part) -> float:
        return abs(contrib.drops[part]) * weight(part[0], n)

    def order(parts: Sequence[Part]) -> list[Part]:
        # lowest importance first; between equals, the later block first
        return sorted(parts, key=lambda p: (importance(p), -p[0]))

    planner = PlanBuilder(adapter, "hpp", budget, original_parameters)
    planner.plan.details.update(weighting=weighting, num_blocks=n)
    blocks = order([p for p in contrib.drops if p[1] == BLOCK])
    for part in blocks:
        index = part[0]
        if not planner.can_remove_block(index):
            continue
        if planner.current - adapter.block_params(index) < planner.target:
            break  # the next block would overshoot: the rest is done with subcomponents
        planner.remove_block(index, drop=contrib.drops[part], importance=importance(part))
        if planner.met():
            break
    components = order(
        [
            p
            for p in contrib.drops
            if p[1] != BLOCK and p[0] not in planner.blocks and p[1] in adapter.components(p[0])
        ]
    )
    for part in components:
        if planner.met():
            break
        if adapter.component_params(*part) > 0:
            planner.remove_component(part, drop=contrib.drops[part], importance=importance(part))
    # Without enough subcomponents in the contribution file, finish with whole blocks.
    for part in blocks:
        if planner.met():
            break
        if planner.can_remove_block(part[0]):
            planner.remove_block(part[0], drop=contrib.drops[part], importance=importance(part))
    return planner.finish()
