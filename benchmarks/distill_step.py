"""One distillation step (teacher forward + student forward/backward + AdamW): time and peak memory.

Runs the trainer's own ``prepare_training`` and ``training_step`` on random-weight SD3
transformers fed synthetic latents and text embeddings (no encoders, no data on disk), for a
pruned student with the preserved prefix frozen (PWP) and binary SGDistill weights. Variants
are measured side by side in one process, their timed steps interleaved (so a busy machine
slows them alike); peak memory is that of live torch tensors over each variant's first two
steps (teacher + student + AdamW state + gradients + activations), from
``generation.measurement.profiling.memory.peak_memory`` (the CPU allocator's profiler events; CUDA's counters):

- ``shared``: the default; the student's frozen prefix reuses the teacher's activations;
- ``unshared``: ``--no-shared-prefix``, the student recomputes its frozen prefix;
- ``shared+ckpt``: with gradient checkpointing.

Sizes: ``small`` (the toy SD3: 8 blocks, width 32; 64 px, batch 4), ``medium`` (12 blocks,
width 256; 128 px, batch 4), and with ``--full-size`` SD3.5-Large-Turbo from the shared
architecture config (38 blocks, width 2432; blocks 25-28 and 31-34 removed as in the paper's
20% cut; 1024 px = 128x128 latents, batch 1, bf16) on a CUDA GPU.

    .venv/bin/python benchmarks/distill_step.py                 # small and medium on the CPU
    .venv/bin/python benchmarks/distill_step.py --full-size     # SD3.5-Large-Turbo on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = REPO.parent / "shared" / "data" / "architectures"
VARIANTS = {
    "shared": {"shared_prefix": True},
    "unshared": {"shared_prefix": False},
    "shared+ckpt": {"shared_prefix": True, "gradient_checkpointing": True},
}
# name: (transformer spec, removed original blocks, latent side, batch, text tokens)
SIZES = {
    "small": ({}, "5-6", 8, 4, 93),
    "medium": (
        {
            "num_layers": 12,
            "num_attention_heads": 4,
            "attention_head_dim": 64,
            "clip_hidden_size": 128,
            "clip_projection_dim": 128,
            "t5_d_model": 256,
        },
        "8-9",
        16,
        4,
        93,
    ),
    "full": ({}, "25-28,31-34", 128, 1, 333),
}


def build(size: str):
    """Teacher and pruned student transformers, with their records, in memory."""
    import torch

    from generation.adapters import get_adapter, record_for_transformer
    from generation.recipes.prune import pruned_record
    from generation.transforms.plan import explicit_plan
    from generation.transforms.surgery import apply_plan

    spec_kw, removed, latent, batch, tokens = SIZES[size]
    torch.manual_seed(0)
    if size == "full":
        from diffusers import SD3Transformer2DModel

        config = json.loads((ARCHITECTURES / "stable-diffusion-3.5-large-turbo.json").read_text())
        torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: 16 GB, not 32 GB then 16
        try:
            with torch.device("cuda"):
                teacher = SD3Transformer2DModel.from_config(config)
        finally:
            torch.set_default_dtype(torch.float32)
    else:
        from generation.store.toy_models import ToySpec, build_sd3_transformer

        teacher = build_sd3_transformer(ToySpec(**spec_kw))
    teacher.eval()
    record = record_for_transformer(teacher)
    student = copy.deepcopy(teacher)
    adapter = get_adapter(student)
    plan = explicit_plan(adapter, removed, original_parameters=record.original_parameters)
    student_record = pruned_record(
        record, plan, apply_plan(adapter, plan), parent_fingerprint="benchmark"
    )
    student = student.float()
    cfg = teacher.config
    shapes = {
        "latents": (batch, cfg.in_channels, latent, latent),
        "prompt_embeds": (batch, tokens, cfg.joint_attention_dim),
        "pooled_prompt_embeds": (batch, cfg.pooled_projection_dim),
    }
    return teacher, student, record, student_record, shapes


def child(size: str, variants: list[str], steps: int, threads: int) -> dict:
    """Measure ``variants`` on one teacher: peak tensor memory over each one's first two steps
    (AdamW's state is created in the first), then steps timed interleaved (A, B, C, A, B, C, ...)
    so that a busy machine slows them alike."""
    import torch
    from accelerate import Accelerator

    from generation.measurement.profiling.memory import peak_memory
    from generation.recipes.distill.config import DistillConfig
    from generation.recipes.distill.pair import make_pair
    from generation.recipes.distill.step import prepare_training, training_step

    torch.set_num_threads(threads)
    device = "cuda" if size == "full" else "cpu"
    teacher, pruned, t_rec, s_rec, shapes = build(size)
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    trainees, memory = {}, {}
    for variant in variants:
        student = copy.deepcopy(pruned).to(device)
        pair = make_pair(
            None, student, t_rec, s_rec, teacher_fingerprint="benchmark", teacher=teacher
        )
        config = DistillConfig(
            teacher="-", student="-", data="-", out="-", steps=steps, batch_size=shapes["latents"][0],
            mixed_precision="bf16" if device == "cuda" else "no", **VARIANTS[variant],
        )  # fmt: skip
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision, step_scheduler_with_optimizer=False
        )
        trainee = trainees[variant] = prepare_training(pair, config, accelerator)
        with trainee, peak_memory(device, teacher, student) as peak:
            for i in range(2):
                training_step(trainee, batch, torch.Generator().manual_seed(i))
        memory[variant] = {
            "models_mb": peak.start_bytes / 2**20,
            "peak_mb": peak.total_bytes / 2**20,
        }
    params = {
        "teacher": sum(p.numel() for p in teacher.parameters()),
        "student": sum(p.numel() for p in pruned.parameters()),
        "trainable": sum(p.numel() for p in trainees[variants[0]].trainable),
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(2, steps + 2):
        for variant, trainee in trainees.items():
            with trainee:
                start = time.perf_counter()
                training_step(trainee, batch, torch.Generator().manual_seed(i))
                if device == "cuda":
                    torch.cuda.synchronize()
                times[variant].append(time.perf_counter() - start)
    return {
        "params": params, "memory": memory,
        "step_ms": {v: 1000 * statistics.median(t) for v, t in times.items()},
        "shared_prefix_blocks": {v: t.shared_prefix_length for v, t in trainees.items()},
    }  # fmt: skip


def run_child(size: str, variants: list[str], steps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", size, ",".join(variants), "--steps", str(steps),
           "--threads", str(threads)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        sys.exit(f"{size}/{variants} failed:\n{out.stderr[-3000:]}")
    print(f"  measured {size}: {', '.join(variants)}", file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=10,
        help="timed steps per variant (after 2 measured for memory)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU sizes)")
    parser.add_argument(
        "--full-size", action="store_true", help="SD3.5-Large-Turbo on a CUDA GPU instead"
    )
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "VARIANTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, variants = args.child
        print(json.dumps(child(size, variants.split(","), args.steps, args.threads)))
        return
    rows = []
    for size in ["full"] if args.full_size else ["small", "medium"]:
        # one process per size on the CPU; one per variant on a GPU (three students would not fit)
        if args.full_size:
            results = [run_child(size, [v], args.steps, args.threads) for v in VARIANTS]
        else:
            results = [run_child(size, list(VARIANTS), args.steps, args.threads)]
        for result in results:
            for v in result["step_ms"]:
                rows.append({"size": size, "variant": v, "ms": result["step_ms"][v], "params": result["params"],
                             "prefix": result["shared_prefix_blocks"][v], **result["memory"][v]})  # fmt: skip
    print(f"| size | teacher / student / trainable params | variant | step ms (median of {args.steps}) "
          "| vs unshared | peak tensor MB (models) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in rows:
        ref = next(r for r in rows if r["size"] == row["size"] and r["variant"] == "unshared")
        p = row["params"]
        print(
            f"| {row['size']} | {p['teacher'] / 1e6:.2f}M / {p['student'] / 1e6:.2f}M / {p['trainable'] / 1e6:.2f}M "
            f"| {row['variant']} (prefix {row['prefix']}) | {row['ms']:.1f} "
            f"| {row['ms'] / ref['ms']:.2f}x | {row['peak_mb']:.1f} ({row['models_mb']:.1f}) |"
        )


if __name__ == "__main__":
    main()
