"""What every architecture adapter knows: blocks under one global index, their
subcomponents, and three ways to take a part out.

- ``ablate(parts)``: reversible identity replacement, for contribution analysis.
  A removed attention or feed-forward sublayer adds nothing to its residual
  stream; a removed modulation (adaLN) gives scale 0, shift 0 and gate 1, so the
  sublayers see the plain LayerNorm of their input; a removed block returns its
  inputs unchanged.
- ``remove_blocks`` / ``remove_components``: structural surgery that frees the
  parameters (the model really gets smaller).
- ``neutralise_components``: the same function as removal, but by setting
  weights in place (output projections zero, modulation weights zero with the
  bias at the identity values), so that a model saved with the full structure
  reloads with plain ``from_pretrained`` and computes exactly what the
  structurally pruned model computes.

A *part* is ``(block_index, component)`` where ``component`` is a subcomponent
name or :data:`BLOCK` for the whole block. Indices are positions in the current
model; the model record (``generation.model_record``) maps them to the
original model's indices.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

import torch
from torch import nn

from hprune.errors import UserError

BLOCK = "block"
Part = tuple[int, str]

# adaLN modules: number of chunks the linear layer's output splits into, and which chunks are gates.
# Identity modulation = shift 0, scale 0, gate 1 (diffusers' chunk order: shift, scale, gate per sublayer).
MODULATION_LAYOUT: dict[str, tuple[int, tuple[int, ...]]] = {
    "AdaLayerNormZero": (6, (2, 5)),
    "SD35AdaLayerNormZeroX": (9, (2, 5, 8)),
    "AdaLayerNormZeroSingle": (3, (2,)),
    "AdaLayerNormContinuous": (2, ()),  # (scale, shift)
}


class ConstantOutput(nn.Module):
    """Stands in for an adaLN's linear layer: returns a fixed vector per sample, no parameters."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value.detach().clone(), persistent=False)
        self.out_features = value.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1)


class ZeroAttention(nn.Module):
    """A removed attention sublayer: zero output for the image stream (and the text stream, if given).

    ``width`` is the width of the output (``None``: the width of the input).
    """

    def __init__(self, width: int | None = None) -> None:
        super().__init__()
        self.width = width

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1] if self.width is None else self.width
        return x.new_zeros((*x.shape[:-1], width))

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is None:
            return self._zeros(hidden_states)
        return self._zeros(hidden_states), torch.zeros_like(encoder_hidden_states)


class ZeroFeedForward(nn.Module):
    """A removed feed-forward sublayer (or FLUX MLP input projection) of output width ``width``."""

    def __init__(self, width: int | None = None) -> None:
        super().__init__()
        self.width = width

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        width = hidden_states.shape[-1] if self.width is None else self.width
        return hidden_states.new_zeros((*hidden_states.shape[:-1], width))


class IdentityBlock(nn.Module):
    """A removed block: returns ``(encoder_hidden_states, hidden_states)`` unchanged."""

    def forward(self, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        return encoder_hidden_states, hidden_states


def modulation_identity(module: nn.Module) -> torch.Tensor:
    """The output of ``module.linear`` that makes an adaLN module an identity modulation."""
    chunks, gates = MODULATION_LAYOUT[type(module).__name__]
    width = module.linear.out_features // chunks
    value = torch.zeros(chunks, width)
    for gate in gates:
        value[gate] = 1.0
    return value.flatten()


def neutralise_linear(linear: nn.Linear, bias: torch.Tensor | None = None) -> None:
    """Set a linear layer's weight to zero and its bias to ``bias`` (default zero), in place."""
    with torch.no_grad():
        linear.weight.zero_()
        if linear.bias is not None:
            if bias is None:
                linear.bias.zero_()
            else:
                linear.bias.copy_(bias.to(linear.bias.dtype))


def last_linear(module: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` inside ``module`` (the output projection of a FeedForward)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(module).__name__} has no linear layer")
    return linears[-1]


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@dataclasses.dataclass
class BlockSimilarity:
    """Running mean cosine similarity between each block's input and output image tokens (KOALA)."""

    total: list[float]
    count: list[int]

    def means(self) -> list[float | None]:
        return [t / c if c else None for t, c in zip(self.total, self.count, strict=True)]


class _Swaps:
    """Module replacements that can be undone in reverse order."""

    def __init__(self) -> None:
        self.done: list[tuple[nn.Module, str, nn.Module]] = []

    def swap(self, parent: nn.Module, name: str, new: nn.Module) -> nn.Module:
        old = parent[int(name)] if isinstance(parent, nn.ModuleList) else getattr(parent, name)
        if isinstance(parent, nn.ModuleList):
            parent[int(name)] = new
        else:
            setattr(parent, name, new)
        self.done.append((parent, name, old))
        return old

    def undo(self) -> None:
        for parent, name, old in reversed(self.done):
            if isinstance(parent, nn.ModuleList):
                parent[int(name)] = old
            else:
                setattr(parent, name, old)
        self.done.clear()


def removed_components(block: nn.Module) -> set[str]:
    """The names of the subcomponents structurally removed from ``block`` (kept on the block itself)."""
    removed = getattr(block, "_hprune_removed", None)
    if removed is None:
        removed = set()
        block._hprune_removed = removed
    return removed


class ModelAdapter(abc.ABC):
    """One architecture family's view of a diffusion transformer."""

    family: ClassVar[str]
    transformer_class: ClassVar[str]

    def __init__(self, transformer: nn.Module) -> None:
        self.transformer = transformer

    # ----- structure -----------------------------------------------------------------

    @abc.abstractmethod
    def block_list_names(self) -> tuple[str, ...]:
        """Names of the ``nn.ModuleList`` attributes holding the blocks, in execution order."""

    @abc.abstractmethod
    def block_kind(self, index: int) -> str:
        """``"joint"`` (SD3), ``"double"`` or ``"single"`` (FLUX)."""

    @abc.abstractmethod
    def all_components(self, index: int) -> tuple[str, ...]:
        """Every subcomponent name block ``index`` has by construction."""

    @abc.abstractmethod
    def component_params(self, index: int, name: str) -> int:
        """Parameters that removing subcomponent ``name`` of block ``index`` frees (0 once removed)."""

    @abc.abstractmethod
    def _update_config_after_block_removal(self, kept: Sequence[int]) -> None:
        """Write the new block counts (and remapped indices) into the transformer config."""

    def block_lists(self) -> list[nn.ModuleList]:
        return [getattr(self.transformer, name) for name in self.block_list_names()]

    def block_modules(self) -> list[nn.Module]:
        """Every block in global index order."""
        return [block for blocks in self.block_lists() for block in blocks]

    @property
    def num_blocks(self) -> int:
        return sum(len(blocks) for blocks in self.block_lists())

    def locate(self, index: int) -> tuple[str, int]:
        """The block list name and the position in it of global block ``index``."""
        self.check_block_index(index)
        for name, blocks in zip(self.block_list_names(), self.block_lists(), strict=True):
            if index < len(blocks):
                return name, index
            index -= len(blocks)
        raise AssertionError("unreachable")

    def block(self, index: int) -> nn.Module:
        name, position = self.locate(index)
        return getattr(self.transformer, name)[position]

    def check_block_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self.num_blocks:
            raise UserError(
                f"block index {index} is out of range: this model has blocks 0-{self.num_blocks - 1}"
            )

    def components(self, index: int) -> tuple[str, ...]:
        """The subcomponents block ``index`` still has (structurally removed ones are left out)."""
        removed = removed_components(self.block(index))
        return tuple(c for c in self.all_components(index) if c not in removed)

    def check_part(self, part: Part) -> None:
        index, component = part
        self.check_block_index(index)
        if component != BLOCK and component not in self.all_components(index):
            raise UserError(
                f"block {index} has no subcomponent {component!r}; it has "
                f"{', '.join(self.all_components(index))}"
            )

    def removable_blocks(self) -> list[int]:
        """Blocks that structural surgery may delete."""
        return list(range(self.num_blocks))

    def parts(self, *, blocks: bool = True, subcomponents: bool = True) -> list[Part]:
        """Every whole block, then every present subcomponent, in global index order."""
        found: list[Part] = []
        if blocks:
            found += [(i, BLOCK) for i in range(self.num_blocks)]
        if subcomponents:
            found += [(i, c) for i in range(self.num_blocks) for c in self.components(i)]
        return found

    # ----- parameter counts ----------------------------------------------------------

    def total_params(self) -> int:
        return count_params(self.transformer)

    def block_params(self, index: int) -> int:
        return count_params(self.block(index))

    def part_params(self, part: Part) -> int:
        index, component = part
        return self.block_params(index) if component == BLOCK else self.component_params(*part)

    def config_counts(self) -> dict[str, int]:
        """Block counts per list, as the config names them."""
        return {
            name: len(blocks)
            for name, blocks in zip(self.block_list_names(), self.block_lists(), strict=True)
        }

    # ----- identity replacement (reversible) -----------------------------------------

    @abc.abstractmethod
    def _replace_component(self, swaps: _Swaps, index: int, name: str, *, structural: bool) -> None:
        """Swap in the parameter-free stand-in for one subcomponent."""

    @abc.abstractmethod
    def _neutralise_component(self, index: int, name: str) -> None:
        """Set weights so that the subcomponent computes what its removal computes."""

    def _ablate_blocks(
        self, swaps: _Swaps, indices: Sequence[int]
    ) -> contextlib.AbstractContextManager:
        for index in indices:
            name, position = self.locate(index)
            swaps.swap(getattr(self.transformer, name), str(position), IdentityBlock())
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def ablate(self, parts: Iterable[Part]) -> Iterator[None]:
        """Within the ``with`` block, the given parts are replaced by identities; restored on exit."""
        parts = list(parts)
        for part in parts:
            self.check_part(part)
        blocks = sorted({i for i, c in parts if c == BLOCK})
        swaps = _Swaps()
        try:
            for index, component in parts:
                if component != BLOCK and component in self.components(index):
                    self._replace_component(swaps, index, component, structural=False)
            with self._ablate_blocks(swaps, blocks):
                yield
        finally:
            swaps.undo()

    # ----- structural surgery --------------------------------------------------------

    def remove_components(self, parts: Iterable[Part]) -> None:
        """Replace subcomponents by parameter-free stand-ins, freeing their parameters."""
        parts = list(parts)
        for part in parts:
            self.check_part(part)
            if part[1] == BLOCK:
                raise ValueError("use remove_blocks for whole blocks")
        for index, component in parts:
            if component in self.components(index):
                self._replace_component(_Swaps(), index, component, structural=True)
                removed_components(self.block(index)).add(component)

    def neutralise_components(self, parts: Iterable[Part]) -> None:
        """Give subcomponents the weights that make them compute what their removal computes."""
        parts = list(parts)
        for part in parts:
            self.check_part(part)
        for index, component in parts:
            if component in self.components(index):
                self._neutralise_component(index, component)

    def check_block_removal(self, indices: Iterable[int]) -> list[int]:
        """Validate a set of blocks to delete; return it sorted and de-duplicated."""
        indices = sorted(set(indices))
        for index in indices:
            self.check_block_index(index)
        allowed = set(self.removable_blocks())
        fixed = [i for i in indices if i not in allowed]
        if fixed:
            raise UserError(self._not_removable_message(fixed))
        if len(indices) >= self.num_blocks:
            raise UserError("cannot remove every block of the model")
        return indices

    def _not_removable_message(self, indices: Sequence[int]) -> str:
        return f"blocks {indices} cannot be removed"

    def remove_blocks(self, indices: Iterable[int]) -> list[int]:
        """Delete whole blocks and update the config; return the kept (previous) global indices."""
        indices = set(self.check_block_removal(indices))
        kept: list[int] = []
        offset = 0
        for name in self.block_list_names():
            blocks = getattr(self.transformer, name)
            keep = [b for pos, b in enumerate(blocks) if offset + pos not in indices]
            kept += [offset + pos for pos in range(len(blocks)) if offset + pos not in indices]
            offset += len(blocks)
            setattr(self.transformer, name, nn.ModuleList(keep))
        self._update_config_after_block_removal(kept)
        return kept

    # ----- block input/output similarity (KOALA) -------------------------------------

    @contextlib.contextmanager
    def capture_block_similarity(self) -> Iterator[BlockSimilarity]:
        """Record, for every block call, the cosine similarity of its input and output image tokens."""
        stats = BlockSimilarity(total=[0.0] * self.num_blocks, count=[0] * self.num_blocks)
        handles = []

        def make_hook(index: int):
            def hook(module, args, kwargs, output):
                before = kwargs.get("hidden_states", args[0] if args else None)
                after = output[1]
                sim = torch.nn.functional.cosine_similarity(
                    before.flatten(1).float(), after.flatten(1).float(), dim=1
                )
                stats.total[index] += float(sim.sum())
                stats.count[index] += sim.numel()

            return hook

        try:
            for index, block in enumerate(self.block_modules()):
                handles.append(block.register_forward_hook(make_hook(index), with_kwargs=True))
            yield stats
        finally:
            for handle in handles:
                handle.remove()


# ----- the MMDiT block (SD3 joint blocks, FLUX double blocks) ---------------------------
# Subcomponents: norm1 and norm1_context (adaLN modulation of the image and text
# streams), attn (joint attention), attn2 (SD3.5 MMDiT-X second attention), ff
# and ff_context (the two feed-forward sublayers).


def mmdit_components(block: nn.Module) -> tuple[str, ...]:
    names = ["norm1", "norm1_context", "attn"]
    if getattr(block, "attn2", None) is not None:
        names.append("attn2")
    names.append("ff")
    if getattr(block, "ff_context", None) is not None:
        names.append("ff_context")
    return tuple(names)


def mmdit_replace(swaps: _Swaps, block: nn.Module, name: str) -> None:
    if name in ("norm1", "norm1_context"):
        norm = getattr(block, name)
        swaps.swap(norm, "linear", ConstantOutput(modulation_identity(norm)))
    elif name in ("attn", "attn2"):
        swaps.swap(block, name, ZeroAttention())
    elif name in ("ff", "ff_context"):
        swaps.swap(block, name, ZeroFeedForward())
    else:
        raise ValueError(f"unknown subcomponent {name!r}")


def mmdit_neutralise(block: nn.Module, name: str) -> None:
    module = getattr(block, name)
    if name in ("norm1", "norm1_context"):
        neutralise_linear(module.linear, modulation_identity(module))
    elif name in ("attn", "attn2"):
        neutralise_linear(module.to_out[0])
        if getattr(module, "to_add_out", None) is not None:
            neutralise_linear(module.to_add_out)
    elif name in ("ff", "ff_context"):
        neutralise_linear(last_linear(module))
    else:
        raise ValueError(f"unknown subcomponent {name!r}")


def mmdit_params(block: nn.Module, name: str) -> int:
    if name in removed_components(block):
        return 0
    module = getattr(block, name)
    return count_params(module.linear if name.startswith("norm") else module)
