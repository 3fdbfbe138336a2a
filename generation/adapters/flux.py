"""FLUX.1 (``FluxTransformer2DModel``): double-stream blocks, then single-stream blocks.

Both lists share one global block index: ``0 .. num_layers-1`` are the double
blocks (MMDiT, subcomponents as SD3), ``num_layers ..`` the single blocks.
A single block runs attention and an MLP side by side on the joint token
sequence and projects their concatenation with one ``proj_out``; its
subcomponents are ``norm`` (adaLN modulation), ``attn`` and ``mlp``:

- ``identity`` semantics (the reference's): ``attn`` returns its input (the
  modulated, normalised sequence), ``proj_out`` stays whole; ``mlp`` is the
  reference's ``proj_mlp_out``: ``proj_mlp`` and ``proj_out`` both become
  identities and the block keeps the first ``dim`` features, so it adds
  gate x the attention output, unprojected. ``mlp`` therefore frees ``proj_mlp``
  and all of ``proj_out``.
- ``zero`` semantics: ``attn`` or ``mlp`` contributes nothing; structural removal
  slices their columns out of ``proj_out`` (each owns its columns).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from generation.adapters.base import (
    ConstantOutput,
    LeadingFeatures,
    ModelAdapter,
    PassThroughAttention,
    PassThroughFeedForward,
    ZeroAttention,
    ZeroFeedForward,
    _Swaps,
    count_params,
    mmdit_components,
    mmdit_params,
    mmdit_replace,
    modulation_identity,
    removed_components,
)

SINGLE_COMPONENTS = ("norm", "attn", "mlp")


def _single_columns(block: nn.Module) -> dict[str, slice]:
    """``zero`` semantics: the input columns of ``proj_out`` fed by the attention and by the
    MLP, given what is removed."""
    removed = removed_components(block)
    width = block.proj_out.out_features  # = the block's width
    attn = 0 if "attn" in removed else width
    mlp = 0 if "mlp" in removed else block.mlp_hidden_dim
    return {"attn": slice(0, attn), "mlp": slice(attn, attn + mlp)}


def _slice_proj_out(block: nn.Module, drop: str) -> None:
    columns = _single_columns(block)
    keep = columns["mlp" if drop == "attn" else "attn"]
    old = block.proj_out
    new = nn.Linear(keep.stop - keep.start, old.out_features, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:, keep])
        if old.bias is not None:
            new.bias.copy_(old.bias)
    block.proj_out = new


class FluxAdapter(ModelAdapter):
    family = "flux"
    transformer_class = "FluxTransformer2DModel"

    def block_list_names(self) -> tuple[str, ...]:
        return ("transformer_blocks", "single_transformer_blocks")

    @property
    def num_double(self) -> int:
        return len(self.transformer.transformer_blocks)

    def block_kind(self, index: int) -> str:
        self.check_block_index(index)
        return "double" if index < self.num_double else "single"

    def all_components(self, index: int) -> tuple[str, ...]:
        if self.block_kind(index) == "double":
            return mmdit_components(self.block(index))
        return SINGLE_COMPONENTS

    def component_params(self, index: int, name: str) -> int:
        self.check_part((index, name))
        block = self.block(index)
        if self.block_kind(index) == "double":
            return mmdit_params(block, name)
        if name in removed_components(block):
            return 0
        if name == "norm":
            return count_params(block.norm.linear)
        if self.ablation == "identity":
            if name == "attn":
                return count_params(block.attn)
            return count_params(block.proj_mlp) + count_params(block.proj_out)
        columns = _single_columns(block)[name]
        own = block.attn if name == "attn" else block.proj_mlp
        return count_params(own) + (columns.stop - columns.start) * block.proj_out.out_features

    def _replace_component(self, swaps: _Swaps, index: int, name: str, *, structural: bool) -> None:
        block = self.block(index)
        if self.block_kind(index) == "double":
            mmdit_replace(swaps, block, name, self.ablation)
        elif name == "norm":
            swaps.swap(block.norm, "linear", ConstantOutput(modulation_identity(block.norm)))
        elif name not in ("attn", "mlp"):
            raise ValueError(f"unknown subcomponent {name!r}")
        elif self.ablation == "identity" and name == "attn":
            swaps.swap(block, "attn", PassThroughAttention())
        elif self.ablation == "identity":
            swaps.swap(block, "proj_out", LeadingFeatures(block.proj_out.out_features))
            swaps.swap(block, "proj_mlp", PassThroughFeedForward())
        elif name == "attn":
            if structural:
                _slice_proj_out(block, "attn")
            swaps.swap(block, "attn", ZeroAttention(width=0 if structural else None))
        else:
            if structural:
                _slice_proj_out(block, "mlp")
            width = 0 if structural else block.mlp_hidden_dim
            swaps.swap(block, "proj_mlp", ZeroFeedForward(width=width))

    def _update_config_after_block_removal(self, kept: Sequence[int]) -> None:
        num_double = self.transformer.config.num_layers
        doubles = sum(1 for old in kept if old < num_double)
        self.transformer.register_to_config(
            num_layers=doubles, num_single_layers=len(kept) - doubles
        )
