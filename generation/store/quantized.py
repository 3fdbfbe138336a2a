"""A quantised transformer on disk: written by ``hprune quantize``, read by the loader.

On disk a quantised transformer is a normal diffusers folder (``config.json`` with the
architecture, unchanged) plus:

- ``diffusion_pytorch_model.safetensors``: the bitsandbytes state, as
  ``Linear4bit``/``Linear8bitLt`` write it (packed 4-bit weights, ``absmax`` per block of
  64 weights, the 16-value code book and the packed quant-state description; int8 weights
  and per-row scales ``SCB``) plus every other parameter in the compute dtype;
- the model record's ``quantization`` entry (:class:`QuantizationSpec`: scheme, compute
  dtype, the names of the quantised layers), which is what makes the loader take the
  quantised branch (:func:`load_quantized_transformer`), and a ``history`` entry.

Plain ``from_pretrained`` cannot read such a folder (the stored shapes are the packed
ones): load it through :func:`generation.store.loading.load_pipeline`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from generation.transforms.pruned_classes import restore_recorded_removal, transformer_class
from generation.transforms.quantization import (
    QuantizationSpec,
    dtype_name,
    quantized_state_dict,
    restore_quantized_layers,
)
from hprune.errors import UserError

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def save_quantized_transformer(model: nn.Module, directory: str | Path) -> None:
    """Write ``config.json`` and the quantised weights of ``model`` to ``directory``.

    The recipe (:class:`QuantizationSpec`) goes into the model record, which the caller writes.
    """
    from safetensors.torch import save_file

    if getattr(model, "hprune_quantization", None) is None:
        raise ValueError("the model was not quantised by quantize_transformer()")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_config(directory)
    save_file(quantized_state_dict(model), directory / WEIGHTS_FILE, metadata={"format": "pt"})


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path} is missing: the quantised transformer is incomplete")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _empty_transformer(directory: Path, record) -> nn.Module:
    """The transformer of ``directory``'s config, parameters on the meta device, buffers real,
    without the subcomponents the record lists (so its state matches the file)."""
    from accelerate import init_empty_weights

    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    try:
        cls = transformer_class(config.get("_class_name"))
    except UserError as exc:
        raise UserError(f"{directory / 'config.json'}: {exc}") from None
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    restore_recorded_removal(model, record.removed_parts_current())
    return model


def load_quantized_transformer(
    directory: str | Path,
    record,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The quantised transformer stored in ``directory`` (whose model record is ``record``).

    ``dtype`` is the compute dtype (default: the one recorded at quantisation). It is
    applied explicitly to every unquantised parameter: without it they would come back in
    whatever dtype the file holds (design.md's fp16 pitfall). The quantised weights are
    placed straight on ``device``.
    """
    directory = Path(directory)
    spec = QuantizationSpec.from_dict(record.quantization, source=str(directory))
    if dtype is not None and dtype != spec.torch_dtype:
        spec = QuantizationSpec(**{**asdict(spec), "compute_dtype": dtype_name(dtype)})
    device = torch.device(device)
    model = _empty_transformer(directory, record)
    state = _load_state(directory / WEIGHTS_FILE)
    restore_quantized_layers(model, state, spec, device, where=str(directory))
    rest = {
        k: v.to(device=device, dtype=spec.torch_dtype) if v.is_floating_point() else v.to(device)
        for k, v in state.items()
    }
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    restored = set(spec.modules)
    non_persistent = _non_persistent_keys(model)
    missing = [
        k for k in missing if k.rpartition(".")[0] not in restored and k not in non_persistent
    ]
    if missing or unexpected:
        raise UserError(
            f"{directory / WEIGHTS_FILE} does not match the model's config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, buffer in list(model.named_buffers()):
        if buffer.device != device:
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner)
            module._buffers[attr] = buffer.to(device)
    model.hprune_quantization = spec
    return model.eval().requires_grad_(False)


def _non_persistent_keys(model: nn.Module) -> set[str]:
    keys = set()
    for prefix, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            keys.add(f"{prefix}.{name}" if prefix else name)
    return keys
