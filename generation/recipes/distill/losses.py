"""SGDistill's loss: output distillation, feature distillation, and an optional task loss.

    L = λ_out · ‖v_s − v_t‖²  +  λ_feat · Σ_i w_i · Σ_f ‖f_i^s − f_i^t‖²  +  λ_task · ‖x̂0_s − x0‖²

v are the transformers' velocity predictions for the same x_t and text embeddings. The
features f_i of block i are, as chosen (``--features``), its outputs (``block``: the
image-stream ``hidden_states`` and the text-stream ``encoder_hidden_states``, the reference's
LFImg and LFCond), the outputs of its joint attention (``attn``: image and text stream, the
reference's SA and CA) and of SD3.5's second attention (``attn2``, SA2). i is the ORIGINAL
block index: student block j is compared with the teacher block that had the same index
before pruning. ‖·‖² is the mean squared error, in float32. The task term is the
flow-matching loss in x0 space, as the reference computes it: x̂0_s = x_t − σ·v_s against
the clean latents (= σ² times the velocity-space error). The reference recipe for
SD3.5-Large-Turbo uses λ_out=1, λ_feat=1e-4, λ_task=0 (HierarchicalPrune, arXiv 2508.04663).

Features are taken by forward hooks, so the diffusers models run unmodified. Every diffusers
MMDiT block (SD3 joint, FLUX double and single) returns ``(encoder_hidden_states,
hidden_states)``; SD3's last block returns ``None`` for the text stream, which then simply
does not count; an attention returns a tensor or a tuple of streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from generation.flow_matching import denoised_from_velocity

#: (original block index, what is recorded: "block", "attn" or "attn2")
FeatureKey = tuple[int, str]
Output = torch.Tensor | tuple[torch.Tensor | None, ...]


@dataclass(frozen=True)
class LossWeights:
    """The λ of each term (the defaults are the reference recipe's)."""

    output: float = 1.0
    feature: float = 1e-4
    task: float = 0.0


class BlockFeatures:
    """Record the outputs of chosen modules (blocks or their attentions) during one forward
    pass, keyed by :data:`FeatureKey`.

    Use as a context manager around the model's lifetime; call ``start()`` before a forward
    and ``stop()`` right after it. Recording is off outside that window, so the re-computation
    that gradient checkpointing runs during ``backward()`` does not overwrite what was kept.
    """

    def __init__(self, modules: Mapping[FeatureKey, nn.Module]) -> None:
        self.modules = dict(modules)
        self.outputs: dict[FeatureKey, Output] = {}
        self._recording = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BlockFeatures:
        for key, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(key)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def start(self) -> None:
        self.outputs = {}
        self._recording = True

    def stop(self) -> dict[FeatureKey, Output]:
        self._recording = False
        return self.outputs

    def _hook(self, key: FeatureKey):
        def record(module: nn.Module, args, output) -> None:
            if not self._recording:
                return
            if key[1] == "block" and not (isinstance(output, tuple) and len(output) == 2):
                raise TypeError(
                    f"block {key[0]} ({type(module).__name__}) returned {type(output).__name__}; "
                    "expected (encoder_hidden_states, hidden_states)"
                )
            self.outputs[key] = output

        return record


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (bf16 squares lose too much precision to compare small gaps)."""
    return torch.mean((a.float() - b.float()) ** 2)


def feature_losses(
    student: Mapping[FeatureKey, Output], teacher: Mapping[FeatureKey, Output]
) -> dict[FeatureKey, torch.Tensor]:
    """Per feature: the sum over its streams (a tensor is one stream) of the MSE, where both exist."""
    losses = {}
    for key, s_out in student.items():
        if key not in teacher:
            raise KeyError(
                f"the teacher has no recorded {key[1]} output for original block {key[0]}"
            )
        t_out = teacher[key]
        pairs = zip(s_out, t_out, strict=True) if isinstance(s_out, tuple) else [(s_out, t_out)]
        terms = [mse(s, t) for s, t in pairs if s is not None and t is not None]
        losses[key] = sum(terms[1:], terms[0])
    return losses


def task_loss(
    student_velocity: torch.Tensor, x_t: torch.Tensor, sigmas: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """The flow-matching loss in x0 space, as the reference computes it: ‖(x_t − σ·v_s) − x0‖²."""
    return mse(denoised_from_velocity(x_t, student_velocity, sigmas), x0)


def distillation_loss(
    student_velocity: torch.Tensor,
    teacher_velocity: torch.Tensor,
    student_features: Mapping[FeatureKey, Output],
    teacher_features: Mapping[FeatureKey, Output],
    block_weights: Mapping[int, float],
    lambdas: LossWeights,
    *,
    x0: torch.Tensor | None = None,
    x_t: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss to back-propagate and each term's value for logging.

    ``block_weights`` holds w_i for the blocks whose features count (the kept, trainable ones);
    recorded features of blocks without a weight are ignored. ``x0``, ``x_t`` and ``sigmas``
    are needed only when ``lambdas.task`` is non-zero.
    """
    out = mse(student_velocity, teacher_velocity)
    total = lambdas.output * out
    terms = {"output_kd": out.item()}

    per_feature = feature_losses(
        {k: f for k, f in student_features.items() if k[0] in block_weights}, teacher_features
    )
    if per_feature:
        feat = sum(block_weights[key[0]] * loss for key, loss in per_feature.items())
        total = total + lambdas.feature * feat
        terms["feature_kd"] = float(feat.item())
        terms.update(
            {
                f"feature_kd/{i}" + ("" if kind == "block" else f"/{kind}"): loss.item()
                for (i, kind), loss in sorted(per_feature.items())
            }
        )

    if lambdas.task:
        if x0 is None or x_t is None or sigmas is None:
            raise ValueError("the task term needs x0, x_t and sigmas")
        task = task_loss(student_velocity, x_t, sigmas, x0)
        total = total + lambdas.task * task
        terms["task_x0"] = task.item()
    terms["total"] = total.item()
    return total, terms
