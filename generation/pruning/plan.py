"""Pruning plans: which blocks and subcomponents to remove, by HPP or a baseline, at a budget.

The budget ``F`` (0 < F < 1) is the fraction of the *original* transformer's
parameters to keep: ``--budget 0.8`` is the paper's "20% pruning" level. The
original is the model before any hprune pruning (its parameter count is in
the model record); a plan removes parts until the parameters left are at most
``F`` times that count.

- **HPP** (Hierarchical Position Pruning, HierarchicalPrune, arXiv 2508.04663):
  importance(i) = |ΔP(i)| · w(i, |B|), with ΔP the score drop from the
  contribution analysis and w a named position weighting, by default
  ``exp-decay``: w = exp(−i/|B|), which falls with depth, so that of two parts
  with equal ΔP the later one goes first. (The paper prints
  −|ΔP|·exp((i−|B|)/|B|), whose direction contradicts its own intent; this
  implements the intent.) Whole blocks go first, lowest importance first,
  while removing the next block still leaves at least the budget; then
  subcomponents of the kept blocks, lowest importance first, until the budget
  is met.
- **BK-SDM**-style baseline: whole blocks from the middle of the stack
  outwards (``bk-sdm``), or evenly spaced over the stack (``bk-sdm-uniform``).
- **KOALA**-style baseline: whole blocks whose output is most similar to
  their input (cosine similarity of the image tokens, measured during the
  contribution analysis), no position prior.
- **Explicit**: ``--remove 25-28,31-34`` (inclusive ranges of block indices
  of the input model; ``13:ff`` names a subcomponent).

Block-only plans stop at the first removal that reaches the budget, so they
may keep slightly fewer parameters than the budget; the plan reports the
fraction it reaches.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from generation.adapters import BLOCK, ModelAdapter, Part
from generation.contrib import Contribution
from hprune.errors import UserError

METHODS = ("hpp", "bk-sdm", "bk-sdm-uniform", "koala")


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


# ----- the plan -------------------------------------------------------------------------


@dataclasses.dataclass
class PrunePlan:
    """Parts to remove, in the order chosen, with the parameter arithmetic."""

    method: str
    budget: float | None
    original_parameters: int
    parameters_before: int
    removed_blocks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed_subcomponents: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def removed_parameters(self) -> int:
        return sum(e["parameters"] for e in self.removed_blocks + self.removed_subcomponents)

    @property
    def parameters_after(self) -> int:
        return self.parameters_before - self.removed_parameters

    @property
    def kept_fraction(self) -> float:
        return self.parameters_after / self.original_parameters

    def block_indices(self) -> list[int]:
        return sorted(e["block"] for e in self.removed_blocks)

    def component_parts(self) -> list[Part]:
        return [(e["block"], e["component"]) for e in self.removed_subcomponents]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "budget": self.budget,
            "original_parameters": self.original_parameters,
            "parameters_before": self.parameters_before,
            "parameters_after": self.parameters_after,
            "kept_fraction": self.kept_fraction,
            "removed_blocks": self.removed_blocks,
            "removed_subcomponents": self.removed_subcomponents,
            **self.details,
        }

    def describe(self) -> str:
        """A short human-readable table of the plan."""
        lines = [
            f"method {self.method}"
            + (
                f", budget {self.budget:g} of the original parameters"
                if self.budget is not None
                else ""
            ),
            f"parameters: {self.parameters_before:,} -> {self.parameters_after:,} "
            f"({self.kept_fraction:.1%} of the original {self.original_parameters:,})",
        ]
        if self.removed_blocks:
            lines.append(
                "remove blocks: " + ", ".join(str(e["block"]) for e in self.removed_blocks)
            )
        if self.removed_subcomponents:
            lines.append(
                "remove subcomponents: "
                + ", ".join(f"{e['block']}:{e['component']}" for e in self.removed_subcomponents)
            )
        return "\n".join(lines)


def check_budget(budget: float) -> float:
    if not isinstance(budget, int | float) or not 0 < budget < 1:
        raise UserError(
            f"budget must be a fraction of the original parameters to keep, strictly between 0 and 1 "
            f"(e.g. 0.8 for 20% pruning), got {budget}"
        )
    return float(budget)


class _Planner:
    """Parameter book-keeping shared by every method."""

    def __init__(
        self, adapter: ModelAdapter, method: str, budget: float | None, original: int
    ) -> None:
        self.adapter = adapter
        self.plan = PrunePlan(
            method=method,
            budget=budget,
            original_parameters=original,
            parameters_before=adapter.total_params(),
        )
        self.target = None if budget is None else budget * original
        self.blocks: set[int] = set()
        self.parts: set[Part] = set()
        if self.target is not None and self.plan.parameters_before <= self.target:
            raise UserError(
                f"the model already has {self.plan.parameters_before / original:.1%} of the original "
                f"parameters, within the budget {budget:g}; nothing to remove"
            )

    @property
    def current(self) -> int:
        return self.plan.parameters_after

    def met(self) -> bool:
        return self.target is not None and self.current <= self.target

    def can_remove_block(self, index: int) -> bool:
        removable = set(self.adapter.removable_blocks()) - self.blocks
        return index in removable and len(self.blocks) + 1 < self.adapter.num_blocks

    def remove_block(self, index: int, **info: Any) -> None:
        """Remove a whole block (any subcomponents planned inside it are subsumed)."""
        self.parts = {p for p in self.parts if p[0] != index}
        self.plan.removed_subcomponents = [
            e for e in self.plan.removed_subcomponents if e["block"] != index
        ]
        self.blocks.add(index)
        params = self.adapter.block_params(index)
        self.plan.removed_blocks.append({"block": index, "parameters": params, **info})

    def remove_component(self, part: Part, **info: Any) -> None:
        self.parts.add(part)
        params = self.adapter.component_params(*part)
        self.plan.removed_subcomponents.append(
            {"block": part[0], "component": part[1], "parameters": params, **info}
        )

    def finish(self) -> PrunePlan:
        if self.target is not None and not self.met():
            raise UserError(
                f"cannot reach the budget {self.plan.budget:g}: the removable parts leave "
                f"{self.plan.kept_fraction:.1%} of the original parameters"
            )
        if not self.blocks and not self.parts:
            raise UserError("the plan removes nothing")
        return self.plan

    def remove_blocks_until_met(self, order: Sequence[int], **info_by_block: dict) -> None:
        for index in order:
            if self.met():
                return
            if self.can_remove_block(index):
                self.remove_block(index, **{k: v[index] for k, v in info_by_block.items()})


def _check_contrib(adapter: ModelAdapter, contrib: Contribution) -> None:
    if contrib.family != adapter.family or contrib.num_blocks != adapter.num_blocks:
        raise UserError(
            f"the contribution file describes a {contrib.family} model with {contrib.num_blocks} "
            f"blocks, but this is a {adapter.family} model with {adapter.num_blocks}"
        )


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
    _check_contrib(adapter, contrib)
    weight = get_weighting(weighting)
    n = adapter.num_blocks

    def importance(part: Part) -> float:
        return abs(contrib.drops[part]) * weight(part[0], n)

    def order(parts: Sequence[Part]) -> list[Part]:
        # lowest importance first; between equals, the later block first
        return sorted(parts, key=lambda p: (importance(p), -p[0]))

    planner = _Planner(adapter, "hpp", budget, original_parameters)
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


def bk_sdm_plan(
    adapter: ModelAdapter, budget: float, *, original_parameters: int, layout: str = "middle"
) -> PrunePlan:
    """BK-SDM-style: whole blocks from the middle outwards, or evenly spaced, until the budget."""
    budget = check_budget(budget)
    removable = adapter.removable_blocks()
    n = adapter.num_blocks
    if layout == "middle":
        centre = (n - 1) / 2
        planner = _Planner(adapter, "bk-sdm", budget, original_parameters)
        planner.remove_blocks_until_met(sorted(removable, key=lambda i: (abs(i - centre), -i)))
        return planner.finish()
    if layout != "uniform":
        raise ValueError(f"unknown layout {layout!r}")
    planner = _Planner(adapter, "bk-sdm-uniform", budget, original_parameters)
    for k in range(1, len(removable) + 1):
        planner = _Planner(adapter, "bk-sdm-uniform", budget, original_parameters)
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
    _check_contrib(adapter, contrib)
    similarity = contrib.block_similarity
    if not similarity or any(s is None for s in similarity):
        raise UserError(
            "the contribution file has no block similarities (needed by --method koala)"
        )
    planner = _Planner(adapter, "koala", budget, original_parameters)
    order = sorted(range(adapter.num_blocks), key=lambda i: (-similarity[i], -i))
    planner.remove_blocks_until_met(order, similarity=dict(enumerate(similarity)))
    return planner.finish()


RANGE_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")
PART_TOKEN = re.compile(r"^(\d+):([A-Za-z_0-9]+)$")


def parse_removal(spec: str) -> tuple[list[int], list[Part]]:
    """``"25-28,31-34,13:ff"`` -> blocks [25..28, 31..34] and subcomponents [(13, "ff")]."""
    blocks: list[int] = []
    parts: list[Part] = []
    for token in (t.strip() for t in str(spec).split(",")):
        if match := RANGE_TOKEN.match(token):
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                raise UserError(f"bad block range {token!r}: it runs backwards")
            blocks += range(first, last + 1)
        elif match := PART_TOKEN.match(token):
            parts.append((int(match.group(1)), match.group(2)))
        else:
            raise UserError(
                f"bad removal spec {spec!r}: use block indices and inclusive ranges like 25-28, "
                "and BLOCK:COMPONENT for subcomponents (e.g. 13:ff)"
            )
    if not blocks and not parts:
        raise UserError("the removal spec names nothing to remove")
    return sorted(set(blocks)), list(dict.fromkeys(parts))


def explicit_plan(adapter: ModelAdapter, spec: str, *, original_parameters: int) -> PrunePlan:
    """Remove exactly the blocks and subcomponents named in ``spec`` (indices of the input model)."""
    blocks, parts = parse_removal(spec)
    adapter.check_block_removal(blocks)
    for part in parts:
        adapter.check_part(part)
        if part[1] == BLOCK or part[1] not in adapter.components(part[0]):
            raise UserError(f"block {part[0]} has no subcomponent {part[1]!r} left to remove")
    planner = _Planner(adapter, "explicit", None, original_parameters)
    planner.plan.details["spec"] = spec
    for part in parts:
        if part[0] not in blocks:
            planner.remove_component(part)
    for index in blocks:
        planner.remove_block(index)
    return planner.finish()
