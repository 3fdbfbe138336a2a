"""The distillation run behind ``hprune distill``: PWP freezing plus SGDistill, on accelerate.

Read ``distill`` top to bottom: load the teacher and the pruned student, freeze the preserved
prefix, weight the blocks, encode the data once, build AdamW, restore a checkpoint if asked,
then the loop (same x_t and text for both models, teacher without gradients, student's loss,
clip, step), then save the student as a normal self-describing pruned model.

One GPU, several GPUs (DDP) and DeepSpeed ZeRO-2 are a launch choice, not code:
``accelerate launch [--multi_gpu | --use_deepspeed --zero_stage 2] -m hprune.cli distill ...``.

Exact resume. Everything random in a step (which samples, σ, ε) is a pure function of
(seed, step, micro-batch slot), so the data position is the step counter itself, and N
processes draw what one process with N accumulation steps draws.
accelerate's ``save_state`` keeps the student, AdamW's moments, the scheduler and the RNG
states; ``progress.json`` beside it keeps the step. A run resumed from step k therefore
computes bit for bit what an uninterrupted run computes (on deterministic hardware, e.g.
the CPU). SIGINT/SIGTERM stop at the next step boundary with a checkpoint, so a pre-empted
job loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

from generation.recipes.distill import cache as cache_mod
from generation.recipes.distill.checkpoints import (
    RunLog,
    StopRequest,
    check_resume,
    check_same_inputs,
    checkpoint_path,
    pending_losses,
    save_checkpoint,
)
from generation.recipes.distill.config import DistillConfig, DistillResult
from generation.recipes.distill.data import ImagePolicy, dataset_fingerprint, read_captioned_images
from generation.recipes.distill.freeze import parse_freeze
from generation.recipes.distill.pair import load_pair, save_student
from generation.recipes.distill.sampling import sample_indices, step_seed
from generation.recipes.distill.step import prepare_training, training_step
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir, atomic_write_text


def distill(config: DistillConfig) -> DistillResult:
    """Run (or resume) one distillation; write ``config.out`` when ``config.steps`` are done."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    ckpt_root = config.checkpoints
    start = check_resume(config, ckpt_root)
    pairs = read_captioned_images(config.data)  # cheap, so bad data fails before models load
    data_fingerprint = dataset_fingerprint(pairs)

    mixed_precision = config.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    # A run owns accelerate's process-wide settings (mixed precision): forget an earlier run's,
    # so that several runs can share one process (a notebook, the tests); the process group stays.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # CPU processes (gloo) under torchrun/accelerate launch
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
    )
    set_seed(config.seed)
    device = accelerator.device
    teacher_dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float32

    # --- the two models ------------------------------------------------------------------
    pair = load_pair(config.teacher, config.student, device=device, teacher_dtype=teacher_dtype)

    # --- PWP and SGDistill: what trains, how fast, against what ----------------------------
    trainee = prepare_training(pair, config, accelerator)
    lambdas, weights = trainee.lambdas, trainee.weights

    # --- data: encoded once (or live), addressed by a stateless sample stream -------------
    policy = ImagePolicy(config.resolution or pair.default_resolution)
    max_len = config.max_sequence_length or pair.default_max_sequence_length
    source = _data_source(config, pair, pairs, data_fingerprint, policy, max_len, accelerator)
    if not config.no_cache:
        pair.drop_encoders()  # text encoders and VAE are no longer needed in memory

    run_log = RunLog(ckpt_root, accelerator.is_main_process)
    if start:
        check_same_inputs(run_log.config, pair.teacher_fingerprint, data_fingerprint)
        accelerator.load_state(str(checkpoint_path(ckpt_root, start)))
    if accelerator.is_main_process:
        run_log.write_config(
            config,
            start,
            extra={
                "image_policy": policy.describe(),
                "max_sequence_length": max_len,
                "dataset": {
                    "source": str(config.data),
                    "images": len(pairs),
                    "fingerprint": data_fingerprint,
                },
                "mixed_precision": accelerator.mixed_precision,
                "num_processes": accelerator.num_processes,
                "first_pruned": pair.first_pruned,
                "frozen_blocks": sorted(trainee.frozen),
                "frozen_up_to_first_removed_part": trainee.partially_frozen,
                "noise_levels": config.noise_levels,
                "noise_level_median": (
                    None if trainee.sigma_table is None else float(trainee.sigma_table.median())
                ),
                "features": list(config.feature_kinds),
                "frozen_embedders": trainee.freeze_embedders,
                "shared_prefix_blocks": trainee.shared_prefix_length,
                "trainable_parameters": sum(p.numel() for p in trainee.trainable),
                "frozen_parameter_names": trainee.frozen_names,
                "block_weights": {str(i): w for i, w in weights.items()},
                "teacher_fingerprint": pair.teacher_fingerprint,
            },
        )

    # --- the loop -------------------------------------------------------------------------
    end = min(config.steps, config.stop_after) if config.stop_after else config.steps
    per_step = config.batch_size * config.grad_accum * accelerator.num_processes
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc="distill",
        unit="step",
        disable=not (config.show_progress and accelerator.is_main_process),
    )
    window = pending_losses(ckpt_root, start)  # a resumed run finishes the interrupted log window
    step = start
    with trainee, StopRequest() as stop:
        while step < end and not stop.requested:
            for micro in range(config.grad_accum):
                slot = micro * accelerator.num_processes + accelerator.process_index
                indices = sample_indices(
                    config.seed,
                    len(source),
                    step * per_step + slot * config.batch_size,
                    config.batch_size,
                )
                generator = torch.Generator().manual_seed(step_seed(config.seed, step, slot))
                window.append(training_step(trainee, source.batch(indices), generator))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]['total']:.4g}", out=f"{window[-1]['output_kd']:.4g}")
            if step % config.log_every == 0 or step == config.steps:
                run_log.append_losses(step, window)
                window = []
            if (
                step % config.checkpoint_every == 0
                or (step == end < config.steps)
                or stop.requested
            ):
                save_checkpoint(accelerator, ckpt_root, step, config.keep_checkpoints, window)
    bar.close()
    student = trainee.student

    if step < config.steps:
        accelerator.wait_for_everyone()
        return DistillResult(
            None, step, run_log.history, stop.requested, accelerator.is_main_process
        )

    # --- the result: a normal self-describing pruned model --------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(student)
        entry = {
            "stage": "distill",
            "teacher_fingerprint": pair.teacher_fingerprint,
            "steps": config.steps,
            "freeze": parse_freeze(config.freeze).describe(),
            "frozen_blocks": sorted(trainee.frozen),
            "frozen_up_to_first_removed_part": trainee.partially_frozen,
            "noise_levels": config.noise_levels,
            "features": list(config.feature_kinds),
            "weighting": config.weighting,
            "block_weights": {str(i): w for i, w in weights.items()},
            "lambdas": dataclasses.asdict(lambdas),
            "lr": config.lr,
            "batch_size_global": per_step,
            "dataset_fingerprint": data_fingerprint,
            "image_policy": policy.describe(),
            "seed": config.seed,
            "final_losses": run_log.history[-1] if run_log.history else {},
        }
        with atomic_output_dir(out, overwrite=config.overwrite) as tmp:
            save_student(pair, final, tmp, entry)
            atomic_write_text(tmp / "distill_log.json", json.dumps(run_log.as_dict(), indent=1))
        if config.checkpoint_dir is None:
            # The default checkpoints only serve to finish this run: OUT now holds the result.
            shutil.rmtree(ckpt_root, ignore_errors=True)
    accelerator.wait_for_everyone()
    return DistillResult(out, step, run_log.history, False, accelerator.is_main_process)


# --- data ---------------------------------------------------------------------------------


def _data_source(config, pair, pairs, data_fingerprint, policy, max_len, accelerator):
    """The encoded data: the latent cache (the encoders are loaded only to build it), or live."""
    if config.no_cache:
        pair.load_encoders()
        return cache_mod.LiveEncoder(pair.teacher_pipe, pairs, policy, max_sequence_length=max_len)
    root = Path(config.cache_dir) if config.cache_dir else default_cache_root()
    key = cache_mod.cache_key(
        pair.teacher_pipe,
        pair.teacher_dir,
        data_fingerprint,
        policy,
        max_sequence_length=max_len,
    )
    with accelerator.main_process_first():
        if not cache_mod.is_built(root, key):
            pair.load_encoders()
        return cache_mod.build_cache(
            pair.teacher_pipe,
            pairs,
            policy,
            root,
            key,
            show_progress=config.show_progress and accelerator.is_main_process,
        )


def default_cache_root() -> Path:
    """``$HPRUNE_CACHE_DIR/distill``, else ``$XDG_CACHE_HOME/hprune/distill``, else ``~/.cache/hprune/distill``."""
    if os.environ.get("HPRUNE_CACHE_DIR"):
        return Path(os.environ["HPRUNE_CACHE_DIR"]) / "distill"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hprune" / "distill"
