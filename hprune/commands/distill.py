"""``hprune distill``: recover a pruned student from its teacher (PWP + SGDistill)."""

from __future__ import annotations

import click

from hprune.commands.options import overwrite_option


@click.command("distill")
@click.option(
    "--teacher",
    required=True,
    type=click.Path(),
    help="The unpruned model folder the student was pruned from.",
)
@click.option(
    "--student",
    required=True,
    type=click.Path(),
    help="The pruned model folder ('hprune prune' output).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="Captioned images: a folder of images with .txt/.json caption sidecars, a folder with "
    "metadata.csv/.jsonl/.parquet, or a CSV/Parquet listing (columns file_name and caption).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Output model folder (written whole, at the end).",
)
@click.option("--steps", required=True, type=int, help="Optimiser steps in total.")
@click.option(
    "--freeze",
    default="auto",
    show_default=True,
    help="PWP: 'auto' (embedders + blocks before the first pruned original index, from the "
    "student's record), K (embedders + original blocks < K), a block list like 0-11,14, or 'none'.",
)
@click.option(
    "--weighting",
    type=click.Choice(["binary", "inverse"]),
    default="binary",
    show_default=True,
    help="Per-block weights: binary (reference) or inverse (w ∝ 1/ΔP; needs --contrib).",
)
@click.option(
    "--contrib",
    type=click.Path(),
    default=None,
    help="contrib.json of the teacher (for --weighting inverse).",
)
@click.option(
    "--batch-size",
    type=int,
    default=4,
    show_default=True,
    help="Samples per process per micro-batch.",
)
@click.option(
    "--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimiser step."
)
@click.option(
    "--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate (constant)."
)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="Gradient-norm clip.")
@click.option(
    "--warmup-steps",
    type=int,
    default=0,
    show_default=True,
    help="Linear warm-up (0: constant lr).",
)
@click.option(
    "--lambda-out", type=float, default=1.0, show_default=True, help="Weight of the output KD term."
)
@click.option(
    "--lambda-feat",
    type=float,
    default=1e-4,
    show_default=True,
    help="Weight of the feature KD term.",
)
@click.option(
    "--lambda-task",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight of the task term (flow matching in x0 space, as the reference).",
)
@click.option(
    "--noise-levels",
    type=click.Choice(["scheduler", "unshifted"]),
    default="scheduler",
    show_default=True,
    help="scheduler: u ~ logit-normal picks sigma from the teacher scheduler's own (shifted: "
    "SD3.x shift 3) table, as the reference does; unshifted: sigma = u.",
)
@click.option(
    "--features",
    default="blocks",
    show_default=True,
    help="What feature distillation matches, comma-separated: blocks (block outputs, both "
    "streams), attn (joint-attention outputs, image and text), attn2 (SD3.5's second attention).",
)
@click.option(
    "--resolution",
    type=int,
    default=None,
    help="Training image size in pixels [default: the model's].",
)
@click.option(
    "--max-sequence-length", type=int, default=None, help="T5 tokens [default: 256 SD3, 512 FLUX]."
)
@click.option(
    "--guidance",
    type=float,
    default=3.5,
    show_default=True,
    help="Guidance value for FLUX-dev-style models.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--mixed-precision",
    type=click.Choice(["auto", "no", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on a GPU, fp32 on the CPU.",
)
@click.option(
    "--gradient-checkpointing",
    is_flag=True,
    help="Recompute activations in backward to save memory.",
)
@click.option(
    "--shared-prefix/--no-shared-prefix",
    default=True,
    show_default=True,
    help="Let the student's frozen prefix reuse the teacher's activations (exact; skips recomputing it).",
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=500,
    show_default=True,
    help="Save the training state every N steps.",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(),
    default=None,
    help="Where the training state goes [default: OUT.checkpoints, removed once OUT is written].",
)
@click.option(
    "--keep-checkpoints",
    type=int,
    default=1,
    show_default=True,
    help="How many of the newest checkpoints to keep.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the newest checkpoint (exactly: optimiser, schedule, RNG, data position).",
)
@click.option(
    "--stop-after",
    type=int,
    default=None,
    help="Stop (with a checkpoint) once this step is reached, without writing OUT.",
)
@click.option(
    "--cache-dir",
    type=click.Path(),
    default=None,
    help="Where encoded latents and text embeddings are kept [default: $HPRUNE_CACHE_DIR/distill or ~/.cache/hprune/distill].",
)
@click.option(
    "--no-cache", is_flag=True, help="Encode images and captions every step instead of once."
)
@click.option(
    "--log-every",
    type=int,
    default=10,
    show_default=True,
    help="Average and log the losses every N steps.",
)
@overwrite_option
def distill(**options) -> None:
    """Distil a pruned student back towards its teacher: PWP freezes everything before the first
    pruned block, SGDistill trains the rest on output and per-block feature distillation.

    Runs on one device as it is; for several GPUs or DeepSpeed ZeRO-2 start it with
    `accelerate launch [--multi_gpu | --use_deepspeed --zero_stage 2] -m hprune.cli distill ...`.
    Interrupt with Ctrl-C to checkpoint and stop; continue with --resume.
    """
    from generation.recipes.distill.config import DistillConfig
    from generation.recipes.distill.trainer import distill as run

    result = run(DistillConfig(**options))
    if result.main_process:  # one report per run, not one per process
        if result.out is None:
            click.echo(
                f"stopped at step {result.step} of {options['steps']}; continue with --resume"
            )
        else:
            last = result.history[-1] if result.history else {}
            terms = ("output_kd", "feature_kd", "total")
            summary = ", ".join(f"{k} {last[k]:.4g}" for k in terms if k in last)
            click.echo(
                f"wrote the distilled model to {result.out} after {result.step} steps ({summary})"
            )
    if result.interrupted:
        raise SystemExit(130)
