"""SGDistill's loss: output distillation, per-block feature distillation, and optional flow matching.

    L = λ_out · ‖v_s − v_t‖²  +  λ_feat · Σ_i w_i · (‖h_i^s − h_i^t‖² + ‖c_i^s − c_i^t‖²)  +  λ_task · ‖v_s − (ε − x0)‖²

v are the transformers' velocity predictions for the same x_t and text embeddings; h_i and c_i
are the image-stream (``hidden_states``) and text-stream (``encoder_hidden_states``) outputs of
block i, where i is the ORIGINAL block index: student block j is compared with the teacher
block that had the same index before pruning. ‖·‖² is the mean squared error, in float32.
The reference recipe for SD3.5-Large-Turbo uses λ_out=1, λ_feat=1e-4, λ_task=0
(HierarchicalPrune, arXiv 2508.04663).

Block outputs are taken by forward hooks, so the diffusers models run unmodified.
Every diffusers MMDiT block (SD3 joint, FLUX double and single) returns
``(encoder_hidden_states, hidden_states)``; SD3's last block returns ``None`` for the text
stream, which then simply does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from generation.flow_matching import flow_matching_loss

BlockOutput = tuple[torch.Tensor | None, torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    """The λ of each term (the defaults are the reference recipe's)."""

    output: float = 1.0
    feature: float = 1e-4
    task: float = 0.0


class BlockFeatures:
    """Record the outputs of chosen blocks during one forward pass, keyed by original index.

    Use as a context manager around the model's lifetime; call ``start()`` before a forward
    and ``stop()`` right after it. Recording is off outside that window, so the re-computation
    that gradient checkpointing runs during ``backward()`` does not overwrite what was kept.
    """

    def __init__(self, blocks: Mapping[int, nn.Module]) -> None:
        self.blocks = dict(blocks)
        self.outputs: dict[int, BlockOutput] = {}
        self._recording = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BlockFeatures:
        for index, block in self.blocks.items():
            self._handles.append(block.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def start(self) -> None:
        self.outputs = {}
        self._recording = True

    def stop(self) -> dict[int, BlockOutput]:
        self._recording = False
        return self.outputs

    def _hook(self, index: int):
        def record(module: nn.Module, args, output) -> None:
            if not self._recording:
                return
            if not (isinstance(output, tuple) and len(output) == 2):
                raise TypeError(
                    f"block {index} ({type(module).__name__}) returned {type(output).__name__}; "
                    "expected (encoder_hidden_states, hidden_states)"
                )
            self.outputs[index] = output

        return record


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (bf16 squares lose too much precision to compare small gaps)."""
    return torch.mean((a.float() - b.float()) ** 2)


def feature_losses(
    student: Mapping[int, BlockOutput], teacher: Mapping[int, BlockOutput]
) -> dict[int, torch.Tensor]:
    """Per original block index: MSE of the image stream plus MSE of the text stream where both exist."""
    losses = {}
    for index, (s_context, s_hidden) in student.items():
        if index not in teacher:
            raise KeyError(f"the teacher has no recorded output for original block {index}")
        t_context, t_hidden = teacher[index]
        loss = mse(s_hidden, t_hidden)
        if s_context is not None and t_context is not None:
            loss = loss + mse(s_context, t_context)
        losses[index] = loss
    return losses


def distillation_loss(
    student_velocity: torch.Tensor,
    teacher_velocity: torch.Tensor,
    student_features: Mapping[int, BlockOutput],
    teacher_features: Mapping[int, BlockOutput],
    block_weights: Mapping[int, float],
    lambdas: LossWeights,
    *,
    x0: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss to back-propagate and each term's value for logging.

    ``block_weights`` holds w_i for the blocks whose features count (the kept, trainable ones);
    recorded blocks without a weight are ignored. ``x0`` and ``noise`` are needed only when
    ``lambdas.task`` is non-zero.
    """
    out = mse(student_velocity, teacher_velocity)
    total = lambdas.output * out
    terms = {"output_kd": out.item()}

    per_block = feature_losses(
        {i: f for i, f in student_features.items() if i in block_weights}, teacher_features
    )
    if per_block:
        feat = sum(block_weights[i] * loss for i, loss in per_block.items())
        total = total + lambdas.feature * feat
        terms["feature_kd"] = float(feat.item())
        terms.update({f"feature_kd/{i}": loss.item() for i, loss in sorted(per_block.items())})

    if lambdas.task:
        if x0 is None or noise is None:
            raise ValueError("the flow-matching term needs x0 and noise")
        task = flow_matching_loss(student_velocity, x0, noise)
        total = total + lambdas.task * task
        terms["task_fm"] = task.item()
    terms["total"] = total.item()
    return total, terms
