"""Feature distillation compares each student block with the teacher block of the same ORIGINAL
index: one real training step (``prepare_training`` + ``training_step``) with λ_out = 0 and
λ_feat = 1 on an SD3.5-like toy pruned in the middle (blocks 3-4 of 8 removed, so student
block 3 is original block 5), every logged term checked against an MSE computed here from
hooks of our own on the two models.
"""

from __future__ import annotations

import copy

import pytest
import torch

from generation.adapters import get_adapter, record_for_transformer
from generation.adapters.encoding import predict_velocity
from generation.flow_matching import noisy_latents
from generation.recipes.distill.config import DistillConfig
from generation.recipes.distill.pair import make_pair
from generation.recipes.distill.sampling import draw_sigmas
from generation.recipes.distill.step import prepare_training, training_step
from generation.recipes.prune import pruned_record
from generation.store.toy_models import build_sd3_transformer, default_spec
from generation.transforms.plan import explicit_plan
from generation.transforms.surgery import apply_plan

KINDS = ("block", "attn", "attn2")


def pruned_pair():
    torch.manual_seed(0)
    teacher = build_sd3_transformer(default_spec("sd35")).eval()  # blocks 0-2 have attn2
    record = record_for_transformer(teacher)
    student = copy.deepcopy(teacher)
    adapter = get_adapter(student)
    plan = explicit_plan(adapter, "3-4", original_parameters=record.original_parameters)
    student_record = pruned_record(record, plan, apply_plan(adapter, plan), parent_fingerprint="t")
    # the student drifts from the teacher so that every feature differs, not only the shifted ones
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(1 + 0.01 * torch.randn_like(p))
    pair = make_pair(
        None, student, record, student_record, teacher_fingerprint="t", teacher=teacher
    )
    assert pair.kept == [0, 1, 2, 5, 6, 7]
    return pair


def record_outputs(modules: dict) -> tuple[dict, list]:
    outputs: dict = {}

    def hook(key):
        return lambda module, args, output: outputs.__setitem__(key, output)

    return outputs, [m.register_forward_hook(hook(k)) for k, m in modules.items()]


def modules_of(transformer, positions: dict[int, int]) -> dict:
    """(original index, kind) -> module, for the block at ``positions[original index]``."""
    found = {}
    for original, position in positions.items():
        block = transformer.transformer_blocks[position]
        found[original, "block"] = block
        for kind in ("attn", "attn2"):
            if getattr(block, kind, None) is not None:
                found[original, kind] = getattr(block, kind)
    return found


def streams_mse(a, b) -> float:
    """Sum over the streams both have of the float32 mean squared error."""
    pairs = zip(a, b, strict=True) if isinstance(a, tuple) else [(a, b)]
    return sum(
        float(((x.float() - y.float()) ** 2).mean())
        for x, y in pairs
        if x is not None and y is not None
    )


def test_one_step_logs_the_mse_against_the_teacher_block_of_the_same_original_index() -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    pair = pruned_pair()
    config = DistillConfig(
        teacher="-", student="-", data="-", out="-", steps=1, batch_size=2, freeze="none",
        lambda_out=0.0, lambda_feat=1.0, features="blocks,attn,attn2", noise_levels="unshifted",
        mixed_precision="no",
    )  # fmt: skip
    AcceleratorState._reset_state()
    trainee = prepare_training(pair, config, Accelerator(cpu=True, mixed_precision="no"))
    assert trainee.weights == dict.fromkeys(pair.kept, 1.0)

    cfg = pair.teacher.config
    g = torch.Generator().manual_seed(1)
    batch = {
        "latents": torch.randn(2, cfg.in_channels, 8, 8, generator=g),
        "prompt_embeds": torch.randn(2, 5, cfg.joint_attention_dim, generator=g),
        "pooled_prompt_embeds": torch.randn(2, cfg.pooled_projection_dim, generator=g),
    }
    # the x_t the step will draw: the same functions on the same seed
    draw = torch.Generator().manual_seed(7)
    sigmas = draw_sigmas(2, draw, table=None, mean=config.sigma_mean, std=config.sigma_std)
    x_t = noisy_latents(
        batch["latents"], torch.randn(batch["latents"].shape, generator=draw), sigmas
    )
    text = {k: batch[k] for k in ("prompt_embeds", "pooled_prompt_embeds")}

    n = pair.teacher.config.num_layers
    teacher_mods = modules_of(pair.teacher, {i: i for i in range(n)})  # unpruned: index = position
    student_mods = modules_of(pair.student, {i: pos for pos, i in enumerate(pair.kept)})
    t_out, t_handles = record_outputs(teacher_mods)
    s_out, s_handles = record_outputs(student_mods)
    with torch.no_grad():
        predict_velocity(pair.teacher, x_t, sigmas, text)
        predict_velocity(pair.student, x_t, sigmas, text)
    for handle in t_handles + s_handles:
        handle.remove()
    expected = {key: streams_mse(s_out[key], t_out[key]) for key in student_mods}
    # matching by the student's current position would compare other blocks: 5 with 3, 6 with 4
    for position, original in enumerate(pair.kept[3:], start=3):
        wrong = streams_mse(s_out[original, "block"], t_out[position, "block"])
        assert abs(wrong - expected[original, "block"]) > 0.1 * expected[original, "block"]

    with trainee:
        terms = training_step(trainee, batch, torch.Generator().manual_seed(7))

    logged = {
        key: terms[f"feature_kd/{key[0]}" + ("" if key[1] == "block" else f"/{key[1]}")]
        for key in expected
    }
    assert {k for k in terms if k.startswith("feature_kd/")} == {
        f"feature_kd/{i}" + ("" if kind == "block" else f"/{kind}") for i, kind in expected
    }
    assert {kind for _, kind in expected} == set(KINDS)  # attn2 in blocks 0-2
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-5), key
    assert terms["feature_kd"] == pytest.approx(sum(expected.values()), rel=1e-5)
    assert terms["total"] == pytest.approx(terms["feature_kd"], rel=1e-6)  # λ_out = 0
