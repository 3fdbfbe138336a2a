"""variants.yaml: the models a stimulus set compares, and how each one renders.

The file is a YAML list, one entry per variant::

    - name: original              # a label for people running the study; never shown to participants
      model: models/sd35-turbo    # a pipeline directory (relative to this file) or a cached hub id
      reference: true             # the variant the *-vs-original metrics compare against (at most one)
      dtype: bfloat16             # float32 (default), float16 or bfloat16
      quantization: nf4           # optional: nf4, fp4 or int8
      pipeline:
        steps: 4
        guidance: 0.0
        resolution: 1024          # or [height, width]
        max_sequence_length: 256  # optional
        scheduler: FlowMatchEulerDiscreteScheduler   # optional; or {class: ..., <config overrides>}

Unknown keys are refused (a typo must not silently change a study). Reading validates
everything it can without loading a model: required fields, types, unique names, one
reference at most, and that each model directory exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hprune.errors import UserError

DTYPES = ("float32", "float16", "bfloat16")
# The bitsandbytes weight schemes variants.yaml may ask for (and a model record may name);
# generation.quantization implements them.
QUANTIZATION_SCHEMES = ("nf4", "fp4", "int8")
_VARIANT_KEYS = {"name", "model", "reference", "dtype", "quantization", "pipeline"}
_PIPELINE_KEYS = {"steps", "guidance", "resolution", "max_sequence_length", "scheduler"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PipelineOptions:
    """How a variant's pipeline is called."""

    steps: int
    guidance: float
    height: int
    width: int
    max_sequence_length: int | None = None
    scheduler: str | None = None
    scheduler_options: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Variant:
    """One row of variants.yaml, with its model resolved to a directory or a hub id."""

    name: str
    model: str
    pipeline: PipelineOptions
    dtype: str = "float32"
    quantization: str | None = None
    reference: bool = False

    def definition(self) -> dict[str, Any]:
        """Everything that decides the variant's images, as plain JSON data."""
        return asdict(self)

    def definition_hash(self) -> str:
        """A short hash of :meth:`definition`: it changes whenever the images would."""
        text = json.dumps(self.definition(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_variants(path: str | Path, *, check_models: bool = True) -> list[Variant]:
    """Read and validate variants.yaml; relative model paths are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"variants file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty YAML list of variants")
    variants = [
        parse_variant(entry, where=f"{path}: variant {index + 1}", base_dir=path.parent)
        for index, entry in enumerate(data)
    ]
    check_variants(variants, where=str(path))
    if check_models:
        for variant in variants:
            check_model_exists(variant)
    return variants


def parse_variant(entry: Any, *, where: str, base_dir: Path) -> Variant:
    """One variant from its YAML mapping; UserError naming the entry and field on any problem."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping with name, model and pipeline")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "\n" in name:
        raise UserError(f"{where}: 'name' must be a non-empty single-line string")
    where = f"{where} ({name!r})"
    _refuse_unknown_keys(entry, _VARIANT_KEYS, where)
    model = entry.get("model")
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"{where}: 'model' must be a directory or a hub id")
    dtype = entry.get("dtype", "float32")
    if dtype not in DTYPES:
        raise UserError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    quantization = entry.get("quantization")
    if quantization is not None and quantization not in QUANTIZATION_SCHEMES:
        raise UserError(
            f"{where}: quantization must be one of {', '.join(QUANTIZATION_SCHEMES)}, got {quantization!r}"
        )
    reference = entry.get("reference", False)
    if not isinstance(reference, bool):
        raise UserError(f"{where}: 'reference' must be true or false")
    return Variant(
        name=name,
        model=resolve_model(model, base_dir),
        pipeline=_parse_pipeline(entry.get("pipeline"), where),
        dtype=dtype,
        quantization=quantization,
        reference=reference,
    )


def check_variants(variants: list[Variant], *, where: str) -> None:
    """Cross-row rules: unique names, at most one reference."""
    seen: set[str] = set()
    for variant in variants:
        if variant.name in seen:
            raise UserError(f"{where}: duplicate variant name {variant.name!r}")
        seen.add(variant.name)
    references = [v.name for v in variants if v.reference]
    if len(references) > 1:
        raise UserError(f"{where}: more than one reference variant ({', '.join(references)})")


def reference_variant(variants: list[Variant]) -> Variant | None:
    """The variant marked ``reference: true``, if any."""
    return next((v for v in variants if v.reference), None)


def resolve_model(model: str, base_dir: Path) -> str:
    """A local model path made absolute (relative to ``base_dir``), or a hub id unchanged."""
    candidate = Path(os.path.expanduser(model))
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    if candidate.exists() or not _HUB_ID.match(model):
        return str(candidate.resolve())
    return model


def check_model_exists(variant: Variant) -> None:
    """A local model must be a directory; a hub id must already be in the local cache.

    Rendering never downloads: a hub model is fetched beforehand (``hf download ID``).
    """
    model = variant.model
    if Path(model).is_absolute():
        if not Path(model).is_dir():
            raise UserError(f"variant {variant.name!r}: model directory {model} does not exist")
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        raise UserError(
            f"variant {variant.name!r}: {model!r} is neither a local directory nor a hub model "
            f"in the local cache (download it first: hf download {model})"
        )


def local_model_dir(model: str) -> Path:
    """The directory holding a variant's model: the path itself, or a cached hub snapshot."""
    if Path(model).is_absolute():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # the hub library raises several error types for "not cached"
        raise UserError(
            f"hub model {model!r} is not in the local cache ({type(exc).__name__})"
        ) from None


def _refuse_unknown_keys(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))} (allowed: {', '.join(sorted(allowed))})"
        )


def _parse_pipeline(options: Any, where: str) -> PipelineOptions:
    if not isinstance(options, dict):
        raise UserError(
            f"{where}: 'pipeline' must be a mapping with steps, guidance and resolution"
        )
    _refuse_unknown_keys(options, _PIPELINE_KEYS, f"{where} pipeline")
    for key in ("steps", "guidance", "resolution"):
        if key not in options:
            raise UserError(f"{where}: pipeline.{key} is required")
    steps = options["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{where}: pipeline.steps must be a positive integer, got {steps!r}")
    guidance = options["guidance"]
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or guidance < 0:
        raise UserError(f"{where}: pipeline.guidance must be a number >= 0, got {guidance!r}")
    height, width = _parse_resolution(options["resolution"], where)
    max_len = options.get("max_sequence_length")
    if max_len is not None and (
        isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1
    ):
        raise UserError(f"{where}: pipeline.max_sequence_length must be a positive integer")
    scheduler, scheduler_options = _parse_scheduler(options.get("scheduler"), where)
    return PipelineOptions(
        steps=steps,
        guidance=float(guidance),
        height=height,
        width=width,
        max_sequence_length=max_len,
        scheduler=scheduler,
        scheduler_options=scheduler_options,
    )


def _parse_resolution(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = [value, value]
    elif isinstance(value, list | tuple) and len(value) == 2:
        pair = list(value)
    else:
        raise UserError(
            f"{where}: pipeline.resolution must be a size or [height, width], got {value!r}"
        )
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8 for v in pair):
        raise UserError(
            f"{where}: pipeline.resolution must be multiples of 8 (>= 8), got {value!r}"
        )
    return pair[0], pair[1]


def _parse_scheduler(value: Any, where: str) -> tuple[str | None, dict]:
    if value is None:
        return None, {}
    if isinstance(value, str) and value.strip():
        return value.strip(), {}
    if isinstance(value, dict) and isinstance(value.get("class"), str):
        options = {k: v for k, v in value.items() if k != "class"}
        return value["class"], options
    raise UserError(
        f"{where}: pipeline.scheduler must be a diffusers scheduler class name or {{class: ..., options}}"
    )
