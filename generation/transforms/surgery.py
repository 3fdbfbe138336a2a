"""Applying a pruning plan to a transformer in memory, and its full-structure state dict.

In memory the plan is structural surgery: removed blocks leave the block
lists (config counts updated: SD3 ``num_layers`` and remapped
``dual_attention_layers``; FLUX ``num_layers`` and ``num_single_layers``),
removed subcomponents are replaced by parameter-free stand-ins.

A removed subcomponent cannot be expressed in a diffusers config, so the
state dict a pruned model is saved with (:func:`full_structure_state_dict`)
has the full structure of the pruned config, with *neutral weights* for
removed subcomponents (zero output projections; modulation weights zero with
the bias at the identity values): it computes exactly what the pruned model
computes (``generation.store.saving`` writes it).
"""

from __future__ import annotations

import torch

from generation.adapters import ModelAdapter, get_adapter
from generation.adapters.base import modulation_identity, removed_components
from generation.transforms.plan import PrunePlan

# The parameters each subcomponent owns, relative to its block (FLUX single-block attn and mlp
# also own columns of proj_out, handled separately).
COMPONENT_PREFIXES = {
    "norm1": "norm1.linear",
    "norm1_context": "norm1_context.linear",
    "norm": "norm.linear",
    "attn": "attn",
    "attn2": "attn2",
    "ff": "ff",
    "ff_context": "ff_context",
    "mlp": "proj_mlp",
}


def apply_plan(adapter: ModelAdapter, plan: PrunePlan) -> list[int]:
    """Structural surgery in memory; returns the kept blocks' indices before the surgery."""
    adapter.remove_components(plan.component_parts())
    blocks = plan.block_indices()
    if not blocks:
        return list(range(adapter.num_blocks))
    return adapter.remove_blocks(blocks)


def full_structure_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The state dict of ``transformer``'s config built in full, removed subcomponents as neutral weights.

    Loaded into ``type(transformer).from_config(transformer.config)``, it computes
    exactly what the structurally pruned ``transformer`` computes.
    """
    adapter = get_adapter(transformer)
    with torch.device("meta"):
        skeleton = type(transformer).from_config(transformer.config)
    skeleton_adapter = get_adapter(skeleton)
    have = transformer.state_dict()
    dtype = next(transformer.parameters()).dtype
    full: dict[str, torch.Tensor] = {}
    neutral_prefixes: dict[str, str] = {}
    for index in range(adapter.num_blocks):
        name, position = adapter.locate(index)
        for component in removed_components(adapter.block(index)):
            neutral_prefixes[f"{name}.{position}.{COMPONENT_PREFIXES[component]}."] = component
    for key, meta in skeleton.state_dict().items():
        current = have.get(key)
        if current is not None and current.shape == meta.shape:
            full[key] = current
        elif current is not None:
            full[key] = _expand_proj_out(key, current, meta.shape, adapter)
        elif any(key.startswith(prefix) for prefix in neutral_prefixes):
            full[key] = torch.zeros(
                meta.shape, dtype=meta.dtype if not meta.is_floating_point() else dtype
            )
        else:
            raise AssertionError(f"{key} is missing but belongs to no removed subcomponent")
    for prefix, component in neutral_prefixes.items():
        if component.startswith("norm"):
            module = skeleton_adapter.transformer.get_submodule(prefix[: -len(".linear.")])
            full[prefix + "bias"] = modulation_identity(module).to(dtype)
    return full


def _expand_proj_out(
    key: str, current: torch.Tensor, shape: torch.Size, adapter: ModelAdapter
) -> torch.Tensor:
    """A FLUX single block's sliced ``proj_out.weight`` with zero columns where attn/mlp were removed."""
    parts = key.split(".")
    if parts[0] != "single_transformer_blocks" or parts[2:] != ["proj_out", "weight"]:
        raise AssertionError(f"unexpected shape change of {key}")
    block = getattr(adapter.transformer, parts[0])[int(parts[1])]
    removed = removed_components(block)
    width, mlp = block.proj_out.out_features, block.mlp_hidden_dim
    full = torch.zeros(shape, dtype=current.dtype, device=current.device)
    column = 0
    for name, span in (("attn", slice(0, width)), ("mlp", slice(width, width + mlp))):
        if name not in removed:
            size = span.stop - span.start
            full[:, span] = current[:, column : column + size]
            column += size
    return full
