"""Pruning a model folder: plan, apply, and write a self-describing pruned model.

The output is the layout ``generation.store.saving`` describes, plus
``transformer/hprune_record.json`` listing the kept original block indices,
the removed blocks and subcomponents (original indices), the plan and the
parent model's fingerprint. :func:`dry_run_plan` plans on the meta device, from a model
folder's config or a full-size architecture config, without any weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from generation.adapters import ModelAdapter, get_adapter, record_for_transformer
from generation.model_record import ModelRecord, read_record, write_record
from generation.store.architectures import build_from_config, read_arch_config
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import (
    load_transformer,
    read_transformer_config,
    resolve_model_dir,
    transformer_dir,
)
from generation.store.saving import save_pipeline_transformer
from generation.transforms.plan import PrunePlan
from generation.transforms.surgery import apply_plan
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir


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
    ablation: str | None = None,
    overwrite: bool = False,
):
    """Load ``model``, plan with ``make_plan(adapter, original_parameters)``, apply, write ``out``.

    ``ablation``: what removed subcomponents compute (``identity``, the default, or ``zero``;
    a model already pruned keeps its own).

    Returns ``(plan, pruned transformer in memory)``.
    """
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
    adapter = get_adapter(transformer, ablation)
    base = record or record_for_transformer(transformer)
    plan = make_plan(adapter, base.original_parameters)
    kept_before = apply_plan(adapter, plan)
    new_record = pruned_record(
        base, plan, kept_before, parent_fingerprint=model_fingerprint(source)
    )
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        save_pipeline_transformer(transformer, source, tmp)
        write_record(tmp, new_record)
    return plan, transformer


def dry_run_plan(
    make_plan: Callable[[ModelAdapter, int], PrunePlan],
    *,
    model: str | Path | None = None,
    arch_config: str | Path | None = None,
    ablation: str | None = None,
) -> PrunePlan:
    """The plan ``prune_model`` would make, computed on the meta device (no weights loaded):
    from ``model``'s transformer config and record, or from a full-size ``arch_config``."""
    if (model is None) == (arch_config is None):
        raise UserError("give exactly one of --model and --arch-config")
    record = None
    if model is not None:
        directory = transformer_dir(resolve_model_dir(model, transformer_only=True))
        config = read_transformer_config(directory)
        record = read_record(directory)
        if record is not None and record.quantization:
            raise UserError(f"{model} is quantised; prune the unquantised model, then quantise")
    else:
        config = read_arch_config(arch_config)
    adapter = get_adapter(build_from_config(config, "meta"), ablation)
    original = record.original_parameters if record else adapter.total_params()
    return make_plan(adapter, original)
