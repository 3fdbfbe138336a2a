"""PWP at a subcomponent cut: the trainable set is the reference implementation's.

The reference keeps removed parts in place as parameter-free identity modules (whole blocks
too), freezes the whole model, then walks ``named_modules`` and unfreezes every module after
the first identity it meets. Written out here on toy models and compared, parameter by
parameter (original indices), with ``--freeze auto`` on the structurally pruned student.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from generation.adapters import BLOCK, get_adapter
from generation.recipes.distill.freeze import (
    apply_freeze,
    first_pruned_index,
    frozen_blocks,
    parse_freeze,
)
from generation.store.toy_models import build_flux_transformer, build_sd3_transformer, default_spec
from generation.transforms.plan import parse_removal


@functools.cache
def _teacher(arch: str):
    torch.manual_seed(0)
    build = build_flux_transformer if arch == "flux" else build_sd3_transformer
    return build(default_spec(arch)).eval()


class Identity(nn.Module):
    """The reference's identity modules: no parameters (forward is not needed here)."""


def reference_trainable(teacher, blocks: list[int], parts: list[tuple[int, str]]) -> set[str]:
    model = copy.deepcopy(teacher)
    adapter = get_adapter(model)
    for index, component in [*((i, BLOCK) for i in blocks), *parts]:
        name, position = adapter.locate(index)
        block = getattr(model, name)[position]
        if component == BLOCK:
            getattr(model, name)[position] = Identity()
        elif component == "attn":
            block.attn = Identity()
            if getattr(block, "attn2", None) is not None:
                block.attn2 = Identity()
        elif component == "mlp":  # the reference's proj_mlp_out
            block.proj_mlp, block.proj_out = Identity(), Identity()
        else:  # norm1, norm1_context, norm (the module itself), ff, ff_context
            setattr(block, component, Identity())
    model.requires_grad_(False)
    grad = False
    for _, module in model.named_modules():
        module.requires_grad_(grad)
        if isinstance(module, Identity):
            grad = True
    return {name for name, p in model.named_parameters() if p.requires_grad}


def hprune_trainable(teacher, blocks: list[int], parts: list[tuple[int, str]]) -> set[str]:
    """``--freeze auto`` on the pruned student; names translated back to original indices."""
    student = copy.deepcopy(teacher)
    adapter = get_adapter(student)
    original_counts = adapter.config_counts()
    adapter.remove_components(parts)
    kept = adapter.remove_blocks(blocks) if blocks else list(range(adapter.num_blocks))
    by_original = dict(zip(kept, adapter.block_modules(), strict=True))
    first = first_pruned_index(blocks, [i for i, _ in parts])
    plan = frozen_blocks(parse_freeze("auto"), kept, first)
    apply_freeze(student, by_original, adapter.block_list_names(), plan)
    starts, offset = {}, 0  # first original global index of each block list
    for name, count in original_counts.items():
        starts[name], offset = offset, offset + count
    current = {name: 0 for name in original_counts}  # first current global index per list
    position = 0
    for name in adapter.block_list_names():
        current[name] = position
        position += len(getattr(student, name))
    trainable = set()
    for name, param in student.named_parameters():
        if not param.requires_grad:
            continue
        head, _, rest = name.partition(".")
        if head in original_counts:
            local, _, tail = rest.partition(".")
            original = kept[current[head] + int(local)] - starts[head]
            name = f"{head}.{original}.{tail}"
        trainable.add(name)
    return trainable


CUTS = [
    ("sd3", "5,2:ff"),  # inside block 2 only ff_context (after ff) trains
    ("sd3", "4,1:norm1_context,1:ff_context"),
    ("sd3", "3:attn"),
    ("sd3", "6,2:norm1"),
    ("sd35", "6,0:attn"),  # MMDiT-X: attn and attn2 go together
    ("sd35", "1:ff"),
    ("flux", "7,2:attn"),
    ("flux", "9,6:mlp"),  # single block: proj_mlp is the first removed module
    ("flux", "5:attn,8"),  # single block: attn comes last in its module order
    ("flux", "5:norm"),
]


@pytest.mark.parametrize(("arch", "cut"), CUTS)
def test_trainable_set_at_a_subcomponent_cut_is_the_reference_rule(arch, cut) -> None:
    blocks, parts = parse_removal(cut)
    teacher = _teacher(arch)
    expected = reference_trainable(teacher, blocks, parts)
    assert hprune_trainable(teacher, blocks, parts) == expected
    # and it is not simply "the whole first cut block trains"
    index = min([*blocks, *(i for i, _ in parts)])
    name, position = get_adapter(teacher).locate(index)
    block_params = {
        f"{name}.{position}.{n}" for n, _ in getattr(teacher, name)[position].named_parameters()
    }
    if index not in blocks:
        assert not block_params <= expected


def test_the_released_30_percent_cut_trains_nothing_of_block_13(shared_data) -> None:
    """At full size (meta device): ff and ff_context of 13 are its first removed parts and
    come after norm1, norm1_context and attn, so those 118 M parameters stay frozen, which
    training block 13 whole (hprune before) did not."""
    from generation.store.architectures import build_from_config, read_arch_config

    config = read_arch_config(
        shared_data / "architectures" / "stable-diffusion-3.5-large-turbo.json"
    )
    model = build_from_config(config, "meta")
    adapter = get_adapter(model)
    parts = [(i, c) for i in range(13, 19) for c in ("ff", "ff_context")]
    parts += [(i, "norm1_context") for i in (14, 15, 16)]
    adapter.remove_components(parts)
    kept = adapter.remove_blocks([25, 26, 27, 28, 31, 32, 33, 34])
    by_original = dict(zip(kept, adapter.block_modules(), strict=True))
    plan = frozen_blocks(parse_freeze("auto"), kept, 13)
    assert plan.partial == 13 and plan.blocks == frozenset(range(13))
    apply_freeze(model, by_original, adapter.block_list_names(), plan)
    assert not any(p.requires_grad for p in by_original[13].parameters())
    assert sum(p.numel() for p in by_original[13].parameters()) == 118_341_376
    assert all(p.requires_grad for p in by_original[14].parameters())
