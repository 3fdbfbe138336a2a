"""Per-block weights w_i for SGDistill, and the optimiser groups that make them scale each block's update.

Two schemes (HierarchicalPrune, arXiv 2508.04663, "Sensitivity-Guided Distillation"):

- ``binary`` (the reference code): w_i = 1 for every trainable block; frozen blocks (PWP)
  are simply not trained.
- ``inverse``: w_i ∝ 1/ΔP_i, where ΔP_i is block i's sensitivity, the score drop
  measured by the contribution analysis when block i alone is removed. The most sensitive
  blocks get the smallest updates. Weights are normalised so that the least sensitive
  trainable block has w = 1, the binary reference's value, and no block is updated faster
  than the reference recipe would. ΔP_i at or below zero (removal did not hurt) and tiny
  ΔP_i are raised to ``floor_fraction`` × the largest ΔP, so one near-zero drop cannot
  shrink every other weight to nothing.

The weight scales block i's update, not only its feature loss: with Adam an update is
invariant to the gradient's scale, so a scaled loss or gradient would barely change it.
Each block therefore gets its own optimiser group with learning rate w_i × lr (and its
feature-KD term is weighted by w_i too). Parameters outside the blocks (norm_out, proj_out,
any unfrozen embedder) train at the base rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from hprune.errors import UserError

SCHEMES = ("binary", "inverse")


def binary_weights(trainable_blocks: Iterable[int]) -> dict[int, float]:
    """w_i = 1 for each trainable block (by original index)."""
    return {i: 1.0 for i in trainable_blocks}


def inverse_weights(
    sensitivity: Mapping[int, float],
    trainable_blocks: Sequence[int],
    *,
    floor_fraction: float = 0.01,
) -> dict[int, float]:
    """w_i = min_j(d_j) / d_i with d_i = max(ΔP_i, floor_fraction · max_j ΔP_j), over the trainable blocks.

    ``sensitivity`` maps original block index -> ΔP (score drop when the block is removed).
    If no trainable block has a positive ΔP, every block gets 1 (nothing to tell them apart).
    """
    if not 0 < floor_fraction <= 1:
        raise ValueError(f"floor_fraction must be in (0, 1], got {floor_fraction}")
    missing = [i for i in trainable_blocks if i not in sensitivity]
    if missing:
        raise UserError(
            f"the contribution analysis has no block score for original block(s) {missing}; "
            "was it run on the teacher model?"
        )
    drops = {i: float(sensitivity[i]) for i in trainable_blocks}
    largest = max(drops.values(), default=0.0)
    if largest <= 0:
        return binary_weights(trainable_blocks)
    floor = floor_fraction * largest
    clipped = {i: max(d, floor) for i, d in drops.items()}
    smallest = min(clipped.values())
    return {i: smallest / d for i, d in clipped.items()}


def block_weights(
    scheme: str,
    trainable_blocks: Sequence[int],
    sensitivity: Mapping[int, float] | None = None,
    **options,
) -> dict[int, float]:
    """The weights of ``scheme`` (``binary`` or ``inverse``; inverse needs ``sensitivity``)."""
    if scheme == "binary":
        return binary_weights(trainable_blocks)
    if scheme == "inverse":
        if sensitivity is None:
            raise UserError(
                "--weighting inverse needs --contrib contrib.json (block sensitivities)"
            )
        return inverse_weights(sensitivity, trainable_blocks, **options)
    raise UserError(f"unknown weighting {scheme!r}; choose one of {', '.join(SCHEMES)}")


def parameter_groups(
    blocks: Mapping[int, nn.Module],
    model: nn.Module,
    weights: Mapping[int, float],
    *,
    lr: float,
    weight_decay: float,
) -> list[dict]:
    """AdamW groups: one per weighted block at lr × w_i, one for every other trainable parameter at lr.

    Only parameters with ``requires_grad`` are included; a block whose parameters are all
    frozen contributes no group. Each group carries ``name`` and ``weight`` for logging.
    """
    in_blocks: set[int] = set()
    groups = []
    for index, block in blocks.items():
        params = [p for p in block.parameters() if p.requires_grad]
        in_blocks.update(id(p) for p in block.parameters())
        if not params:
            continue
        w = float(weights.get(index, 1.0))
        groups.append(
            {
                "params": params,
                "lr": lr * w,
                "weight_decay": weight_decay,
                "name": f"block{index}",
                "weight": w,
            }
        )
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_blocks]
    if rest:
        groups.append(
            {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "other", "weight": 1.0}
        )
    return groups
