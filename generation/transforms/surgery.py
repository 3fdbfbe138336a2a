"""Applying a pruning plan to a transformer in memory.

The plan is structural surgery: removed blocks leave the block lists (config counts
updated: SD3 ``num_layers`` and remapped ``dual_attention_layers``; FLUX ``num_layers``
and ``num_single_layers``), removed subcomponents are replaced by parameter-free
stand-ins that compute what the adapter's ablation semantics says. Saved, such a model is a
pruned class (``generation.transforms.pruned_classes``) whose config names those parts.
"""

from __future__ import annotations

from generation.adapters import ModelAdapter
from generation.transforms.plan import PrunePlan


def apply_plan(adapter: ModelAdapter, plan: PrunePlan) -> list[int]:
    """Structural surgery in memory; returns the kept blocks' indices before the surgery."""
    adapter.remove_components(plan.component_parts())
    blocks = plan.block_indices()
    if not blocks:
        return list(range(adapter.num_blocks))
    return adapter.remove_blocks(blocks)
