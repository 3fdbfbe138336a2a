"""Contribution analysis speed: prompts encoded once for every part, against once per render.

``hprune contrib`` renders the same prompts and seeds once for the baseline and once per
ablated part. Removing a part of the transformer changes neither the text conditioning nor
the starting noise, so ``run_contrib`` encodes the prompts once (``reuse_inputs=True``, the
default) instead of running the text encoders on every render (``reuse_inputs=False``, what
separate pipeline calls do). On each toy pipeline (random weights, as ``hprune toy-model``
writes them), side by side in one run:

- one render of the prompt set (what every part costs), from the prompts or from the
  prepared inputs, interleaved round by round, median; and the one-off cost of preparing;
- the whole ``run_contrib`` in both modes (loading and fingerprinting included), interleaved,
  median, with the contrib.json scores of the two modes checked for equality.

    .venv/bin/python benchmarks/contrib_speed.py --rounds 5

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from generation.measurement.contrib import prepare, render, run_contrib
from generation.store.loading import load_pipeline
from generation.store.toy_models import save_toy_pipeline
from hprune.contracts.prompts import Prompt
from hprune.contracts.variants import PipelineOptions

WORDS = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "cat"]
MODES = {"encode per render": False, "encode once": True}  # label -> reuse_inputs


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def render_times(pipe, items, options, args) -> tuple[float, dict[str, list[float]]]:
    """The best time of preparing the inputs, and the times of one render in each mode."""
    batch = dict(batch_size=args.batch_size)
    prepare_s = min(
        seconds(lambda: prepare(pipe, items, options, **batch)) for _ in range(args.rounds)
    )
    inputs = prepare(pipe, items, options, **batch)
    render(pipe, items, options, **batch)  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.render_rounds):
        for mode, reuse in MODES.items():
            given = inputs if reuse else None
            times[mode].append(
                seconds(lambda: render(pipe, items, options, **batch, inputs=given))  # noqa: B023
            )
    return prepare_s, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="whole-analysis rounds")
    parser.add_argument("--render-rounds", type=int, default=20, help="single-render rounds")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument(
        "--max-sequence-length", type=int, default=None, help="T5 tokens (default: the pipeline's)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--parts", default="blocks", choices=["all", "blocks", "subcomponents"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = [
        Prompt(f"p{i}", f"a {WORDS[0][i % 4]} {WORDS[1][(i // 4) % 4]} on a table", "", {})
        for i in range(args.prompts)
    ]
    seeds = list(range(args.seeds))
    items = [(p.text, seed) for p in prompts for seed in seeds]
    pipeline = dict(
        steps=args.steps,
        guidance=args.guidance,
        height=args.resolution,
        width=args.resolution,
        max_sequence_length=args.max_sequence_length,
    )
    options = PipelineOptions(**pipeline)
    settings = dict(
        **pipeline, batch_size=args.batch_size, parts=args.parts, overwrite=True, progress=False
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("sd3", "sd35", "flux"):
            model = save_toy_pipeline(arch, Path(tmp) / arch)
            pipe = load_pipeline(model)
            prepare_s, render_s = render_times(pipe, items, options, args)

            out = Path(tmp) / f"{arch}.json"
            contrib_s: dict[str, list[float]] = {mode: [] for mode in MODES}
            results: dict[str, dict] = {}
            for round_ in range(args.rounds + 1):  # round 0 warms up
                for mode, reuse in MODES.items():
                    start = time.perf_counter()
                    results[mode] = run_contrib(
                        model, prompts, seeds, out, **settings, reuse_inputs=reuse
                    )
                    if round_:
                        contrib_s[mode].append(time.perf_counter() - start)
            reference = results["encode per render"]
            parts = len(reference["entries"])
            base_render = statistics.median(render_s["encode per render"])
            base_contrib = statistics.median(contrib_s["encode per render"])
            for mode in MODES:
                same = (
                    results[mode]["entries"] == reference["entries"]
                    and results[mode]["baseline"] == reference["baseline"]
                )
                one = statistics.median(render_s[mode])
                whole = statistics.median(contrib_s[mode])
                rows.append(
                    f"| {arch} | {mode} | {one * 1000:.1f} ({one / base_render:.2f}x) | "
                    + (f"{prepare_s * 1000:.1f}" if MODES[mode] else "-")
                    + f" | {parts} | {whole:.2f} ({whole / base_contrib:.2f}x) | "
                    f"{'yes' if same else 'NO'} |"
                )
    print(
        f"{args.prompts} prompts x {args.seeds} seed(s), {args.parts}, {args.steps} steps, "
        f"{args.resolution}x{args.resolution}, guidance {args.guidance:g}, batch {args.batch_size}, "
        f"T5 tokens {args.max_sequence_length or 'pipeline default'}; medians of "
        f"{args.render_rounds} (render) and {args.rounds} (analysis) interleaved rounds"
    )
    print()
    print(
        "| toy | mode | one render of the prompt set, ms | prepare once, ms | parts "
        "| whole analysis, s | scores identical |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
