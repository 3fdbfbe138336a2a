"""Load pipelines and transformers the way hprune wrote them, from a directory or a hub id.

A model hprune wrote is an ordinary diffusers directory: plain
``DiffusionPipeline.from_pretrained`` loads it and computes exactly what the
pruned model computes (a model with removed subcomponents is a pruned class,
``generation.transforms.pruned_classes``). This loader additionally checks the
weights against the model record and loads quantised transformers.

Hub ids go through diffusers' own download (``DiffusionPipeline.download``),
which honours ``HF_HUB_OFFLINE`` and the local cache.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from generation.adapters import get_adapter
from generation.devices import resolve_device, resolve_dtype
from generation.model_record import ModelRecord, read_record
from generation.quiet import quiet_progress
from generation.store.quantized import load_quantized_transformer
from generation.transforms.pruned_classes import restore_recorded_removal, transformer_class
from hprune.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def is_hub_id(model: str | os.PathLike[str]) -> bool:
    """True if ``model`` is not an existing path and reads like ``owner/name``."""
    text = os.fspath(model)
    return not Path(text).exists() and bool(HUB_ID.match(text)) and not text.startswith(".")


def resolve_model_dir(model: str | os.PathLike[str], *, transformer_only: bool = False) -> Path:
    """The local directory of ``model``: the directory itself, or the cached download of a hub id."""
    if is_hub_id(model):
        return _download(os.fspath(model), transformer_only=transformer_only)
    path = Path(model)
    if not path.exists():
        raise UserError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise UserError(f"model {path} is not a directory")
    return path


def _download(repo_id: str, *, transformer_only: bool) -> Path:
    from diffusers import DiffusionPipeline
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        if transformer_only:
            path = snapshot_download(
                repo_id,
                allow_patterns=["model_index.json", "transformer/*"],
                local_files_only=offline,
            )
        else:
            path = DiffusionPipeline.download(repo_id, local_files_only=offline)
    except LOAD_ERRORS as exc:
        hint = (
            " (HF_HUB_OFFLINE is set and the model is not in the local cache)"
            if offline
            else " (check the id, your network and, for gated models, `huggingface-cli login`)"
        )
        raise UserError(f"cannot get hub model {repo_id}{hint}: {_first_line(exc)}") from None
    return Path(path)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path.parent} is not a model directory: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"corrupt {what} {path}: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"corrupt {what} {path}: not a JSON object")
    return data


def transformer_dir(model_dir: Path) -> Path:
    """The transformer folder of a pipeline directory, or the directory itself if it is one."""
    if (model_dir / "model_index.json").is_file():
        index = _read_json(model_dir / "model_index.json", "pipeline index")
        if "transformer" not in index:
            raise UserError(
                f"the pipeline in {model_dir} has no transformer (is it a U-Net model?)"
            )
        return model_dir / "transformer"
    if (model_dir / "config.json").is_file():
        return model_dir
    raise UserError(
        f"{model_dir} is not a model directory: it has neither model_index.json (a pipeline) "
        "nor config.json (a transformer)"
    )


def read_transformer_config(directory: Path) -> dict:
    """The ``config.json`` of a transformer folder, as a dict."""
    return _read_json(directory / "config.json", "transformer config")


def _transformer_class(directory: Path):
    config = read_transformer_config(directory)
    try:
        return transformer_class(config.get("_class_name"))
    except UserError as exc:
        raise UserError(f"{directory / 'config.json'}: {exc}") from None


def _load_quantized(directory: Path, record: ModelRecord, dtype, device):
    """Quantised transformers are loaded by ``generation.store.quantized`` (it knows the
    schemes), straight onto ``device``: bitsandbytes layers are not moved after loading."""
    return load_quantized_transformer(directory, record, dtype=dtype, device=device)


def _apply_record(transformer, record: ModelRecord, directory: Path):
    """Check the weights against the record (blocks and removed subcomponents)."""
    adapter = get_adapter(transformer)
    if adapter.num_blocks != len(record.kept_blocks):
        raise UserError(
            f"{directory}: the record lists {len(record.kept_blocks)} blocks but the weights have "
            f"{adapter.num_blocks}; the directory is inconsistent"
        )
    try:
        restore_recorded_removal(transformer, record.removed_parts_current())
    except UserError as exc:
        raise UserError(f"{directory}: {exc}") from None
    return transformer


def load_transformer(model: str | os.PathLike[str], *, dtype=None, device="cpu"):
    """The transformer of a pipeline directory, a transformer directory or a hub id, in eval mode.

    Checks the weights against the model record; loads quantised transformers.
    """
    directory = transformer_dir(resolve_model_dir(model, transformer_only=True))
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    cls = _transformer_class(directory)
    record = read_record(directory)
    try:
        if record is not None and record.quantization:
            transformer = _load_quantized(directory, record, dtype, device)
        else:
            with quiet_progress():
                transformer = cls.from_pretrained(directory, dtype=dtype)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load the transformer in {directory}: {_first_line(exc)}") from None
    if record is not None:
        _apply_record(transformer, record, directory)
    return transformer.to(device).eval()


def load_pipeline(
    model: str | os.PathLike[str], *, dtype=None, device="cpu", components: dict | None = None
):
    """A diffusers pipeline from a directory or a hub id, with hprune's transformer loading, in eval mode.

    ``components`` replaces stored components, as diffusers' ``from_pretrained`` takes them: a
    module already in memory, or None to leave one out (the text encoders of a pipeline whose
    prompts are already encoded); None for a component the pipeline does not have is ignored.
    Loading shows no library progress bars, and the pipeline's per-call denoising bar is off
    (``pipe.set_progress_bar_config(disable=False)`` turns it back on).
    """
    import torch
    from diffusers import DiffusionPipeline

    directory = resolve_model_dir(model)
    index_path = directory / "model_index.json"
    if not index_path.is_file():
        raise UserError(f"{directory} is not a pipeline directory: model_index.json is missing")
    index = _read_json(index_path, "pipeline index")
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    components = {
        name: module
        for name, module in (components or {}).items()
        if module is not None or name in index
    }
    if "transformer" in index and "transformer" not in components:
        components["transformer"] = load_transformer(directory, dtype=dtype, device="cpu")
    try:
        with quiet_progress():
            pipe = DiffusionPipeline.from_pretrained(directory, dtype=dtype, **components)
    except LOAD_ERRORS as exc:
        raise UserError(f"cannot load the pipeline in {directory}: {_first_line(exc)}") from None
    pipe.set_progress_bar_config(disable=True)  # hprune draws its own bars around pipeline calls
    pipe.to(device)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe
