"""Rectified-flow noising as SD3 and FLUX are trained with it.

Small pure functions over tensors, shared by distillation (``generation.recipes.distill``)
and by the mini world's teacher training.

The forward process interpolates linearly between data and noise (Esser et al.,
"Scaling Rectified Flow Transformers for High-Resolution Image Synthesis", 2024,
arXiv 2403.03206)::

    x_t = σ·ε + (1 − σ)·x0,        ε ~ N(0, I),  σ ∈ (0, 1)

and the network predicts the velocity ``dx_t/dσ = ε − x0``. Training samples σ from a
logit-normal distribution, σ = sigmoid(u) with u ~ N(m, s²), which puts most of the
weight on intermediate noise levels (the paper's best setting is m=0, s=1).

SD3's training scripts (diffusers' ``train_dreambooth_sd3``, and HierarchicalPrune's
reference distillation) draw u that way but use it as a position in the scheduler's own
table of T noise levels, which is resolution-shifted (:func:`shift_sigmas`, SD3.x shift
3.0): σ = table[⌊u·T⌋] (:func:`table_sigmas`). With shift s the median σ is then
s/(1+s) = 0.75 for s = 3, not 0.5.
"""

from __future__ import annotations

import torch


def sample_sigmas(
    batch: int, generator: torch.Generator | None = None, *, mean: float = 0.0, std: float = 1.0
) -> torch.Tensor:
    """Draw ``batch`` noise levels σ = sigmoid(u), u ~ N(mean, std²) (logit-normal), as float32 on CPU.

    Drawing on the CPU from an explicit generator keeps the sequence identical on every
    device and across a resume; move the result where it is needed.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    u = torch.randn(batch, generator=generator, dtype=torch.float32) * std + mean
    return torch.sigmoid(u)


def table_sigmas(u: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """σ = table[⌊u·T⌋] for u in [0, 1): a scheduler's own table of T noise levels (noisiest
    first, as diffusers' ``FlowMatchEulerDiscreteScheduler.sigmas``), indexed as SD3's training
    scripts index it. u near 0 picks σ near 1; the map follows the table's shift."""
    if table.ndim != 1 or table.numel() < 1:
        raise ValueError("the noise-level table must be a non-empty 1-D tensor")
    index = (u * table.numel()).long().clamp(0, table.numel() - 1)
    return table.to(torch.float32)[index]


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Resolution-dependent timestep shift: σ' = shift·σ / (1 + (shift − 1)·σ).

    The same map as diffusers' ``FlowMatchEulerDiscreteScheduler(shift=...)``; shift=1 is
    the identity, shift>1 moves the mass towards noisier levels (SD3 uses 3.0 for 1024²).
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _broadcast(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample σ of shape (B,) to (B, 1, ..., 1) in ``like``'s dtype and device."""
    if sigmas.ndim != 1 or sigmas.shape[0] != like.shape[0]:
        raise ValueError(
            f"sigmas must have shape ({like.shape[0]},), one per sample, got {tuple(sigmas.shape)}"
        )
    return sigmas.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_t = σ·ε + (1 − σ)·x0, with one σ per sample broadcast over the other dimensions."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ in shape")
    s = _broadcast(sigmas, x0)
    return s * noise + (1 - s) * x0


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ε − x0 (what SD3 and FLUX transformers predict)."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ in shape")
    return noise - x0


def denoised_from_velocity(
    x_t: torch.Tensor, velocity: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """Recover the clean estimate x0 = x_t − σ·v (exact when v = ε − x0)."""
    return x_t - _broadcast(sigmas, x_t) * velocity


def timesteps_from_sigmas(sigmas: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The ``timestep`` SD3's transformer expects: σ·T (diffusers' scheduler convention, T=1000).

    FLUX's transformer takes σ itself (its pipeline divides by 1000 and the model multiplies
    back); adapters decide which one to pass.
    """
    return sigmas * num_train_timesteps


def flow_matching_loss(
    prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Mean squared error between a velocity prediction and ε − x0, computed in float32."""
    target = velocity_target(x0, noise)
    return torch.mean((prediction.float() - target.float()) ** 2)
