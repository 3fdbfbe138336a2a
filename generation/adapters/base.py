"""What every architecture adapter knows: blocks under one global index, their
subcomponents, and how a part is taken out.

- ``ablate(parts)``: reversible identity replacement, for contribution analysis.
- ``remove_components`` / ``remove_blocks``: structural surgery that frees the
  parameters (the model really gets smaller) and computes what ``ablate`` computes.

What a removed subcomponent computes is the *ablation semantics*, one per model:

- ``identity`` (the default, as HierarchicalPrune's reference implementation removes
  parts): a removed attention or feed-forward sublayer returns its **input**, so the
  block still adds gate x modulated LayerNorm(x) to its residual stream. ``attn``
  removes the joint attention and, in SD3.5 MMDiT-X blocks, the second attention
  ``attn2`` with it, as the reference does.
- ``zero``: a removed sublayer adds nothing to its residual stream (its output is zero),
  the textbook ablation of a residual branch. hprune's semantics before the reference's
  was adopted; kept as a named option for comparison and for models pruned that way.

In both, a removed modulation (adaLN, ``norm1``/``norm1_context``/``norm``) gives
scale 0, shift 0 and every gate 1, so the sublayers see the plain LayerNorm of their
input: exactly the reference's ``w_norm1``/``w_norm1_context``/``w_norm``. A removed
block returns its inputs unchanged.

A *part* is ``(block_index, component)`` where ``component`` is a subcomponent
name or :data:`BLOCK` for the whole block. Indices are positions in the current
model; the model record (``generation.model_record``) maps them to the
original model's indices.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from hprune.errors import UserError

BLOCK = "block"
Part = tuple[int, str]

#: What a removed attention or feed-forward sublayer computes (see the module docstring).
ABLATIONS = ("identity", "zero")
DEFAULT_ABLATION = "identity"

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


class PassThroughAttention(nn.Module):
    """A removed attention sublayer (``identity`` semantics): returns its inputs, the image
    stream (and the text stream, if given), as the reference's identity attention does."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is None:
            return hidden_states
        return hidden_states, encoder_hidden_states


class PassThroughFeedForward(nn.Module):
    """A removed feed-forward sublayer (``identity`` semantics): returns its input."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class LeadingFeatures(nn.Module):
    """Stands in for a FLUX single block's ``proj_out`` once its MLP path is removed
    (``identity`` semantics): keeps the first ``width`` features of the concatenated
    [attention output, MLP output], i.e. the attention output, unprojected. This is the
    reference's ``proj_mlp_out`` removal (both MLP layers identities, then a slice)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[..., : self.width]


class ZeroAttention(nn.Module):
    """A removed attention sublayer (``zero`` semantics): zero output for the image stream
    (and the text stream, if given). ``width`` is the output width (``None``: the input's)."""

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
    """A removed feed-forward sublayer (``zero`` semantics), or FLUX MLP input projection,
    of output width ``width`` (``None``: the input's)."""

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


#: The parameter-free modules that stand in for removed parts (whole blocks aside).
STAND_INS: tuple[type[nn.Module], ...] = (
    ConstantOutput,
    PassThroughAttention,
    PassThroughFeedForward,
    LeadingFeatures,
    ZeroAttention,
    ZeroFeedForward,
)


def is_stand_in(module: nn.Module) -> bool:
    """True for a module that stands in for a removed subcomponent."""
    return isinstance(module, STAND_INS)


def check_ablation(name: str) -> str:
    if name not in ABLATIONS:
        raise UserError(f"unknown ablation semantics {name!r} (choose {', '.join(ABLATIONS)})")
    return name


def modulation_identity(module: nn.Module) -> torch.Tensor:
    """The output of ``module.linear`` that makes an adaLN module an identity modulation."""
    chunks, gates = MODULATION_LAYOUT[type(module).__name__]
    width = module.linear.out_features // chunks
    value = torch.zeros(chunks, width)
    for gate in gates:
        value[gate] = 1.0
    return value.flatten()


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


def model_ablation(transformer: nn.Module) -> str | None:
    """The ablation semantics ``transformer`` was pruned with: set by surgery in memory, or
    read from the config of a saved pruned model (``generation.transforms.pruned_classes``)."""
    found = getattr(transformer, "_hprune_ablation", None)
    config = getattr(transformer, "config", None)
    if found is None and isinstance(config, Mapping):
        found = config.get("ablation")
    return found


class ModelAdapter(abc.ABC):
    """One architecture family's view of a diffusion transformer."""

    family: ClassVar[str]
    transformer_class: ClassVar[str]

    def __init__(self, transformer: nn.Module, ablation: str | None = None) -> None:
        """``ablation``: what removed subcomponents compute (:data:`ABLATIONS`); default: the
        semantics the transformer was already pruned with, else ``identity``."""
        self.transformer = transformer
        pruned_with = model_ablation(transformer)
        self.ablation = check_ablation(ablation or pruned_with or DEFAULT_ABLATION)
        if pruned_with and self.ablation != pruned_with and self.has_removed_components():
            raise UserError(
                f"this model's subcomponents were removed with {pruned_with!r} ablation; "
                f"it cannot be pruned further with {self.ablation!r}"
            )

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

    def has_removed_components(self) -> bool:
        return any(removed_components(block) for block in self.block_modules())

    def removed_parts(self) -> list[Part]:
        """The structurally removed subcomponents, in block order then component order."""
        return [
            (i, c)
            for i in range(self.num_blocks)
            for c in self.all_components(i)
            if c in removed_components(self.block(i))
        ]

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
        """Replace subcomponents by parameter-free stand-ins, freeing their parameters; the
        transformer remembers the ablation semantics (one per model)."""
        parts = list(parts)
        for part in parts:
            self.check_part(part)
            if part[1] == BLOCK:
                raise ValueError("use remove_blocks for whole blocks")
        for index, component in parts:
            if component in self.components(index):
                self._replace_component(_Swaps(), index, component, structural=True)
                removed_components(self.block(index)).add(component)
                self.transformer._hprune_ablation = self.ablation

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
# streams), attn (joint attention; in SD3.5 MMDiT-X blocks with the second, image-only
# attention attn2, removed together as the reference does), ff and ff_context (the two
# feed-forward sublayers; SD3's last block has no ff_context).


def mmdit_components(block: nn.Module) -> tuple[str, ...]:
    names = ["norm1", "norm1_context", "attn", "ff"]
    if getattr(block, "ff_context", None) is not None:
        names.append("ff_context")
    return tuple(names)


def mmdit_replace(swaps: _Swaps, block: nn.Module, name: str, ablation: str) -> None:
    if name in ("norm1", "norm1_context"):
        norm = getattr(block, name)
        swaps.swap(norm, "linear", ConstantOutput(modulation_identity(norm)))
    elif name == "attn":
        stand_in = PassThroughAttention if ablation == "identity" else ZeroAttention
        swaps.swap(block, "attn", stand_in())
        if getattr(block, "attn2", None) is not None:
            swaps.swap(block, "attn2", stand_in())
    elif name in ("ff", "ff_context"):
        swaps.swap(
            block, name, PassThroughFeedForward() if ablation == "identity" else ZeroFeedForward()
        )
    else:
        raise ValueError(f"unknown subcomponent {name!r}")


def mmdit_params(block: nn.Module, name: str) -> int:
    if name in removed_components(block):
        return 0
    if name == "attn":
        return count_params(block.attn) + count_params(getattr(block, "attn2", None))
    module = getattr(block, name)
    return count_params(module.linear if name.startswith("norm") else module)
