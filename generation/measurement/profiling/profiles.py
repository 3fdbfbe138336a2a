"""Profiles: weights, parameters, and the peak memory and latency of one step and one image.

A *step* is one transformer forward, an *image* a whole denoising run: through a pipeline
(:func:`profile_pipeline`: text encoding, the steps, VAE decoding), or of a bare transformer
on synthetic inputs of the shapes a pipeline gives it (:func:`profile_transformer`, for a
full-size architecture built from its config). Latency is the median wall time over
repeated runs after warm-up runs (``timing``); memory the peak of live tensors (``memory``).
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from generation.adapters import get_adapter
from generation.adapters.encoding import predict_velocity
from generation.measurement.profiling.memory import PeakMemory, peak_memory
from generation.measurement.profiling.timing import time_runs
from generation.transforms import quantization
from generation.transforms.footprint import (
    StoredBytes,
    expected_bytes,
    linear_parameter_fraction,
    parameter_count,
    stored_bytes,
)


def _bytes_fields(found: StoredBytes, prefix: str = "") -> dict[str, int]:
    return {
        f"{prefix}weights_bytes": found.weights,
        f"{prefix}buffers_bytes": found.buffers,
        f"{prefix}stored_bytes": found.total,
    }


def _progress(total: int, what: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"profiling {what}", unit="run", leave=False)


def _timing_summary(times: list[float], peak: PeakMemory) -> dict[str, Any]:
    return {
        "latency_ms_median": statistics.median(times) * 1e3,
        "latency_ms": [t * 1e3 for t in times],
        "peak_memory_bytes": peak.total_bytes,
        "peak_memory_above_start_bytes": peak.above_start_bytes,
    }


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What one profiled image is: size, steps, prompt, and how often it is repeated."""

    height: int = 64
    width: int = 64
    steps: int = 2
    guidance: float | None = None  # None: the pipeline's default
    max_sequence_length: int | None = None  # T5 tokens; None: the pipeline's default
    prompt: str = "a photo of a red circle above a blue square"
    seed: int = 0
    warmup: int = 1
    repeats: int = 3


def _environment(device: torch.device) -> dict[str, Any]:
    # Versions from the installed metadata: importing bitsandbytes costs seconds of CPU,
    # and an unquantised model never needs it.
    from importlib.metadata import version

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "device_name": device_name,
        "torch": torch.__version__,
        "diffusers": version("diffusers"),
        "bitsandbytes": version("bitsandbytes"),
        "cpu_threads": torch.get_num_threads(),
    }


def _model_summary(transformer: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    spec = getattr(transformer, "hprune_quantization", None)
    return {
        "architecture": type(transformer).__name__,
        "dtype": quantization.dtype_name(dtype),
        "quantization": spec.scheme if spec else None,
        "double_quant": spec.double_quant if spec else None,
        "parameters": parameter_count(transformer),
        "linear_parameter_fraction": linear_parameter_fraction(transformer),
    }


# --- a whole pipeline ---------------------------------------------------------------------


def capture_transformer_inputs(pipe, call: Callable[[], Any]) -> dict[str, Any]:
    """Run ``call`` once and keep the keyword arguments of the pipeline's first transformer call."""
    captured: dict[str, Any] = {}

    def hook(module, args, kwargs):
        if not captured:
            if args:
                raise RuntimeError("the pipeline called its transformer with positional arguments")
            captured.update(
                {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            )

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the pipeline never called its transformer")
    return captured


def profile_pipeline(
    pipe, *, device: str | torch.device, settings: RunSettings = RunSettings()
) -> dict[str, Any]:
    """Weights, parameters, and the memory and latency of one step and one image of ``pipe``.

    A step is one transformer forward on exactly the inputs the pipeline passes it at
    its first denoising step (classifier-free guidance batches included); an image is a
    full pipeline call (text encoding, ``steps`` denoising steps, VAE decoding).
    """
    device = torch.device(device)
    transformer = pipe.transformer
    dtype = _floating_dtype(transformer)
    pipe.set_progress_bar_config(disable=True)

    def render():
        options = {
            "prompt": settings.prompt,
            "height": settings.height,
            "width": settings.width,
            "num_inference_steps": settings.steps,
            "generator": torch.Generator(device="cpu").manual_seed(settings.seed),
            "output_type": "np",
        }
        if settings.guidance is not None:
            options["guidance_scale"] = settings.guidance
        if settings.max_sequence_length is not None:
            options["max_sequence_length"] = settings.max_sequence_length
        return pipe(**options)

    runs = 3 + settings.warmup + 2 * settings.repeats
    with torch.inference_mode(), _progress(runs, type(transformer).__name__) as bar:
        inputs = capture_transformer_inputs(pipe, render)  # also the image's warm-up
        bar.update()

        def step():
            return transformer(**inputs)

        step_times = time_runs(
            step, device, warmup=settings.warmup, repeats=settings.repeats, progress=bar
        )
        with peak_memory(device, transformer) as step_peak:
            step()
        bar.update()
        image_times = time_runs(render, device, warmup=0, repeats=settings.repeats, progress=bar)
        modules = [c for c in pipe.components.values() if isinstance(c, nn.Module)]
        with peak_memory(device, *modules) as image_peak:
            render()
        bar.update()

    components = {
        name: stored_bytes(module).total
        for name, module in pipe.components.items()
        if isinstance(module, nn.Module)
    }
    return {
        **_model_summary(transformer, dtype),
        "device": device.type,
        **_bytes_fields(stored_bytes(transformer)),
        "pipeline_stored_bytes": components,
        "step": {"batch": _batch_size(inputs), **_timing_summary(step_times, step_peak)},
        "image": {"steps": settings.steps, **_timing_summary(image_times, image_peak)},
        "settings": dataclasses.asdict(settings),
        "memory_method": step_peak.method,
        "environment": _environment(device),
    }


def _floating_dtype(model: nn.Module) -> torch.dtype:
    spec = getattr(model, "hprune_quantization", None)
    if spec is not None:
        return spec.torch_dtype
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def _batch_size(inputs: Mapping[str, Any]) -> int:
    return int(inputs["hidden_states"].shape[0])


# --- a bare transformer -------------------------------------------------------------------


def count_model(
    model: nn.Module,
    *,
    dtype: torch.dtype = torch.bfloat16,
    scheme: str | None = None,
    double_quant: bool = True,
) -> dict[str, Any]:
    """Parameters and stored bytes of an unquantised (possibly meta) model, as is and quantised."""
    double_quant = bool(scheme) and scheme != "int8" and double_quant
    summary = {
        "architecture": type(model).__name__,
        "dtype": quantization.dtype_name(dtype),
        "quantization": scheme,
        "double_quant": double_quant if scheme else None,
        "parameters": parameter_count(model),
        "linear_parameter_fraction": linear_parameter_fraction(model),
        **_bytes_fields(expected_bytes(model, scheme, dtype, double_quant=double_quant)),
        **_bytes_fields(expected_bytes(model, None, dtype), prefix="unquantized_"),
    }
    return summary


def synthetic_denoising_call(
    model: nn.Module,
    *,
    latent_size: int,
    text_tokens: int,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """One denoising call of ``model`` on random inputs of the shapes a pipeline gives it for a
    ``latent_size``^2 latent and ``text_tokens`` text tokens (FLUX packing and ids included)."""
    config = model.config
    channels = (
        config.in_channels // 4 if get_adapter(model).family == "flux" else config.in_channels
    )
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    latents = randn(batch, channels, latent_size, latent_size)
    text = {
        "prompt_embeds": randn(batch, text_tokens, config.joint_attention_dim),
        "pooled_prompt_embeds": randn(batch, config.pooled_projection_dim),
    }
    sigmas = torch.full((batch,), 0.5, device=device)
    return lambda: predict_velocity(model, latents, sigmas, text)


def profile_transformer(
    model: nn.Module,
    *,
    device: str | torch.device,
    latent_size: int,
    text_tokens: int,
    steps: int,
    warmup: int = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """Memory and latency of one forward, and of ``steps`` forwards (the denoising loop of an
    image, without text encoders and VAE), of a transformer on synthetic inputs."""
    device = torch.device(device)
    dtype = _floating_dtype(model)
    step = synthetic_denoising_call(
        model, latent_size=latent_size, text_tokens=text_tokens, device=device, dtype=dtype
    )

    def loop():
        for _ in range(steps):
            step()

    runs = warmup + 2 * repeats + 2
    with torch.inference_mode(), _progress(runs, type(model).__name__) as bar:
        step_times = time_runs(step, device, warmup=warmup, repeats=repeats, progress=bar)
        with peak_memory(device, model) as step_peak:
            step()
        bar.update()
        loop_times = time_runs(loop, device, warmup=0, repeats=repeats, progress=bar)
        with peak_memory(device, model) as loop_peak:
            loop()
        bar.update()
    return {
        **_model_summary(model, dtype),
        "device": device.type,
        **_bytes_fields(stored_bytes(model)),
        "step": {"batch": 1, **_timing_summary(step_times, step_peak)},
        "image": {
            "steps": steps,
            "transformer_only": True,
            **_timing_summary(loop_times, loop_peak),
        },
        "settings": {
            "latent_size": latent_size,
            "text_tokens": text_tokens,
            "warmup": warmup,
            "repeats": repeats,
        },
        "memory_method": step_peak.method,
        "environment": _environment(device),
    }
