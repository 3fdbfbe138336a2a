"""Model footprint: parameters and stored bytes of the full-size transformers, and CPU
latency of the toy pipelines, original against NF4, side by side in one run.

Part 1 (meta device, no weights in memory): for each config in
../shared/data/architectures/, the parameters and the stored bytes in bf16, in NF4 (double
quantisation, hprune's and the reference's default), after a 20% cut + NF4, and at the 30%
level + NF4.

- SD3.5 Large / Large Turbo: the paper's released cuts (blocks 25-28 and 31-34; for the 30%
  level also ff and ff_context of blocks 13-18 and norm1_context of 14-16, as the reference's
  builder replays it and as HPP plans it from the published scores).
- The other models (no published cut or scores): the HPP rule with equal contribution
  scores and no critical block, at budget 0.8 / 0.7: the arithmetic, not a tested cut.

"Weights" are parameters (for NF4 with their quantisation state); SD3's stored sin-cos
position table is a buffer, never pruned or quantised, shown separately.

Part 2 (CPU): the toy SD3, SD3.5 and FLUX pipelines (fp32) and their NF4 versions (compute
fp32): the latency of one denoising step (one transformer call on the pipeline's own inputs)
and of one 64x64 2-step image, medians of --rounds interleaved rounds, and the peak memory of
each (torch tensors, as ``hprune profile`` measures it).

    nice -n 10 .venv/bin/python benchmarks/model_footprint.py --rounds 15
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
from pathlib import Path

import torch

from generation.adapters import get_adapter
from generation.measurement.profiling.memory import peak_memory
from generation.measurement.profiling.profiles import capture_transformer_inputs
from generation.measurement.profiling.timing import time_runs
from generation.store.architectures import build_from_config, read_arch_config
from generation.transforms import quantization
from generation.transforms.footprint import (
    expected_bytes,
    linear_parameter_fraction,
    parameter_count,
    stored_bytes,
)

ARCH_DIR = (
    Path(
        os.environ.get(
            "HPRUNE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
        )
    )
    / "architectures"
)
CONFIGS = [
    "stable-diffusion-3.5-large",
    "stable-diffusion-3.5-large-turbo",
    "stable-diffusion-3.5-medium",
    "FLUX.1-schnell",
    "FLUX.1-dev",
]
PAPER_BLOCKS_20 = [25, 26, 27, 28, 31, 32, 33, 34]
PAPER_PARTS_30 = [(i, c) for i in range(13, 19) for c in ("ff", "ff_context")] + [
    (i, "norm1_context") for i in (14, 15, 16)
]


def meta_model(name: str):
    return build_from_config(read_arch_config(ARCH_DIR / f"{name}.json"))


def paper_cut(model, level: int):
    """The paper's released SD3.5-LT cut at the 20% or the 30% level."""
    adapter = get_adapter(model)
    if level == 30:  # subcomponents first, while the block indices are the original ones
        adapter.remove_components(PAPER_PARTS_30)
    adapter.remove_blocks(PAPER_BLOCKS_20)
    return model


def position_prior_cut(model, budget: float):
    """HPP with equal contribution scores and no critical block: position alone picks the cut."""
    from generation.measurement.contrib import Contribution
    from generation.planning import HPPRule, hpp_plan
    from generation.transforms.surgery import apply_plan

    adapter = get_adapter(model)
    n = adapter.num_blocks
    flat = Contribution(
        model_fingerprint="",
        family=adapter.family,
        num_blocks=n,
        original_indices=list(range(n)),
        higher_is_better=True,
        drops=dict.fromkeys(adapter.parts(), 1.0),
        block_similarity=[None] * n,
        raw={},
    )
    plan = hpp_plan(
        adapter,
        flat,
        budget,
        original_parameters=adapter.total_params(),
        rule=HPPRule(critical_fraction=2.0, exclude=()),  # above 1: nothing critical
    )
    apply_plan(adapter, plan)
    return model


def cut(name: str, level: int):
    model = meta_model(name)
    if "stable-diffusion-3.5-large" in name:
        return paper_cut(model, level)
    return position_prior_cut(model, 1 - level / 100)


def footprint_table() -> list[str]:
    rows = [
        "| model | parameters | Linear share | bf16 weights | NF4 weights (ratio) "
        "| 20% cut + NF4 (ratio; kept params) | 30% level + NF4 (ratio; kept params) "
        "| position table (bf16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        model = meta_model(name)
        params = parameter_count(model)
        bf16 = expected_bytes(model, None)
        nf4 = expected_bytes(model, "nf4")
        cells = [
            name,
            f"{params / 1e9:.3f}B",
            f"{linear_parameter_fraction(model):.4%}",
            f"{bf16.weights / 1e9:.3f} GB",
            f"{nf4.weights / 1e9:.3f} GB ({nf4.weights / bf16.weights:.1%})",
        ]
        for level in (20, 30):
            pruned = cut(name, level)
            found = expected_bytes(pruned, "nf4")
            kept = parameter_count(pruned) / params
            cells.append(
                f"{found.weights / 1e9:.3f} GB ({found.weights / bf16.weights:.1%}; {kept:.1%})"
            )
        cells.append(f"{bf16.buffers / 1e9:.3f} GB")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def paper_comparison() -> list[str]:
    full = expected_bytes(meta_model("stable-diffusion-3.5-large-turbo"), None)
    lines = []
    for level, paper_gib, paper_ratio in ((20, 3.56, 0.225), (30, 3.24, 0.205)):
        pruned = cut("stable-diffusion-3.5-large-turbo", level)
        found = expected_bytes(pruned, "nf4")
        plain = expected_bytes(pruned, "nf4", double_quant=False)
        lines.append(
            f"- SD3.5-LT {level}% + NF4: weights {found.weights / 2**30:.3f} GiB "
            f"({found.weights / full.weights:.1%} of bf16 weights); stored with the position table "
            f"{found.total / 2**30:.3f} GiB ({found.total / full.total:.1%}); without double "
            f"quantisation {plain.total / 2**30:.3f} GiB. Paper (peak of one forward): "
            f"{paper_gib} GiB ({paper_ratio:.1%} of 15.80 GiB)."
        )
    lines.append(
        f"- SD3.5-LT bf16: weights {full.weights / 1e9:.3f} GB, stored {full.total / 1e9:.3f} GB "
        f"= {full.total / 2**30:.2f} GiB (paper, peak of one forward: 15.80 GiB)."
    )
    flux = expected_bytes(meta_model("FLUX.1-schnell"), None)
    flux_cut = expected_bytes(cut("FLUX.1-schnell", 30), "nf4")
    lines.append(
        f"- FLUX.1-schnell bf16: {flux.weights / 1e9:.3f} GB = {flux.weights / 2**30:.2f} GiB "
        f"(paper: 22.6); 30% level (position only, no published cut) + NF4: "
        f"{flux_cut.weights / 2**30:.2f} GiB ({flux_cut.weights / flux.weights:.1%}). "
        "Paper: 4.44 (19.6%)."
    )
    return lines


def render(pipe):
    return pipe(
        "a red circle above a blue square",
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )


def toy_rows(arch: str, rounds: int) -> list[str]:
    """One toy pipeline, fp32 against NF4 (compute fp32), timed in interleaved rounds."""
    import statistics

    from generation.store.toy_models import build_toy_pipeline

    pipe = build_toy_pipeline(arch)
    variants = {"fp32": pipe.transformer, "nf4": copy.deepcopy(pipe.transformer)}
    quantization.quantize_transformer(variants["nf4"], "nf4", progress=False)
    steps, times, peaks = {}, {(v, k): [] for v in variants for k in ("step", "image")}, {}
    with torch.inference_mode():
        for name, transformer in variants.items():
            pipe.transformer = transformer
            inputs = capture_transformer_inputs(pipe, lambda: render(pipe))
            steps[name] = functools.partial(transformer, **inputs)
            render(pipe)  # warm-up
            with peak_memory("cpu", transformer) as step_peak:
                steps[name]()
            modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
            with peak_memory("cpu", *modules) as image_peak:
                render(pipe)
            peaks[name] = (step_peak.total_bytes, image_peak.total_bytes)
        for _ in range(rounds):
            for name, transformer in variants.items():
                pipe.transformer = transformer
                times[name, "step"] += time_runs(steps[name], "cpu", warmup=0, repeats=1)
                times[name, "image"] += time_runs(lambda: render(pipe), "cpu", warmup=0, repeats=1)
    median = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    weights = {name: stored_bytes(t).weights for name, t in variants.items()}
    rows = [
        f"| {arch} | {name} | {weights[name] / 1e3:.0f} kB "
        f"| {median[name, 'step']:.1f} ms | {median[name, 'image']:.1f} ms "
        f"| {peaks[name][0] / 1e6:.2f} MB | {peaks[name][1] / 1e6:.2f} MB |"
        for name in variants
    ]
    rows.append(
        f"| {arch} | NF4 / fp32 | {weights['nf4'] / weights['fp32']:.2f}x "
        f"| {median['nf4', 'step'] / median['fp32', 'step']:.2f}x "
        f"| {median['nf4', 'image'] / median['fp32', 'image']:.2f}x "
        f"| {peaks['nf4'][0] / peaks['fp32'][0]:.2f}x "
        f"| {peaks['nf4'][1] / peaks['fp32'][1]:.2f}x |"
    )
    return rows


def toy_latency_table(rounds: int) -> list[str]:
    rows = [
        "| toy | variant | transformer weights | step median | 64x64 image median "
        "| step peak | image peak |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for arch in ("sd3", "sd35", "flux"):
        rows += toy_rows(arch, rounds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-latency", action="store_true", help="only the meta-device part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"
    )
    print("\n".join(footprint_table()))
    print()
    print("\n".join(paper_comparison()))
    if not args.skip_latency:
        print()
        print("\n".join(toy_latency_table(args.rounds)))


if __name__ == "__main__":
    main()
