"""Applying a pruning plan, and writing the pruned model so that it describes itself.

In memory the plan is structural surgery: removed blocks leave the block
lists (config counts updated: SD3 ``num_layers`` and remapped
``dual_attention_layers``; FLUX ``num_layers`` and ``num_single_layers``),
removed subcomponents are replaced by parameter-free stand-ins.

On disk the pruned model is an ordinary diffusers directory:

- the block counts in ``transformer/config.json`` are the pruned ones, so
  plain ``from_pretrained`` builds exactly the kept blocks (without the
  update SD3 fails to load on a shape mismatch, while FLUX loads with only a
  warning: the kept blocks' weights shift positions and the last positions
  are left on the meta device, or initialised at random with
  ``low_cpu_mem_usage=False``; see the tests);
- a removed subcomponent cannot be expressed in a diffusers config, so it is
  stored with *neutral weights* (zero output projections; modulation weights
  zero with the bias at the identity values). Plain ``from_pretrained`` then
  computes exactly what the pruned model computes, at the memory cost of the
  full structure; ``generation.loading`` reads the model record and removes
  those subcomponents again, so hprune's own loader gets the real savings;
- ``transformer/hprune_record.json`` lists the kept original block indices,
  the removed blocks and subcomponents (original indices), the plan and the
  parent model's fingerprint;
- the other components (text encoders, VAE, tokenizers, scheduler) are hard
  links to the input model's files where the file system allows, else copies.
  Every hprune writer replaces files by rename, never in place, so a hard link
  never lets one model's change reach another.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from generation.adapters import ModelAdapter, get_adapter
from generation.adapters.base import modulation_identity, removed_components
from generation.model_record import ModelRecord, read_record, record_for_transformer, write_record
from generation.pruning.plan import PrunePlan
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir

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


def save_transformer(transformer, directory: Path) -> None:
    """``save_pretrained`` of the full structure with neutral weights for removed subcomponents."""
    with torch.device("meta"):
        skeleton = type(transformer).from_config(transformer.config)
    skeleton.load_state_dict(full_structure_state_dict(transformer), strict=True, assign=True)
    skeleton.save_pretrained(directory)


def link_tree(source: Path, target: Path, *, skip: set[str]) -> None:
    """Recreate ``source`` under ``target`` with hard links (copies across file systems), leaving out ``skip``."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in skip or entry.name.startswith("."):
            continue
        destination = target / entry.name
        if entry.is_dir():
            link_tree(entry, destination, skip=set())
            continue
        real = entry.resolve()
        try:
            os.link(real, destination)
        except OSError:
            shutil.copy2(real, destination)


def pruned_record(
    base: ModelRecord, plan: PrunePlan, kept_before: list[int], *, parent_fingerprint: str
) -> ModelRecord:
    """The record of the pruned model, in original indices, with the plan and a history entry."""
    original = base.kept_blocks  # original index of each block of the input model
    kept = [original[i] for i in kept_before]
    removed_now = {original[i] for i in plan.block_indices()}
    subcomponents = [e for e in base.removed_subcomponents if e["block"] in kept] + [
        {"block": original[i], "component": c} for i, c in plan.component_parts()
    ]
    plan_json = plan.to_json()
    for entry in plan_json["removed_blocks"] + plan_json["removed_subcomponents"]:
        entry["original_block"] = original[entry["block"]]
    record = dataclasses.replace(
        base,
        kept_blocks=kept,
        removed_blocks=sorted(set(base.removed_blocks) | removed_now),
        removed_subcomponents=subcomponents,
        pruning=plan_json,
        parent_fingerprint=parent_fingerprint,
    )
    return record.with_history(
        "prune", method=plan.method, budget=plan.budget, kept_fraction=round(plan.kept_fraction, 6)
    )


def prune_model(
    model: str | Path,
    out: str | Path,
    make_plan: Callable[[ModelAdapter, int], PrunePlan],
    *,
    overwrite: bool = False,
):
    """Load ``model``, plan with ``make_plan(adapter, original_parameters)``, apply, write ``out``.

    Returns ``(plan, pruned transformer in memory)``.
    """
    from generation.loading import (
        load_transformer,
        model_fingerprint,
        resolve_model_dir,
        transformer_dir,
    )

    source = resolve_model_dir(model)
    out = Path(out)
    if out.resolve() == source.resolve():
        raise UserError("the output directory must differ from the input model")
    source_transformer = transformer_dir(source)
    record = read_record(source_transformer)
    if record is not None and record.quantization:
        raise UserError(f"{model} is quantised; prune the unquantised model, then quantise")
    if out.exists() and not overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    transformer = load_transformer(source)
    adapter = get_adapter(transformer)
    base = record or record_for_transformer(transformer)
    plan = make_plan(adapter, base.original_parameters)
    kept_before = apply_plan(adapter, plan)
    new_record = pruned_record(
        base, plan, kept_before, parent_fingerprint=model_fingerprint(source)
    )
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if source_transformer == source:  # a transformer directory on its own
            save_transformer(transformer, tmp)
        else:
            link_tree(source, tmp, skip={"transformer"})
            save_transformer(transformer, tmp / "transformer")
        write_record(tmp, new_record)
    return plan, transformer
