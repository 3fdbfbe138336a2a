"""What a diffusion model costs: weight bytes, parameters, peak memory and latency.

Four measurements, each defined so that it means the same on every device:

- **Stored bytes** are the bytes of the tensors the model stores (its state dict), at
  the dtype it runs in, never ``get_memory_footprint()``. They split into *weights*
  (the parameters; for a bitsandbytes layer the packed 4-bit or int8 weights plus their
  quantisation state) and *buffers* (constants stored beside them, such as SD3's
  sin-cos position table, which no scheme quantises). For a full-size architecture built
  on the meta device they are computed from the same layout
  (:func:`generation.quantization.expected_state`), without any weights in memory.
- **Parameters** count the original weights: a quantised layer counts
  ``in_features x out_features`` (+ bias), like the layer it replaced.
- **Peak memory** is the high-water mark of the bytes held by live torch tensors while
  one denoising step (one transformer forward on the inputs the pipeline gives it) or a
  whole image runs, measured from the start of the run (``above_start``) and in total
  (``total`` = tensors already resident at the start + ``above_start``). On CUDA that is
  ``torch.cuda.max_memory_allocated``. On the CPU we replay the allocation events torch's
  profiler records with ``profile_memory=True`` (every allocation and free of the CPU
  allocator, in order) -- the same quantity, without allocator caching or fragmentation.
  Process RSS would mix in the Python heap and glibc's retained arenas; tracemalloc does
  not see torch's allocations at all.
- **Latency** is the median wall time over repeated runs after warm-up runs, with
  ``torch.cuda.synchronize()`` around each run on CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation import quantization
from hprune.errors import UserError

PROFILE_FORMAT = 1


# --- counting ----------------------------------------------------------------------------


def tensor_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of a set of tensors as stored (works on meta tensors)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def parameter_count(model: nn.Module) -> int:
    """Parameters of the original model: a quantised layer counts the weights it stands for."""
    total = 0
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if quantization.is_quantized_layer(module):
            total += module.in_features * module.out_features
            own.pop("weight", None)
        total += sum(p.numel() for p in own.values())
    return total


def linear_parameter_fraction(model: nn.Module) -> float:
    """Share of the parameters that sit in ``nn.Linear`` layers (what quantisation reaches)."""
    linear = sum(
        m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0)
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )
    return linear / max(parameter_count(model), 1)


@dataclasses.dataclass(frozen=True)
class StoredBytes:
    """Bytes of the tensors a model stores, split into what is weights and what is not."""

    weights: int  # parameters, with their quantisation state for bitsandbytes layers
    buffers: int  # persistent buffers stored beside them (SD3: the 2-D sin-cos position table)

    @property
    def total(self) -> int:
        return self.weights + self.buffers


def stored_bytes(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> StoredBytes:
    """Bytes of ``state`` (default: what ``model`` stores now, quantised or not), split by kind."""
    if state is None:
        state = (
            quantization.canonical_state(model)
            if quantization.is_quantized(model)
            else model.state_dict()
        )
    buffer_names = {name for name, _ in model.named_buffers()}
    buffers = {k: v for k, v in state.items() if k in buffer_names}
    return StoredBytes(
        weights=tensor_bytes(state) - tensor_bytes(buffers), buffers=tensor_bytes(buffers)
    )


def expected_bytes(
    model: nn.Module, scheme: str | None = None, dtype: torch.dtype = torch.bfloat16
) -> StoredBytes:
    """Bytes ``model`` (unquantised, possibly on the meta device) would store in ``dtype``,
    after quantisation with ``scheme`` when one is given."""
    return stored_bytes(model, quantization.expected_state(model, scheme, dtype))


def _bytes_fields(found: StoredBytes, prefix: str = "") -> dict[str, int]:
    return {
        f"{prefix}weights_bytes": found.weights,
        f"{prefix}buffers_bytes": found.buffers,
        f"{prefix}stored_bytes": found.total,
    }


# --- peak memory -------------------------------------------------------------------------


@dataclasses.dataclass
class PeakMemory:
    """Filled in when the :func:`peak_memory` block exits."""

    device: str
    start_bytes: int = 0  # bytes of live tensors when the block started
    above_start_bytes: int = 0  # high-water mark of the bytes allocated inside the block
    method: str = ""

    @property
    def total_bytes(self) -> int:
        return self.start_bytes + self.above_start_bytes


def resident_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct storages behind the parameters and buffers of ``modules``."""
    seen: dict[tuple[str, int], int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


@contextlib.contextmanager
def peak_memory(device: str | torch.device, *resident: nn.Module) -> Iterator[PeakMemory]:
    """Measure the peak bytes of live torch tensors inside the ``with`` block.

    CUDA: the allocator's own counters. CPU: the allocation events of torch's profiler,
    summed in time order; the modules in ``resident`` give the bytes live at the start
    (what ``torch.cuda.memory_allocated()`` reports on CUDA).
    """
    device = torch.device(device)
    result = PeakMemory(device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.start_bytes = torch.cuda.memory_allocated(device)
        result.method = "torch.cuda.max_memory_allocated"
        yield result
        torch.cuda.synchronize(device)
        result.above_start_bytes = torch.cuda.max_memory_allocated(device) - result.start_bytes
        return
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on cpu or cuda, not {device}")
    from torch.profiler import ProfilerActivity, profile

    result.start_bytes = resident_bytes(*resident)
    result.method = "torch.profiler CPU allocation events (profile_memory=True)"
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        yield result
    result.above_start_bytes = _peak_from_allocation_events(prof)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what the profiler's C++ side prints to file descriptor 2 (kineto's start/stop
    trace lines, c10's note about blocks allocated before profiling started: expected here,
    since the model was loaded before). Python exceptions still propagate."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _peak_from_allocation_events(prof) -> int:
    """The running maximum of allocated-minus-freed bytes over the profiler's memory events."""
    events = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


# --- latency -----------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[[], Any],
    device: str | torch.device,
    *,
    warmup: int = 1,
    repeats: int = 3,
    progress: Any = None,
) -> list[float]:
    """Wall times (seconds) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    ``progress``: a tqdm bar advanced by one per call.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
        if progress is not None:
            progress.update()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if progress is not None:
            progress.update()
    return times


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


# --- settings and environment ------------------------------------------------------------


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
    import bitsandbytes
    import diffusers

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "device_name": device_name,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "cpu_threads": torch.get_num_threads(),
    }


def _model_summary(transformer: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    spec = getattr(transformer, "hprune_quantization", None)
    return {
        "architecture": type(transformer).__name__,
        "dtype": quantization.dtype_name(dtype),
        "quantization": spec.scheme if spec else None,
        "parameters": parameter_count(transformer),
        "linear_parameter_fraction": linear_parameter_fraction(transformer),
    }


# --- a whole pipeline --------------------------------------------------------------------


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


# --- a full-size architecture from its config --------------------------------------------


def read_arch_config(path: str | Path) -> dict[str, Any]:
    """A transformer ``config.json`` (e.g. ../shared/data/architectures/*.json), validated."""
    from generation.adapters import adapter_class

    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"architecture config {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"architecture config {path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "_class_name" not in config:
        raise UserError(f"{path} is not a diffusers transformer config (no _class_name)")
    adapter_class(config["_class_name"])  # raises for an architecture hprune does not support
    return config


def build_from_config(config: Mapping[str, Any], device: str | torch.device = "meta") -> nn.Module:
    """The transformer ``config`` describes, with random weights on ``device`` (meta: no memory)."""
    import diffusers

    cls = getattr(diffusers, config["_class_name"])
    try:
        with torch.device(device):
            model = cls.from_config(dict(config))
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"cannot build a {config['_class_name']} from this config: {exc}") from exc
    return model.eval().requires_grad_(False)


def count_model(
    model: nn.Module, *, dtype: torch.dtype = torch.bfloat16, scheme: str | None = None
) -> dict[str, Any]:
    """Parameters and stored bytes of an unquantised (possibly meta) model, as is and quantised."""
    summary = {
        "architecture": type(model).__name__,
        "dtype": quantization.dtype_name(dtype),
        "quantization": scheme,
        "parameters": parameter_count(model),
        "linear_parameter_fraction": linear_parameter_fraction(model),
        **_bytes_fields(expected_bytes(model, scheme, dtype)),
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
    from generation.adapters import get_adapter
    from generation.distill.encoding import predict_velocity

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


# --- the command --------------------------------------------------------------------------

#: Text tokens a pipeline feeds the transformer at full size: SD3 = 77 CLIP + 256 T5
#: (max_sequence_length default), FLUX = 512 T5 tokens (FLUX.1-dev's default).
DEFAULT_TEXT_TOKENS = {"SD3Transformer2DModel": 333, "FluxTransformer2DModel": 512}


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
    from generation.devices import resolve_device, resolve_dtype
    from generation.loading import load_pipeline, model_fingerprint

    device = resolve_device(device or "auto")
    pipe = load_pipeline(model, dtype=resolve_dtype(dtype), device=device)
    report = profile_pipeline(pipe, device=device, settings=settings)
    report["source"] = {"model": str(model), "fingerprint": model_fingerprint(model)}
    return report


def _profile_arch_config(
    path, *, device, dtype, scheme, remove, steps, latent_size, text_tokens, warmup, repeats
) -> dict[str, Any]:
    from generation.devices import resolve_device, resolve_dtype

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
        report = {**count_model(model, dtype=dtype, scheme=scheme), "device": "meta"}
    else:
        if scheme is not None:
            quantization.quantize_transformer(model, scheme, dtype=dtype, device=device)
        report = profile_transformer(
            model,
            device=device,
            latent_size=latent_size,
            text_tokens=text_tokens or DEFAULT_TEXT_TOKENS[config["_class_name"]],
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
    from generation.adapters import get_adapter
    from generation.pruning import apply_plan, explicit_plan

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
    from hprune.fileio import atomic_write_text

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
    parts = [
        f"{report['architecture']} ({scheme}, {report['device']})",
        f"{report['parameters'] / 1e9:.3f}B parameters"
        if report["parameters"] >= 1e8
        else f"{report['parameters']:,} parameters",
        f"weights {report['weights_bytes'] / 1e9:.3f} GB"
        if report["weights_bytes"] >= 1e8
        else f"weights {report['weights_bytes'] / 1e6:.2f} MB",
    ]
    for name in ("step", "image"):
        if name in report:
            entry = report[name]
            parts.append(
                f"{name} {entry['latency_ms_median']:.1f} ms, "
                f"peak {entry['peak_memory_bytes'] / 1e6:.1f} MB"
            )
    return "; ".join(parts)
