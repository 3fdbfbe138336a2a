"""A pruning plan: which blocks and subcomponents to remove, with its parameter arithmetic.

The plan is a description; ``generation.transforms.surgery`` applies it to a transformer,
``generation.planning`` chooses one (HPP and the baselines, from contribution results), and
an explicit plan names the parts itself (``--remove 25-28,31-34``: inclusive ranges of block
indices of the input model; ``13:ff`` names a subcomponent).

The budget ``F`` (0 < F < 1) is the fraction of the *original* transformer's
parameters to keep: ``--budget 0.8`` is the paper's "20% pruning" level. The
original is the model before any hprune pruning (its parameter count is in
the model record); a plan removes parts until the parameters left are at most
``F`` times that count.

Block-only plans stop at the first removal that reaches the budget, so they
may keep slightly fewer parameters than the budget; the plan reports the
fraction it reaches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from generation.adapters import BLOCK, ModelAdapter, Part
from hprune.errors import UserError


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
            )
            + (f", {self.details['ablation']} ablation" if "ablation" in self.details else ""),
            f"parameters: {self.parameters_before:,} -> {self.parameters_after:,} "
            f"({self.kept_fraction:.2%} of the original {self.original_parameters:,})",
        ]
        if self.details.get("critical_blocks"):
            lines.append(
                "critical blocks (kept): " + ", ".join(map(str, self.details["critical_blocks"]))
            )
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


class PlanBuilder:
    """A plan built part by part: the parameter book-keeping shared by every method."""

    def __init__(
        self, adapter: ModelAdapter, method: str, budget: float | None, original: int
    ) -> None:
        self.adapter = adapter
        self.plan = PrunePlan(
            method=method,
            budget=budget,
            original_parameters=original,
            parameters_before=adapter.total_params(),
            details={"ablation": adapter.ablation},
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
    planner = PlanBuilder(adapter, "explicit", None, original_parameters)
    planner.plan.details["spec"] = spec
    for part in parts:
        if part[0] not in blocks:
            planner.remove_component(part)
    for index in blocks:
        planner.remove_block(index)
    return planner.finish()
