"""PWP (Positional Weight Preservation): which parameters of a pruned student stay frozen.

HierarchicalPrune (arXiv 2508.04663) freezes every parameter before the first pruned
position: the embedders (patch, timestep/pooled-text and context embedders) and blocks
0..K−1, where K is the ORIGINAL index of the first block that lost anything (a whole block
or a subcomponent). Those blocks compute exactly what they computed in the teacher, so
training them could only drift. The rest trains, including ``norm_out`` and ``proj_out``.
For SD3.5-Large-Turbo pruned at 20% (blocks 25–28, 31–34 removed) K = 25.

When block K itself is kept and only lost subcomponents, the reference freezes everything
up to and including the first removed module in ``named_modules`` order: inside block K
only the modules after its first removed part train (for the 30% cut, ff and ff_context of
block 13 are removed, and nothing of block 13 trains). ``auto`` does the same: the
modules of block K before its first stand-in (``generation.adapters.base.STAND_INS``)
stay frozen.

``--freeze`` spells the choice:

- ``auto``: K from the student's own model record (the default, the paper's rule);
- ``K`` (an integer): the embedders and every kept block with original index < K;
- a block list such as ``0-11,14``: the embedders and exactly those original blocks;
- ``none``: nothing frozen.

All indices are original indices, as in the model record and contrib.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from generation.adapters.base import is_stand_in
from hprune.errors import UserError

HEAD_PREFIXES = ("norm_out.", "proj_out.")


@dataclass(frozen=True)
class FreezeSpec:
    """A parsed ``--freeze`` value: ``kind`` is auto, none, prefix (with ``k``) or blocks (with ``blocks``)."""

    kind: str
    k: int | None = None
    blocks: frozenset[int] = frozenset()

    def describe(self) -> str:
        if self.kind == "prefix":
            return str(self.k)
        if self.kind == "blocks":
            return ",".join(map(str, sorted(self.blocks)))
        return self.kind


def parse_freeze(text: str) -> FreezeSpec:
    """Parse ``auto``, ``none``, an integer K, or a list of indices and ranges (``0-11,14``)."""
    text = str(text).strip().lower()
    if text in ("auto", "none"):
        return FreezeSpec(text)
    if text.isdigit():
        return FreezeSpec("prefix", k=int(text))
    blocks: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        low, sep, high = item.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise UserError(
                f"--freeze {text!r} is not 'auto', 'none', a block count K or a block list like 0-11,14"
            )
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise UserError(f"--freeze range {item!r} runs backwards")
        blocks.update(range(first, last + 1))
    return FreezeSpec("blocks", blocks=frozenset(blocks))


def first_pruned_index(
    removed_blocks: Iterable[int], removed_components: Iterable[int]
) -> int | None:
    """K: the smallest original index that lost a block or a subcomponent (None if nothing was pruned)."""
    touched = set(removed_blocks) | set(removed_components)
    return min(touched) if touched else None


@dataclass(frozen=True)
class FreezePlan:
    """Kept blocks frozen whole (original indices), the block frozen up to its first removed
    part (``partial``; the reference's rule at a subcomponent cut), and the embedders."""

    blocks: frozenset[int]
    embedders: bool
    partial: int | None = None


def frozen_blocks(spec: FreezeSpec, kept: Sequence[int], first_pruned: int | None) -> FreezePlan:
    """What ``spec`` freezes of a student that keeps original blocks ``kept``."""
    kept_set = set(kept)
    if spec.kind == "none":
        return FreezePlan(frozenset(), False)
    if spec.kind == "auto":
        if first_pruned is None:
            raise UserError(
                "the student's record shows nothing pruned, so --freeze auto has no first pruned "
                "position; pass --freeze K, a block list, or none"
            )
        partial = first_pruned if first_pruned in kept_set else None
        return FreezePlan(frozenset(i for i in kept_set if i < first_pruned), True, partial)
    if spec.kind == "prefix":
        return FreezePlan(frozenset(i for i in kept_set if i < spec.k), True)
    missing = sorted(spec.blocks - kept_set)
    if missing:
        raise UserError(
            f"--freeze names block(s) {missing} that the student does not have (it kept {_ranges(kept)})"
        )
    return FreezePlan(frozenset(spec.blocks), True)


def before_first_removed_part(block: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``block``'s modules that come before its first removed part, in
    ``named_modules`` order (the stand-in is where the reference's identity module sits)."""
    params: list[nn.Parameter] = []
    for module in block.modules():
        if is_stand_in(module):
            return params
        params += list(module.parameters(recurse=False))
    return params


def apply_freeze(
    transformer: nn.Module,
    blocks: Mapping[int, nn.Module],
    block_list_names: Sequence[str],
    plan: FreezePlan,
) -> dict[str, list[str]]:
    """Set ``requires_grad`` on every parameter; return the frozen and trainable parameter names.

    ``blocks`` maps original index -> block module. Parameters outside the block lists are
    the output head (``norm_out``, ``proj_out``: always trainable) or embedders.
    """
    frozen_ids = {id(p) for i in plan.blocks for p in blocks[i].parameters()}
    if plan.partial is not None:
        frozen_ids |= {id(p) for p in before_first_removed_part(blocks[plan.partial])}
    freeze_embedders = plan.embedders
    block_prefixes = tuple(f"{name}." for name in block_list_names)
    summary: dict[str, list[str]] = {"frozen": [], "trainable": []}
    for name, param in transformer.named_parameters():
        if name.startswith(block_prefixes):
            freeze = id(param) in frozen_ids
        elif name.startswith(HEAD_PREFIXES):
            freeze = False
        else:
            freeze = freeze_embedders
        param.requires_grad_(not freeze)
        summary["frozen" if freeze else "trainable"].append(name)
    if not summary["trainable"]:
        raise UserError("--freeze leaves nothing to train")
    return summary


def _ranges(indices: Sequence[int]) -> str:
    """``[0,1,2,5,7,8]`` -> ``0-2,5,7-8``."""
    out, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
