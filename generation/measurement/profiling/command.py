"""``hprune profile``: profile a model folder, or a full-size architecture from its config.

A model folder is loaded and profiled through its pipeline; an architecture config is
built with random weights (on ``meta`` only counted), optionally cut with ``--remove`` and
quantised with ``--scheme`` first, then its transformer is profiled on synthetic inputs.
The report is ``profile.json``; :func:`summary_line` is its one line for the terminal.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.adapters import adapter_class, get_adapter
from generation.devices import resolve_device, resolve_dtype
from generation.measurement.profiling.profiles import (
    RunSettings,
    count_model,
    profile_pipeline,
    profile_transformer,
)
from generation.store.architectures import build_from_config, read_arch_config
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_pipeline
from generation.transforms import quantization
from generation.transforms.footprint import parameter_count
from generation.transforms.plan import explicit_plan
from generation.transforms.surgery import apply_plan
from hprune.errors import UserError
from hprune.fileio import atomic_write_text

PROFILE_FORMAT = 1

#: Text tokens a pipeline feeds the transformer at full size: SD3 = 77 CLIP + 256 T5
#: (max_sequence_length default; the paper's profiler's 333); FLUX.1-dev 512 T5 tokens, and
#: FLUX.1-schnell 256, the most its pipeline allows (schnell has no guidance embedding).
SD3_TEXT_TOKENS = 333
FLUX_TEXT_TOKENS = {"dev": 512, "schnell": 256}


def default_text_tokens(config: Mapping[str, Any]) -> int:
    """The text length a pipeline feeds the transformer ``config`` describes, by default."""
    if adapter_class(config["_class_name"]).family == "sd3":
        return SD3_TEXT_TOKENS
    return FLUX_TEXT_TOKENS["dev" if config.get("guidance_embeds") else "schnell"]


def _check_counts(**values: int | None) -> None:
    for name, value in values.items():
        minimum = 0 if name == "warmup" else 1
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _profile_model(model, *, device, dtype, settings: RunSettings) -> dict[str, Any]:
    device = resolve_device(device or "auto")
    pipe = load_pipeline(model, dtype=resolve_dtype(dtype), device=device)
    report = profile_pipeline(pipe, device=device, settings=settings)
    report["source"] = {"model": str(model), "fingerprint": model_fingerprint(model)}
    return report


def _profile_arch_config(
    path,
    *,
    device,
    dtype,
    scheme,
    double_quant,
    remove,
    steps,
    latent_size,
    text_tokens,
    warmup,
    repeats,
) -> dict[str, Any]:
    config = read_arch_config(path)
    dtype = resolve_dtype(dtype) or torch.bfloat16
    if scheme is not None:
        quantization.check_scheme(scheme)
    meta = (device or "meta") == "meta"
    device = torch.device("meta") if meta else resolve_device(device)
    with _default_dtype(dtype):
        model = build_from_config(config, device)
    original_parameters = parameter_count(model)
    removed = _remove(model, remove) if remove else {"blocks": [], "subcomponents": []}
    if meta:
        count = count_model(model, dtype=dtype, scheme=scheme, double_quant=double_quant)
        report = {**count, "device": "meta"}
    else:
        if scheme is not None:
            quantization.quantize_transformer(
                model, scheme, dtype=dtype, device=device, double_quant=double_quant
            )
        report = profile_transformer(
            model,
            device=device,
            latent_size=latent_size,
            text_tokens=text_tokens or default_text_tokens(config),
            steps=steps or 4,
            warmup=warmup,
            repeats=repeats,
        )
    report["source"] = {
        "arch_config": str(path),
        "removed": removed,
        "original_parameters": original_parameters,
    }
    return report


def _remove(model: nn.Module, spec: str) -> dict[str, list]:
    """Apply ``hprune prune --remove SPEC``'s surgery (it works on meta tensors too)."""
    adapter = get_adapter(model)
    plan = explicit_plan(adapter, spec, original_parameters=adapter.total_params())
    apply_plan(adapter, plan)
    return {
        "blocks": plan.block_indices(),
        "subcomponents": [list(part) for part in plan.component_parts()],
    }


def run_profile(
    *,
    model: str | None,
    arch_config: str | None,
    out: str | Path,
    device: str | None = None,
    dtype: str | None = None,
    scheme: str | None = None,
    double_quant: bool = True,
    remove: str | None = None,
    steps: int | None = None,
    height: int = 64,
    width: int = 64,
    guidance: float | None = None,
    max_sequence_length: int | None = None,
    latent_size: int = 128,
    text_tokens: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``hprune profile``: profile a model directory or a full-size config; write ``out``."""
    out = Path(out)
    if (model is None) == (arch_config is None):
        raise UserError("give exactly one of --model and --arch-config")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    _check_counts(
        steps=steps,
        height=height,
        width=width,
        latent_size=latent_size,
        text_tokens=text_tokens,
        warmup=warmup,
        repeats=repeats,
    )
    if model is not None:
        if scheme or remove:
            raise UserError(
                "--scheme and --remove apply to --arch-config; for a model directory, "
                "run hprune quantize / hprune prune first and profile the result"
            )
        if device == "meta":
            raise UserError("--device meta only counts a --arch-config model")
        settings = RunSettings(
            height=height,
            width=width,
            steps=steps or 2,
            guidance=guidance,
            max_sequence_length=max_sequence_length,
            warmup=warmup,
            repeats=repeats,
        )
        report = _profile_model(model, device=device, dtype=dtype, settings=settings)
    else:
        report = _profile_arch_config(
            arch_config,
            device=device,
            dtype=dtype,
            scheme=scheme,
            double_quant=double_quant,
            remove=remove,
            steps=steps,
            latent_size=latent_size,
            text_tokens=text_tokens,
            warmup=warmup,
            repeats=repeats,
        )
    report = {"format": "hprune-profile", "version": PROFILE_FORMAT, **report}
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    return report


def summary_line(report: Mapping[str, Any]) -> str:
    """One line for the terminal: what was measured, in human units."""
    scheme = report.get("quantization") or report.get("dtype")
    if report.get("quantization") and report.get("double_quant"):
        scheme += ", double quantisation"

    def size(count: int) -> str:
        return (
            f"{count / 1e9:.3f} GB = {count / 2**30:.3f} GiB"
            if count >= 1e8
            else f"{count / 1e6:.2f} MB"
        )

    parts = [
        f"{report['architecture']} ({scheme}, {report['device']})",
        f"{report['parameters'] / 1e9:.3f}B parameters"
        if report["parameters"] >= 1e8
        else f"{report['parameters']:,} parameters",
        f"weights {size(report['weights_bytes'])}",
        f"stored {size(report['stored_bytes'])}",
    ]
    for name in ("step", "image"):
        if name in report:
            entry = report[name]
            parts.append(
                f"{name} {entry['latency_ms_median']:.1f} ms, "
                f"peak {entry['peak_memory_bytes'] / 1e6:.1f} MB"
            )
    return "; ".join(parts)
