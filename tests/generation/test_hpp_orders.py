"""HPP's two orderings pinned on hand-computed plans: whole blocks by |ΔP|·W_pos (negative drops
and block-varying drops), subcomponents by their own signed drop with no position weight.

The toy is the SD3.5-like 8-block transformer of ``test_pruning``: 329,424 parameters, blocks
3-6 hold 37,888 each, ff / ff_context 8,352 each. W_pos(i) = exp((i - 8)/8). With block 0
(drop 10) and block 7 (drop 8) critical (threshold 2.5), the head is blocks 0-3 and the tail
ends at block 7: the whole-block candidates are 4, 5, 6.
"""

from __future__ import annotations

import math

import pytest

from generation.planning import hpp_plan
from generation.planning.hpp import HPPRule
from tests.generation.test_pruning import contribution, sd35_adapter

TOTAL = 329_424
BLOCK = 37_888  # blocks 3-6
PART = 8_352  # ff or ff_context


def w(i: int) -> float:
    return math.exp((i - 8) / 8)


def block_plan(drops: dict[int, float], budget: float, **rule):
    adapter = sd35_adapter()
    assert adapter.total_params() == TOTAL and adapter.block_params(4) == BLOCK
    return hpp_plan(
        adapter,
        contribution(adapter, drops.__getitem__),
        budget,
        original_parameters=TOTAL,
        rule=HPPRule(**rule),
    )


def test_a_negative_drop_counts_by_its_size() -> None:
    """Block 4's removal *improves* the score by 3: |−3|·W_pos(4) = 1.820 makes it the most
    important candidate, after 5 (0.5·W(5) = 0.344) and 6 (1.0·W(6) = 0.779). At 0.8, two
    blocks go (329,424 − 2·37,888 = 253,648 ≤ 263,539): 5 then 6; block 4 stays."""
    drops = {0: 10.0, 1: 0.1, 2: 0.1, 3: 0.2, 4: -3.0, 5: 0.5, 6: 1.0, 7: 8.0}
    plan = block_plan(drops, 0.8)
    assert plan.details["critical_blocks"] == [0, 7]
    assert plan.details["block_candidates"] == [5, 6, 4]
    assert [e["block"] for e in plan.removed_blocks] == [5, 6]
    assert [e["importance"] for e in plan.removed_blocks] == pytest.approx([0.5 * w(5), w(6)])
    assert plan.parameters_after == TOTAL - 2 * BLOCK and not plan.removed_subcomponents


def test_the_position_weight_decides_between_block_varying_drops() -> None:
    """Block 4 drops 0.7, block 6 only 0.6, but W_pos favours keeping the later block:
    0.7·W(4) = 0.425 < 0.6·W(6) = 0.467, so at 0.9 (one block: 291,536 ≤ 296,482) block 4
    goes. Unweighted (or exp-decay: 0.7/√e = 0.425 > 0.6·e^-0.75 = 0.283) block 6 goes."""
    drops = {0: 10.0, 1: 0.1, 2: 0.1, 3: 0.2, 4: 0.7, 5: 2.0, 6: 0.6, 7: 8.0}
    plan = block_plan(drops, 0.9)
    assert plan.details["block_candidates"] == [4, 6, 5]
    assert plan.block_indices() == [4]
    assert plan.removed_blocks[0]["importance"] == pytest.approx(0.7 * w(4))
    assert block_plan(drops, 0.9, weighting="none").block_indices() == [6]
    assert block_plan(drops, 0.9, weighting="exp-decay").block_indices() == [6]


PART_DROPS = {(1, "ff"): -0.4, (3, "ff"): 0.10, (1, "ff_context"): 0.12, (2, "ff_context"): 0.3}


def part_plan(budget: float):
    adapter = sd35_adapter()
    contrib = contribution(
        adapter,
        {0: 10.0, 1: 0.1, 2: 0.1, 3: 0.2, 4: 0.5, 5: 0.5, 6: 0.5, 7: 8.0}.__getitem__,
        lambda i, c: 0.01 if c == "attn" else PART_DROPS.get((i, c), 0.9),
    )
    rule = HPPRule(sub_blocks=(1, 3), block_floor=1.0)  # no whole blocks; attn excluded
    return hpp_plan(adapter, contrib, budget, original_parameters=TOTAL, rule=rule)


def test_subcomponents_go_by_their_own_signed_drop_without_position_weight() -> None:
    """In blocks 1-3, attention excluded, lowest signed drop first: 1:ff (−0.4, its removal
    helps), 3:ff (0.10), 1:ff_context (0.12). Ranked by |drop| 1:ff would come last; weighted
    by W_pos, 1:ff_context (0.12·W(1) = 0.050) would come before 3:ff (0.10·W(3) = 0.054).
    At 0.93 three parts go (329,424 − 3·8,352 = 304,368 ≤ 306,364); at 0.9 a fourth, 2:ff_context."""
    plan = part_plan(0.93)
    assert not plan.removed_blocks
    assert plan.component_parts() == [(1, "ff"), (3, "ff"), (1, "ff_context")]
    assert [e["drop"] for e in plan.removed_subcomponents] == [-0.4, 0.10, 0.12]
    assert all(e["stage"] == "subcomponents" for e in plan.removed_subcomponents)
    assert plan.parameters_after == TOTAL - 3 * PART
    assert part_plan(0.9).component_parts()[3:] == [(2, "ff_context")]


def test_a_block_removed_through_its_parts_is_weighed_by_position() -> None:
    """Block 3 (drop 0.2) loses every part and is removed whole: its recorded importance is
    |ΔP|·W_pos(3) = 0.2·exp(−5/8) = 0.107, as for any block removed whole."""
    drops = {0: 10.0, 1: 0.1, 2: 0.1, 3: 0.2, 4: 0.5, 5: 0.3, 6: 5.0, 7: 1.0}
    plan = block_plan(drops, 0.89, sub_blocks=(3, 3), exclude=(), block_floor=1.0)
    (removed,) = plan.removed_blocks
    assert removed["block"] == 3 and removed["stage"] == "subcomponents-whole"
    assert removed["importance"] == pytest.approx(0.2 * w(3))
