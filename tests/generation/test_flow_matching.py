"""The rectified-flow helpers match their formulas and diffusers' conventions."""

from __future__ import annotations

import pytest
import torch

from generation import flow_matching as fm


def test_sigmas_are_logit_normal_and_reproducible() -> None:
    a = fm.sample_sigmas(20000, torch.Generator().manual_seed(0), mean=0.5, std=0.8)
    b = fm.sample_sigmas(20000, torch.Generator().manual_seed(0), mean=0.5, std=0.8)
    assert torch.equal(a, b)
    assert a.dtype == torch.float32 and a.shape == (20000,)
    assert bool(((a > 0) & (a < 1)).all())
    logits = torch.logit(a.double())
    assert abs(logits.mean().item() - 0.5) < 0.03
    assert abs(logits.std().item() - 0.8) < 0.03
    c = fm.sample_sigmas(5, torch.Generator().manual_seed(1))
    assert not torch.equal(a[:5], c)


@pytest.mark.parametrize("bad", [{"batch": 0}, {"batch": 2, "std": 0.0}])
def test_sigmas_reject_bad_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        fm.sample_sigmas(bad.pop("batch"), None, **bad)


def test_noisy_latents_interpolate_and_velocity_is_the_derivative() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g)
    noise = torch.randn(3, 4, 8, 8, generator=g)
    ends = fm.noisy_latents(x0, noise, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(ends[0], x0[0])
    assert torch.equal(ends[1], noise[1])
    assert torch.allclose(ends[2], 0.25 * noise[2] + 0.75 * x0[2])

    sigmas = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    x_t = fm.noisy_latents(x0, noise, sigmas)
    # d x_t / d sigma summed against a random probe equals <probe, eps - x0> per sample.
    probe = torch.randn(x_t.shape, generator=g)
    (grad,) = torch.autograd.grad((x_t * probe).sum(), sigmas)
    expected = (probe * fm.velocity_target(x0, noise)).flatten(1).sum(1)
    assert torch.allclose(grad, expected, atol=1e-4)

    recovered = fm.denoised_from_velocity(x_t.detach(), fm.velocity_target(x0, noise), sigmas)
    assert torch.allclose(recovered.detach(), x0, atol=1e-5)


def test_shapes_are_checked() -> None:
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="one per sample"):
        fm.noisy_latents(x0, x0, torch.zeros(3))
    with pytest.raises(ValueError, match="differ in shape"):
        fm.velocity_target(x0, torch.zeros(2, 4))


def test_shift_matches_diffusers_scheduler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    plain = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    assert torch.allclose(fm.shift_sigmas(plain.sigmas, 3.0), shifted.sigmas, atol=1e-6)
    assert torch.allclose(fm.shift_sigmas(plain.sigmas, 1.0), plain.sigmas)
    assert torch.allclose(fm.timesteps_from_sigmas(plain.sigmas), plain.timesteps, atol=1e-3)


def test_loss_is_zero_at_the_target_and_float32() -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    target = fm.velocity_target(x0, noise)
    assert fm.flow_matching_loss(target, x0, noise).item() == 0.0
    loss = fm.flow_matching_loss(target.bfloat16() + 1, x0, noise)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.0, abs=0.02)
