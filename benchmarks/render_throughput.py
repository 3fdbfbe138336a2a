"""Rendering throughput: images/s of ``render_stimuli`` by batch size, side by side.

``--model toy`` (default): two variants, the toy SD3 and the toy FLUX pipeline (random
weights, as ``hprune toy-model`` writes them), ``--steps`` steps at ``--resolution``.
``--model mini``: the shipped mini-world teacher with its own render options (20 steps,
guidance 4, 64 px). Every prompt x seed is rendered into a fresh stimuli folder once per
batch size (``auto``: ``hprune render --batch-size auto``, the size it chose in brackets),
interleaved over ``--repeats`` runs. Figures are end to end (pipeline loading, the denoising
loop, PNG encoding, hashing, journal and manifest), because that is what a user waits for;
the loading share is printed too (``load s``: the pipelines loaded once, outside the timing).

    .venv/bin/python benchmarks/render_throughput.py
    .venv/bin/python benchmarks/render_throughput.py --resolution 128 --steps 4 --batch-sizes 1,2,8
    python benchmarks/render_throughput.py --model mini --device cuda --prompts 24 --seeds 2 \
        --batch-sizes 1,16,64,auto --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per variant")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument(
        "--batch-sizes", default="1,4", help="comma-separated batch sizes, 'auto' among them"
    )
    parser.add_argument("--model", choices=["toy", "mini"], default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per batch size")
    args = parser.parse_args()

    import torch

    from generation.measurement.rendering.sizing import parse_batch_size
    from generation.measurement.rendering.stimuli import render_stimuli
    from generation.mini.teacher import RENDER_OPTIONS, teacher_variant
    from generation.store.loading import load_pipeline
    from generation.store.toy_models import save_toy_pipeline
    from hprune.contracts.prompts import Prompt
    from hprune.contracts.variants import local_model_dir, read_variants

    batch_sizes = [parse_batch_size(b) for b in args.batch_sizes.split(",")]
    words = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "cat"]
    prompts = [
        Prompt(f"p{i}", f"a {words[0][i % 4]} {words[1][(i // 4) % 4]} on a table")
        for i in range(args.prompts)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model == "mini":
            variants = [teacher_variant()]
            what = "mini teacher, " + ", ".join(f"{k}: {v}" for k, v in RENDER_OPTIONS.items())
        else:
            models = {arch: save_toy_pipeline(arch, tmp / arch) for arch in ("sd3", "flux")}
            (tmp / "variants.yaml").write_text(
                "".join(
                    f"- {{name: {arch}, model: {path}, pipeline: {{steps: {args.steps}, "
                    f"guidance: 0.0, resolution: {args.resolution}}}}}\n"
                    for arch, path in models.items()
                )
            )
            variants = read_variants(tmp / "variants.yaml")
            what = f"toy SD3 + toy FLUX, {args.resolution}x{args.resolution}, {args.steps} steps"
        start = time.perf_counter()
        for variant in variants:
            load_pipeline(local_model_dir(variant.model), device=args.device)
        load_seconds = time.perf_counter() - start

        # warm-up (first-call allocations, lazy imports), not timed
        render_stimuli(
            variants, prompts[:1], [0], tmp / "warm-up", device=args.device, progress=False
        )
        seeds = list(range(args.seeds))
        results: dict[int | str, list] = {b: [] for b in batch_sizes}
        for repeat in range(args.repeats):  # interleaved, so drifting machine load hits every size
            for batch_size in batch_sizes:
                summary = render_stimuli(
                    variants,
                    prompts,
                    seeds,
                    tmp / f"stimuli-b{batch_size}-r{repeat}",
                    batch_size=batch_size,
                    device=args.device,
                    progress=False,
                )
                assert summary.complete and summary.rendered == summary.total
                results[batch_size].append(summary)

    n = len(variants) * len(prompts) * len(seeds)
    print(
        f"{what}; {n} images per run, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, load s (all pipelines) {load_seconds:.2f}"
    )
    print(f"median of {args.repeats} interleaved runs per batch size")
    print(f"| batch size | images | seconds | images/s | vs {batch_sizes[0]} |")
    print("|---:|---:|---:|---:|---:|")
    rates = {b: statistics.median(s.images_per_second for s in runs) for b, runs in results.items()}
    for batch_size, runs in results.items():
        seconds = statistics.median(s.seconds for s in runs)
        label = batch_size
        if batch_size == "auto":  # the size it chose (after each variant's first image alone)
            label = "auto (" + ", ".join(str(v) for v in runs[0].batch_sizes.values()) + ")"
        print(
            f"| {label} | {runs[0].rendered} | {seconds:.2f} | {rates[batch_size]:.2f} | "
            f"{rates[batch_size] / rates[batch_sizes[0]]:.2f}x |"
        )


if __name__ == "__main__":
    main()
