"""Quantising a model folder: its transformer quantised, the rest linked, the record extended."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from generation.adapters import record_for_transformer
from generation.devices import resolve_device, resolve_dtype
from generation.model_record import read_record, write_record
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_transformer, resolve_model_dir, transformer_dir
from generation.store.quantized import save_quantized_transformer
from generation.store.saving import link_tree
from generation.transforms.footprint import expected_bytes, stored_bytes
from generation.transforms.quantization import check_scheme, quantize_transformer
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    scheme: str
    compute_dtype: str
    double_quant: bool
    layers: int
    bytes_before: int  # weight bytes of the transformer before, in the compute dtype
    bytes_after: int  # weight bytes (with quantisation state) of the quantised transformer


def quantize_model(
    model: str | Path,
    out: str | Path,
    *,
    scheme: str,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    double_quant: bool = True,
    overwrite: bool = False,
) -> QuantizeResult:
    """Quantise the transformer of ``model`` and write a complete model directory to ``out``.

    The other components of a pipeline directory are hard-linked (copied where links are
    impossible); the model record gains ``quantization`` and a ``quantize`` history entry.
    ``out`` appears whole or not at all.
    """
    check_scheme(scheme)
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    source = resolve_model_dir(model)
    source_transformer = transformer_dir(source)
    if out.resolve() in (source.resolve(), source_transformer.resolve()):
        raise UserError("--out must differ from --model: the input would be replaced")
    record = read_record(source_transformer)
    if record is not None and record.quantization:
        raise UserError(
            f"{source} is already quantised ({record.quantization.get('scheme')}); "
            "quantise the unquantised model instead"
        )
    transformer = load_transformer(source, dtype=dtype, device=device)
    if record is None:
        record = record_for_transformer(transformer)
    dtype = dtype or next(transformer.parameters()).dtype
    bytes_before = expected_bytes(transformer, None, dtype).weights
    spec = quantize_transformer(
        transformer, scheme, dtype=dtype, device=device, double_quant=double_quant
    )
    bytes_after = stored_bytes(transformer).weights
    record = replace(
        record, quantization=spec.to_dict(), parent_fingerprint=model_fingerprint(source)
    ).with_history(
        "quantize",
        scheme=scheme,
        compute_dtype=spec.compute_dtype,
        double_quant=spec.double_quant,
        layers=len(spec.modules),
        bitsandbytes=spec.bitsandbytes_version,
        weights_bytes_before=bytes_before,
        weights_bytes_after=bytes_after,
    )
    is_pipeline = source_transformer != source
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if is_pipeline:
            link_tree(source, tmp, skip={"transformer"})
        target = tmp / "transformer" if is_pipeline else tmp
        save_quantized_transformer(transformer, target)
        write_record(tmp, record)
    return QuantizeResult(
        path=out,
        scheme=scheme,
        compute_dtype=spec.compute_dtype,
        double_quant=spec.double_quant,
        layers=len(spec.modules),
        bytes_before=bytes_before,
        bytes_after=bytes_after,
    )
