"""HPP (Hierarchical Position Pruning): the hierarchy that reproduces the released cuts.

The rule and why each parameter has its value: ``docs/hpp-rule.md``. In short, with |B|
blocks, ΔP(i) the score drop when block i is removed and ΔP* the largest of them:

1. **Critical blocks** have ΔP(i) ≥ τ·ΔP* (``critical_fraction`` τ = 0.25). They are never
   removed whole and lose no subcomponent.
2. **Position.** Blocks i < p·|B| (``head_fraction`` p = 0.5) lay out the image and are never
   removed whole; blocks after the last critical block turn the features into the output
   and are kept too. The whole-block candidates are the non-critical blocks in between.
3. **Whole blocks first**, lowest ``|ΔP(i)|·W_pos(i)`` first, W_pos(i) = exp((i − |B|)/|B|)
   (the paper's weight, ``weighting="paper"``), until the parameters kept are at or below
   max(budget, ``block_floor``) (0.8: the paper's moderate level is whole blocks only).
4. **Then subcomponents**, lowest own drop first, in the subcomponent region (default: the
   non-critical blocks with q·|B| ≤ i < p·|B|, q = ``layout_fraction`` = 1/3; for 38 blocks
   that is 13–18) leaving out ``exclude`` (default ``attn``), until the budget is met.
5. **Fallback**, only when that cannot reach the budget (small models): the remaining
   whole-block candidates, then subcomponents of every other non-critical block from
   q·|B| on; each such removal is marked ``stage: fallback-...`` in the plan.

A block that loses every subcomponent is removed whole, as the reference does.

The budget is a kept fraction or one of the paper's levels (:data:`LEVELS`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from generation.adapters import BLOCK, ModelAdapter, Part
from generation.measurement.contrib import Contribution
from generation.transforms.plan import PlanBuilder, PrunePlan, check_budget
from hprune.errors import UserError

# ----- position weightings --------------------------------------------------------------


def paper_weight(index: int, num_blocks: int) -> float:
    """W_pos(i) = exp((i − |B|)/|B|), as the paper prints it: 1/e for the first block, 1 after
    the last. Among the late candidates it keeps later blocks slightly longer."""
    return math.exp((index - num_blocks) / num_blocks)


def exp_decay(index: int, num_blocks: int) -> float:
    """w(i) = exp(−i/|B|): 1 for the first block, 1/e after the last; later blocks go first."""
    return math.exp(-index / num_blocks)


def no_prior(index: int, num_blocks: int) -> float:
    """w(i) = 1: importance is the measured drop alone."""
    return 1.0


WEIGHTINGS: dict[str, Callable[[int, int], float]] = {
    "paper": paper_weight,
    "exp-decay": exp_decay,
    "none": no_prior,
}


def get_weighting(name: str) -> Callable[[int, int], float]:
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise UserError(
            f"unknown position weighting {name!r} (choose {', '.join(WEIGHTINGS)})"
        ) from None


# ----- the rule ---------------------------------------------------------------------------

#: The paper's compression levels as budgets (fractions of the parameters kept): moderate
#: removes at least 20%; aggressive stops once fewer than 71% remain (the reference's
#: ``target_memory_budget`` 0.71 for its 30% configuration).
LEVELS = {"moderate": 0.80, "aggressive": 0.71}


@dataclasses.dataclass(frozen=True)
class HPPRule:
    """The named parameters of HPP's hierarchy (see the module docstring)."""

    critical_fraction: float = 0.25
    head_fraction: float = 0.5
    layout_fraction: float = 1 / 3
    block_floor: float = 0.8
    weighting: str = "paper"
    sub_blocks: tuple[int, int] | None = None  # inclusive; None: derived from the fractions
    exclude: tuple[str, ...] = ("attn",)

    def __post_init__(self) -> None:
        if self.critical_fraction < 0:  # above 1 no block is critical
            raise UserError(f"HPP critical fraction must be >= 0, got {self.critical_fraction}")
        for name in ("head_fraction", "layout_fraction", "block_floor"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"HPP {name.replace('_', ' ')} must be in [0, 1], got {value}")
        if self.layout_fraction > self.head_fraction:
            raise UserError("the HPP layout fraction cannot exceed the head fraction")
        if self.sub_blocks is not None and self.sub_blocks[0] > self.sub_blocks[1]:
            raise UserError(f"subcomponent block range {self.sub_blocks} runs backwards")
        get_weighting(self.weighting)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named settings. The paper's SD3.5-Large-Turbo recipe (the reference's ``cut_hybrid``:
#: subcomponents only in blocks 13-18, attention excluded) written out; on that model the
#: default rule derives the same region and exclusion.
PRESETS: dict[str, HPPRule] = {
    "default": HPPRule(),
    "sd35-large-turbo-paper": HPPRule(sub_blocks=(13, 18), exclude=("attn",)),
}


def parse_budget(text: str | float) -> float:
    """A kept fraction (``0.8``) or a paper level (``moderate``, ``aggressive``)."""
    if isinstance(text, str) and text.strip().lower() in LEVELS:
        return LEVELS[text.strip().lower()]
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(
            f"budget {text!r} is neither a fraction of the parameters to keep nor a level "
            f"({', '.join(LEVELS)})"
        ) from None
    return check_budget(value)


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """What the rule derives from one contribution file for one model."""

    critical: tuple[int, ...]
    block_candidates: tuple[int, ...]  # in removal order
    sub_region: tuple[int, ...]
    fallback_region: tuple[int, ...]


def hierarchy(adapter: ModelAdapter, contrib: Contribution, rule: HPPRule) -> Hierarchy:
    """Critical blocks, whole-block candidates (ordered), and the subcomponent regions."""
    n = adapter.num_blocks
    drops = contrib.block_drops()
    missing = [i for i in range(n) if i not in drops]
    if missing:
        raise UserError(f"the contribution file has no whole-block score for block(s) {missing}")
    largest = max(drops.values())
    critical = {
        i for i, d in drops.items() if largest > 0 and d >= rule.critical_fraction * largest
    }
    late_critical = [i for i in critical if i >= rule.head_fraction * n]
    end = max(late_critical) if late_critical else n
    weight = get_weighting(rule.weighting)
    candidates = sorted(
        (
            i
            for i in adapter.removable_blocks()
            if i not in critical and rule.head_fraction * n <= i < end
        ),
        key=lambda i: (abs(drops[i]) * weight(i, n), -i),
    )
    if rule.sub_blocks is not None:
        first, last = rule.sub_blocks
        region = [i for i in range(first, last + 1) if 0 <= i < n]
    else:
        region = [i for i in range(n) if rule.layout_fraction * n <= i < rule.head_fraction * n]
    region = [i for i in region if i not in critical]
    fallback = [
        i
        for i in range(n)
        if i >= rule.layout_fraction * n and i not in critical and i not in region
    ]
    return Hierarchy(tuple(sorted(critical)), tuple(candidates), tuple(region), tuple(fallback))


def hpp_plan(
    adapter: ModelAdapter,
    contrib: Contribution,
    budget: float,
    *,
    original_parameters: int,
    rule: HPPRule | None = None,
) -> PrunePlan:
    """HierarchicalPrune's HPP at ``budget`` (fraction of the original parameters kept)."""
    budget = check_budget(budget)
    rule = rule or HPPRule()
    contrib.check_fits(adapter)
    contrib.check_ablation(adapter)
    found = hierarchy(adapter, contrib, rule)
    planner = PlanBuilder(adapter, "hpp", budget, original_parameters)
    planner.plan.details.update(
        rule=rule.to_json(),
        critical_blocks=list(found.critical),
        block_candidates=list(found.block_candidates),
        subcomponent_region=list(found.sub_region),
        num_blocks=adapter.num_blocks,
    )
    n = adapter.num_blocks
    weight = get_weighting(rule.weighting)

    def block_info(index: int, stage: str) -> dict:
        drop = contrib.drops[(index, BLOCK)]
        return {"drop": drop, "importance": abs(drop) * weight(index, n), "stage": stage}

    def remove_blocks(order: Sequence[int], target: float, stage: str) -> None:
        for index in order:
            if planner.current <= target * original_parameters:
                return
            if index not in planner.blocks and planner.can_remove_block(index):
                planner.remove_block(index, **block_info(index, stage))

    def remove_components(region: Iterable[int], stage: str) -> None:
        for part in _component_order(adapter, contrib, region, planner.blocks, rule.exclude):
            if planner.met():
                return
            if part[0] in planner.blocks or part in planner.parts:
                continue
            if adapter.component_params(*part) > 0:
                planner.remove_component(part, drop=contrib.drops[part], stage=stage)
            index = part[0]
            lost = {c for i, c in planner.parts if i == index}
            if lost >= set(adapter.components(index)) and planner.can_remove_block(index):
                # nothing of it is left: removed whole, as the reference does
                planner.remove_block(index, **block_info(index, f"{stage}-whole"))

    remove_blocks(found.block_candidates, max(budget, rule.block_floor), "blocks")
    remove_components(found.sub_region, "subcomponents")
    remove_blocks(found.block_candidates, budget, "fallback-blocks")
    remove_components(found.fallback_region, "fallback-subcomponents")
    if not planner.met():
        raise UserError(
            f"HPP cannot reach the budget {budget:g}: the parts its rule allows leave "
            f"{planner.plan.kept_fraction:.1%} of the original parameters (critical blocks "
            f"{list(found.critical)} and the first {rule.layout_fraction:.0%} of the blocks are "
            "protected; lower --critical-fraction or --layout-fraction, or prune less)"
        )
    return planner.finish()


def _component_order(
    adapter: ModelAdapter,
    contrib: Contribution,
    region: Iterable[int],
    removed_blocks: set[int],
    exclude: Sequence[str],
) -> list[Part]:
    """The region's subcomponents with a measured drop, lowest drop first (the reference ranks
    them by their own score), later block first between equals."""
    parts = [
        (i, c)
        for i in region
        if i not in removed_blocks
        for c in adapter.components(i)
        if c not in exclude and (i, c) in contrib.drops
    ]
    return sorted(parts, key=lambda p: (contrib.drops[p], -p[0]))
