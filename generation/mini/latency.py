"""Image latency of several variants measured side by side: interleaved runs in one process.

Latency measured one model after another drifts with whatever else the machine does meanwhile
(a shared 2-core CPU: another job starting halves the speed), so a pruned model can read
slower than the original it was cut from. Here every variant is loaded once into the same
process, and each round times one whole image of every variant (text encoding, the denoising
steps with classifier-free guidance, VAE decoding), the order rotated from round to round:
drift then falls on all variants alike. Each variant's figure is the median of its rounds,
with the interquartile range as its spread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from generation.mini.stats import median_spread

PROMPT = ("a photo of a red circle left of a blue square", 0)


def interleaved(
    runners: Mapping[str, Callable[[], object]], repeats: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of each runner's call, ``repeats`` rounds of every runner once, the order rotated
    each round (after ``warmup`` untimed rounds)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: Mapping[str, list[float]]) -> dict[str, dict]:
    """Per variant: the raw seconds, and the median and quartiles in milliseconds."""
    out = {}
    for name, seconds in times.items():
        median, q1, q3 = median_spread(seconds)
        out[name] = {
            "seconds": list(seconds),
            "median_ms": 1e3 * median,
            "q1_ms": 1e3 * q1,
            "q3_ms": 1e3 * q3,
        }
    return out


def measure_variants(
    variants_file: str | Path, out: str | Path, *, repeats: int = 9, device: str = "cpu"
) -> dict[str, dict]:
    """Load every variant of ``variants_file`` and write their interleaved image latencies."""
    import torch

    from generation.measurement.rendering.batches import load_variant_pipeline, render_batch
    from hprune.contracts.variants import read_variants
    from hprune.fileio import atomic_write_text

    variants = read_variants(variants_file)
    pipes = {v.name: (load_variant_pipeline(v, device=device), v) for v in variants}
    runners = {
        name: (lambda pipe=pipe, v=v: render_batch(pipe, v, [PROMPT]))
        for name, (pipe, v) in pipes.items()
    }
    summary = summarise(interleaved(runners, repeats))
    record = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "prompt": PROMPT[0],
        "variants": summary,
    }
    atomic_write_text(Path(out), json.dumps(record, indent=2) + "\n")
    return summary
