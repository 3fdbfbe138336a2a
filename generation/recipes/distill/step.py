"""One training step, and everything it needs: PWP freezing, SGDistill weights, AdamW, accelerate.

:func:`prepare_training` freezes the preserved prefix, weights the blocks, builds the optimiser
groups and the schedule and lets accelerate wrap them; :func:`training_step` runs the teacher
(no gradients) and the student on the same x_t and text, and steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from generation.adapters.base import removed_components
from generation.adapters.encoding import TEXT_KEYS, predict_velocity
from generation.flow_matching import noisy_latents
from generation.recipes.distill.config import DistillConfig
from generation.recipes.distill.freeze import apply_freeze, frozen_blocks, parse_freeze
from generation.recipes.distill.losses import (
    BlockFeatures,
    FeatureKey,
    LossWeights,
    distillation_loss,
)
from generation.recipes.distill.pair import DistillPair, read_sensitivity
from generation.recipes.distill.prefix import SharedPrefix, shared_prefix_length
from generation.recipes.distill.sampling import draw_sigmas, noise_level_table
from generation.recipes.distill.weighting import block_weights, parameter_groups


@dataclass
class Trainee:
    """The student being trained and everything one step needs; a context manager for the feature hooks."""

    accelerator: object
    teacher: torch.nn.Module
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    trainable: list[torch.nn.Parameter]
    weights: dict[int, float]
    lambdas: LossWeights
    frozen: set[int]
    freeze_embedders: bool
    frozen_names: list[str]
    partially_frozen: int | None
    teacher_features: BlockFeatures
    student_features: BlockFeatures
    grad_clip: float
    guidance: float
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    sigma_table: torch.Tensor | None = None  # None: the unshifted draw
    shared_prefix: SharedPrefix | None = None
    shared_prefix_length: int = 0

    def __enter__(self) -> Trainee:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.teacher_features)
        self._stack.enter_context(self.student_features)
        if self.shared_prefix is not None:
            self._stack.enter_context(self.shared_prefix)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def prepare_training(pair: DistillPair, config: DistillConfig, accelerator) -> Trainee:
    """PWP freezing, SGDistill block weights, AdamW groups, the schedule, accelerate's wrapping."""
    teacher, student = pair.teacher, pair.student
    teacher.eval().requires_grad_(False)
    student.train()
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()

    plan = frozen_blocks(parse_freeze(config.freeze), pair.kept, pair.first_pruned)
    frozen, freeze_embedders = set(plan.blocks), plan.embedders
    summary = apply_freeze(student, pair.student_blocks, pair.block_list_names, plan)
    trainable_blocks = [i for i in pair.kept if i not in frozen]
    if accelerator.mixed_precision in ("bf16", "fp16"):
        store_frozen_in(
            student, torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float16
        )
    sensitivity = read_sensitivity(config.contrib, pair) if config.contrib else None
    weights = block_weights(config.weighting, trainable_blocks, sensitivity)

    groups = parameter_groups(
        pair.student_blocks, student, weights, lr=config.lr, weight_decay=config.weight_decay
    )
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    length = 0
    if config.shared_prefix:
        length = shared_prefix_length(
            pair.kept, frozen, freeze_embedders,
            {e["block"] for e in pair.student_record.removed_subcomponents},
            pair.teacher_blocks, pair.student_blocks, teacher, student, pair.block_list_names,
        )  # fmt: skip
    shared = None
    if (
        length
    ):  # the student's block `length` continues from where the teacher's block length-1 ends
        shared = SharedPrefix(
            pair.teacher_blocks[min(i for i in pair.teacher_blocks if i >= length)],
            [pair.student_blocks[i] for i in pair.kept[:length]],
            pair.student_blocks[pair.kept[length]],
        )
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None and deepspeed.is_auto("train_micro_batch_size_per_gpu"):
        # accelerate reads DeepSpeed's batch size from a prepared DataLoader; this loop has none
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    return Trainee(
        accelerator=accelerator,
        teacher=teacher,
        student=student,
        optimizer=optimizer,
        scheduler=scheduler,
        trainable=[p for p in student.parameters() if p.requires_grad],
        weights=weights,
        lambdas=LossWeights(config.lambda_out, config.lambda_feat, config.lambda_task),
        frozen=frozen,
        freeze_embedders=freeze_embedders,
        frozen_names=summary["frozen"],
        partially_frozen=plan.partial,
        teacher_features=BlockFeatures(
            feature_modules(pair.teacher_blocks, pair.student_blocks, weights, config)
        ),
        student_features=BlockFeatures(
            feature_modules(pair.student_blocks, pair.student_blocks, weights, config)
        ),
        grad_clip=config.grad_clip,
        guidance=config.guidance,
        sigma_mean=config.sigma_mean,
        sigma_std=config.sigma_std,
        sigma_table=(
            noise_level_table(pair.scheduler_config) if config.noise_levels == "scheduler" else None
        ),
        shared_prefix=shared,
        shared_prefix_length=length,
    )


def feature_modules(
    blocks: dict[int, torch.nn.Module],
    student_blocks: dict[int, torch.nn.Module],
    weights: dict[int, float],
    config: DistillConfig,
) -> dict[FeatureKey, torch.nn.Module]:
    """The modules of ``blocks`` whose outputs feature distillation compares, for the weighted
    (trainable) blocks: the blocks themselves and/or their attentions. An attention the
    student no longer has (removed) has nothing to match."""
    kinds = config.feature_kinds
    found: dict[FeatureKey, torch.nn.Module] = {}
    for index in weights:
        block = blocks[index]
        if "blocks" in kinds:
            found[index, "block"] = block
        if "attn" in removed_components(student_blocks[index]):
            continue
        for kind in ("attn", "attn2"):
            if kind in kinds and getattr(block, kind, None) is not None:
                found[index, kind] = getattr(block, kind)
    return found


def store_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep frozen parameters in the compute dtype where that is lossless; return how many were cast.

    Frozen weights are never updated, so an fp32 master copy only costs memory (11 GB for
    SD3.5-Large-Turbo's preserved prefix). A weight that bf16 cannot hold exactly stays as it is,
    so the saved model's frozen tensors remain bit-identical to the student's.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad or param.dtype == dtype or not param.is_floating_point():
            continue
        low = param.data.to(dtype)
        if torch.equal(low.to(param.dtype), param.data):
            param.data = low
            cast += 1
    return cast


def training_step(
    t: Trainee, batch: dict[str, torch.Tensor], generator: torch.Generator
) -> dict[str, float]:
    """One micro-batch: noise it, run the teacher (no gradients) and the student on the same x_t, step.

    The optimizer really steps only on the last micro-batch of an accumulation (accelerate).
    """
    device = t.accelerator.device
    x0 = batch["latents"].to(device).float()
    text = {k: batch[k].to(device) for k in TEXT_KEYS}
    sigmas = draw_sigmas(
        x0.shape[0], generator, table=t.sigma_table, mean=t.sigma_mean, std=t.sigma_std
    )
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = noisy_latents(x0, noise, sigmas)

    with torch.no_grad():
        t.teacher_features.start()
        v_teacher = predict_velocity(t.teacher, x_t, sigmas, text, guidance=t.guidance)
        teacher_features = t.teacher_features.stop()

    with t.accelerator.accumulate(t.student):
        t.student_features.start()
        v_student = predict_velocity(t.student, x_t, sigmas, text, guidance=t.guidance)
        student_features = t.student_features.stop()
        loss, terms = distillation_loss(
            v_student,
            v_teacher,
            student_features,
            teacher_features,
            t.weights,
            t.lambdas,
            x0=x0,
            x_t=x_t,
            sigmas=sigmas,
        )
        t.accelerator.backward(loss)
        if t.accelerator.sync_gradients:
            norm = t.accelerator.clip_grad_norm_(t.trainable, t.grad_clip)
            if norm is not None:  # DeepSpeed clips inside its own step and reports nothing here
                terms["grad_norm"] = float(norm)
        t.optimizer.step()
        if t.accelerator.sync_gradients:
            t.scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
    return terms
