"""Post-training weight quantisation of a diffusion transformer with bitsandbytes (W4A16 / W8A16).

HierarchicalPrune's last stage turns every ``nn.Linear`` of the transformer into
``bnb.nn.Linear4bit(quant_type="nf4")`` (or ``"fp4"``), or ``bnb.nn.Linear8bitLt``
for ``int8``; activations stay in the pipeline's dtype (the compute dtype).

4-bit layers use double quantisation by default, as the reference keeps bitsandbytes'
default (``compress_statistics=True``, QLoRA): the float32 ``absmax`` of every block of 64
weights is itself quantised to 8 bits in blocks of 256, with one float32 scale per block
of 256 and one float32 offset per layer. That is 0.5 + 1/64 + 4/16384 = 0.5159 bytes per
weight instead of 0.5 + 4/64 = 0.5625 without it (``double_quant=False``).

Why the layers are replaced here rather than through diffusers' ``BitsAndBytesConfig``:
diffusers' quantiser refuses to run without a GPU ("No GPU found. A GPU is needed for
quantization."), although bitsandbytes 0.50 quantises and runs 4-bit and 8-bit layers
on the CPU (quantisation happens when a layer is moved with ``.to(device)``). Swapping
the layers ourselves is one code path for both devices, quantises layer by layer (the
peak memory is the model plus one layer), and lets the project's own loader rebuild a
quantised transformer on the CPU as well as on CUDA.

This module works in memory: it replaces the layers (:func:`quantize_transformer`), gives
the tensors a quantised model stores (:func:`quantized_state_dict`, and
:func:`expected_state` without quantising), and refills layers from stored tensors
(:func:`restore_quantized_layers`). ``generation.store.quantized`` writes and reads them.

bitsandbytes is imported inside the functions that need it: the import costs seconds of
CPU, and a model that is never quantised (most renders, every unquantised profile) does
not need it. No bitsandbytes layer can exist before bitsandbytes is imported, which is
what :func:`is_quantized_layer` relies on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from generation.devices import resolve_dtype
from hprune.contracts.variants import QUANTIZATION_SCHEMES as SCHEMES
from hprune.errors import UserError

#: Weights per ``absmax`` scale in the 4-bit schemes (bitsandbytes' default, the QLoRA setting).
BLOCKSIZE_4BIT = 64
#: LLM.int8() outlier threshold: activation columns above it are multiplied in 16-bit.
#: 6.0 is the value of the LLM.int8() paper and diffusers' ``BitsAndBytesConfig`` default.
INT8_THRESHOLD = 6.0
#: bitsandbytes' fast AVX512-BF16 CPU kernel needs these divisibilities (it asserts them).
_CPU_PACK_ROWS = 32


@dataclass(frozen=True)
class QuantizationSpec:
    """What was quantised and how: the loader's recipe for rebuilding the layers."""

    scheme: str
    compute_dtype: str  # "bfloat16", "float16", "float32"
    modules: tuple[str, ...]  # qualified names of the quantised nn.Linear layers
    blocksize: int = BLOCKSIZE_4BIT
    double_quant: bool = True  # 4-bit: absmax quantised to 8 bits (bitsandbytes' default)
    int8_threshold: float = INT8_THRESHOLD
    bitsandbytes_version: str = dataclasses.field(default_factory=lambda: _bnb_version())

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.compute_dtype)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "modules": list(self.modules)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model record") -> QuantizationSpec:
        """The spec stored in a model record, validated (UserError when it is unusable).

        A record written before hprune recorded ``double_quant`` was quantised without it."""
        try:
            spec = cls(**{"double_quant": False, **data, "modules": tuple(data["modules"])})
            check_scheme(spec.scheme)
            spec.torch_dtype  # noqa: B018 -- validates the dtype name
        except (TypeError, KeyError) as exc:
            raise UserError(f"{source}: malformed quantisation entry ({exc})") from None
        return spec


def _bnb_version() -> str:
    import bitsandbytes as bnb

    return bnb.__version__


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise UserError(
            f"unknown quantisation scheme {scheme!r} (choose from {', '.join(SCHEMES)})"
        )
    return scheme


# --- which layers ------------------------------------------------------------------------


def is_quantized_layer(module: nn.Module) -> bool:
    bnb = sys.modules.get("bitsandbytes")  # not imported yet: no bitsandbytes layer exists
    return bnb is not None and isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt)


def is_quantized(model: nn.Module) -> bool:
    """True when any layer of ``model`` is a bitsandbytes layer."""
    return any(is_quantized_layer(m) for m in model.modules())


def quantizable_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """Every plain ``nn.Linear`` of ``model`` that has weights (bitsandbytes layers subclass
    it and are skipped; pruning can leave a layer with no inputs, only its bias)."""
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Linear)
            and not is_quantized_layer(module)
            and module.in_features * module.out_features > 0
        ):
            yield name, module


# --- building layers ---------------------------------------------------------------------


def _empty_quantized_layer(
    in_features: int, out_features: int, bias: bool, spec: QuantizationSpec
) -> nn.Module:
    """A bitsandbytes layer with meta-device parameters, to be filled and then moved."""
    import bitsandbytes as bnb

    if spec.scheme == "int8":
        return bnb.nn.Linear8bitLt(
            in_features,
            out_features,
            bias=bias,
            has_fp16_weights=False,
            threshold=spec.int8_threshold,
            device="meta",
        )
    layer = bnb.nn.Linear4bit(
        in_features,
        out_features,
        bias=bias,
        compute_dtype=spec.torch_dtype,
        compress_statistics=spec.double_quant,
        quant_type=spec.scheme,
        device="meta",
    )
    # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first
    # inference call. That kernel computes in bf16 and asserts these divisibilities, so we
    # allow it only where it is exact and safe; elsewhere the generic dequantise+matmul runs.
    # With double quantisation the repacking dequantises the 8-bit scales to bf16 and its
    # inverse quantises them again, so a model saved after an inference call would not
    # reload to the same layer: the kernel stays off.
    layer.support_avx512bf16_for_cpu = bool(
        layer.support_avx512bf16_for_cpu
        and not spec.double_quant
        and spec.torch_dtype == torch.bfloat16
        and out_features % _CPU_PACK_ROWS == 0
        and in_features % spec.blocksize == 0
    )
    return layer


def _quantize_linear(linear: nn.Linear, spec: QuantizationSpec, device: torch.device) -> nn.Module:
    """Quantise one layer on ``device`` (bitsandbytes quantises on ``.to(device)``)."""
    import bitsandbytes as bnb

    layer = _empty_quantized_layer(
        linear.in_features, linear.out_features, linear.bias is not None, spec
    )
    weight = linear.weight.detach().to(spec.torch_dtype)
    if spec.scheme == "int8":
        # Int8Params quantises on .to(device) only when its data is on the CPU (a CUDA tensor
        # would stay unquantised), so it starts from a CPU copy of the weight
        layer.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False)
    else:
        layer.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            blocksize=spec.blocksize,
            compress_statistics=spec.double_quant,
            quant_type=spec.scheme,
            module=layer,
        )
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().to(spec.torch_dtype), requires_grad=False)
    return layer.train(linear.training).to(device)


def quantize_transformer(
    model: nn.Module,
    scheme: str,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    double_quant: bool = True,
    progress: bool = True,
) -> QuantizationSpec:
    """Replace every ``nn.Linear`` of ``model`` in place by a bitsandbytes layer.

    ``double_quant``: 4-bit schemes quantise their block scales too (the reference's setting).
    ``dtype`` is the compute dtype (the pipeline's dtype; default: the model's floating
    dtype); the parameters that stay unquantised (norms, embeddings, biases) are cast to
    it as well. Layers are quantised one at a time on ``device`` (default: where the
    model's parameters are), so the peak memory is the model plus one layer.
    """
    check_scheme(scheme)
    if is_quantized(model):
        raise UserError("the model is already quantised; quantise the unquantised model instead")
    first = next(model.parameters())
    if first.device.type == "meta":
        raise ValueError("cannot quantise meta tensors; use expected_state() to count bytes")
    dtype = dtype or first.dtype
    device = torch.device(device) if device is not None else first.device
    # nn.Module.to: diffusers' ModelMixin.to warns on every dtype cast of a model it did not load
    nn.Module.to(model, device=device, dtype=dtype)
    names = [name for name, _ in quantizable_linears(model)]
    spec = QuantizationSpec(
        scheme=scheme,
        compute_dtype=dtype_name(dtype),
        modules=tuple(names),
        double_quant=bool(double_quant) and scheme != "int8",
    )
    # one layer at a time, holding no reference to the replaced layers: their weights are
    # freed as we go, so the peak is the model plus one layer
    for name in tqdm(
        names, desc=f"quantising to {scheme}", unit="layer", disable=not progress, leave=False
    ):
        model.set_submodule(name, _quantize_linear(model.get_submodule(name), spec, device))
    model.hprune_quantization = spec
    return spec


# --- the tensors a quantised model stores ------------------------------------------------


def _unpack_cpu_layout(layer: nn.Module) -> None:
    """Undo bitsandbytes' AVX512-BF16 CPU repacking of a ``Linear4bit`` in place, exactly.

    bitsandbytes' own inverse (run by ``Linear4bit.state_dict()``) restores the weight
    nibbles but leaves ``absmax`` transposed to the kernel's (K/blocksize, N) layout, so a
    state saved after an inference call would dequantise with scales in the wrong order.
    The scales were rounded to bf16 by the repacking; we keep those values (in float32),
    which is what the in-memory layer computes with, so a reload reproduces it exactly.
    The next inference call repacks.
    """
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    state = layer.weight.quant_state
    if not getattr(state, "packing_format_for_cpu", False):
        return
    n_out, n_in = state.shape
    weight, state = _convert_weight_packed_for_cpu_inverse(layer.weight.data, state)
    if state.absmax.shape == (n_in // state.blocksize, n_out):
        state.absmax = state.absmax.T.reshape(-1).float()
    layer.weight.data = weight
    layer.weight.quant_state = state
    layer.quant_state = state


def canonical_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as plain tensors, with bitsandbytes' CPU repacking undone."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            _unpack_cpu_layout(module)
    return {k: v.detach().as_subclass(torch.Tensor) for k, v in model.state_dict().items()}


def quantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a quantised model stores, in bitsandbytes' canonical layout, on the CPU.

    Tensors that share memory (bitsandbytes hands every layer the same code book) are
    copied, as safetensors requires.
    """
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for key, tensor in canonical_state(model).items():
        tensor = tensor.contiguous()
        storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
        if storage in seen:
            tensor = tensor.clone()
        seen.add(storage)
        state[key] = tensor.cpu()
    return state


def _pop_prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    keys = [k for k in state if k.startswith(prefix)]
    return {k[len(prefix) :]: state.pop(k) for k in keys}


def _restore_layer(
    layer: nn.Module, name: str, state: dict[str, torch.Tensor], spec: QuantizationSpec, device
) -> None:
    """Fill a meta-device bitsandbytes layer from its stored, already quantised tensors."""
    import bitsandbytes as bnb

    try:
        weight = state.pop(f"{name}.weight")
        if spec.scheme == "int8":
            scales = state.pop(f"{name}.SCB").to(device)
            state.pop(f"{name}.weight_format", None)
            weight = weight.to(device)
            layer.weight = bnb.nn.Int8Params(
                weight, requires_grad=False, has_fp16_weights=False, CB=weight, SCB=scales
            )
        else:
            stats = _pop_prefixed(state, f"{name}.weight.")
            layer.weight = bnb.nn.Params4bit.from_prequantized(
                weight, stats, requires_grad=False, device=device, module=layer
            )
        if layer.bias is not None:
            bias = state.pop(f"{name}.bias").to(device=device, dtype=spec.torch_dtype)
            layer.bias = nn.Parameter(bias, requires_grad=False)
    except (KeyError, ValueError, AssertionError, RuntimeError) as exc:
        raise UserError(
            f"the stored quantised layer {name} is incomplete or corrupt ({exc})"
        ) from None


def restore_quantized_layers(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    spec: QuantizationSpec,
    device: torch.device,
    *,
    where: str,
) -> None:
    """Replace the layers ``spec`` names by bitsandbytes layers filled from ``state``.

    ``state`` holds the stored, already quantised tensors (as :func:`quantized_state_dict`
    gives them); the restored layers' entries are taken out of it. ``where`` names the
    source in errors.
    """
    for name in spec.modules:
        linear = model.get_submodule(name) if _has_submodule(model, name) else None
        if not isinstance(linear, nn.Linear):
            raise UserError(f"{where}: the quantised layer {name} does not exist in the model")
        layer = _empty_quantized_layer(
            linear.in_features, linear.out_features, linear.bias is not None, spec
        )
        _restore_layer(layer, name, state, spec, device)
        model.set_submodule(name, layer)


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


# --- what a quantised model stores, without quantising -----------------------------------


#: Block size of the second quantisation (of the 4-bit scales), bitsandbytes' fixed value.
NESTED_BLOCKSIZE = 256
#: The offset a double-quantised layer stores is the mean of its block scales; only the
#: length of its decimal form enters the stored bytes (bitsandbytes writes it into the
#: packed JSON description of the state). Without the weights we assume a value of this
#: form (20 characters): a real layer's is up to ~10 bytes shorter (bf16 weights give offsets
#: with short decimal forms), a few KB over a full-size model of several GB.
TYPICAL_OFFSET = 0.012299999594688416


def quantized_linear_state(
    linear: nn.Linear,
    scheme: str,
    dtype: torch.dtype = torch.bfloat16,
    *,
    double_quant: bool = True,
    offset: float = TYPICAL_OFFSET,
) -> dict[str, torch.Tensor]:
    """Meta tensors with the names, shapes and dtypes a quantised ``linear`` stores.

    nf4/fp4 (bitsandbytes ``Linear4bit``, QLoRA blockwise quantisation): the 4-bit codes
    packed two per byte, one ``absmax`` scale per block of 64 weights (float32; with double
    quantisation uint8, plus one float32 scale per 256 of them and their 256-entry code
    book), the 16-entry float32 code book, bitsandbytes' packed JSON description of the
    state (``offset`` is the double-quantisation offset it contains), and the bias in
    ``dtype``. int8 (``Linear8bitLt``, LLM.int8()): int8 weights, one float32 scale per
    output row (``SCB``), a format byte, the bias.
    Works on meta-device layers, so full-size models are counted without memory.
    """
    from bitsandbytes.functional import QuantState

    check_scheme(scheme)
    n_out, n_in = linear.out_features, linear.in_features

    def empty(shape, tensor_dtype):
        return torch.empty(shape, dtype=tensor_dtype, device="meta")

    if scheme == "int8":
        state = {
            "weight": empty((n_out, n_in), torch.int8),
            "SCB": empty((n_out,), torch.float32),
            "weight_format": empty((), torch.uint8),
        }
    else:
        numel = n_out * n_in
        blocks = math.ceil(numel / BLOCKSIZE_4BIT)
        nested = {}
        if double_quant:
            nested = dict(
                offset=torch.tensor(offset, dtype=torch.float32),
                state2=QuantState(
                    absmax=empty((math.ceil(blocks / NESTED_BLOCKSIZE),), torch.float32),
                    code=empty((NESTED_BLOCKSIZE,), torch.float32),
                    blocksize=NESTED_BLOCKSIZE,
                    dtype=torch.float32,
                ),
            )
        quant_state = QuantState(
            absmax=empty((blocks,), torch.uint8 if double_quant else torch.float32),
            shape=torch.Size((n_out, n_in)),
            code=empty((16,), torch.float32),
            blocksize=BLOCKSIZE_4BIT,
            quant_type=scheme,
            dtype=dtype,
            **nested,
        )
        state = {"weight": empty(((numel + 1) // 2, 1), torch.uint8)}
        state |= {f"weight.{k}": v for k, v in quant_state.as_dict(packed=True).items()}
    if linear.bias is not None:
        state["bias"] = empty((n_out,), dtype)
    return state


def expected_state(
    model: nn.Module,
    scheme: str | None,
    dtype: torch.dtype = torch.bfloat16,
    *,
    double_quant: bool = True,
    offsets: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Meta tensors for everything ``model`` would store after :func:`quantize_transformer`
    with ``scheme`` at compute dtype ``dtype`` (``scheme=None``: stored unquantised in ``dtype``).

    ``model`` is unquantised and may live on the meta device: this is how the byte figures
    of full-size models are computed without their weights. ``offsets`` (layer name ->
    double-quantisation offset) makes the packed descriptions exact where the values are
    known; others assume :data:`TYPICAL_OFFSET`.
    """
    quantized = dict(quantizable_linears(model)) if scheme else {}
    double_quant = double_quant and scheme != "int8"
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict(keep_vars=False).items():
        owner, _, attr = key.rpartition(".")
        if owner in quantized:
            continue
        tensor_dtype = dtype if tensor.is_floating_point() else tensor.dtype
        state[key] = torch.empty(tensor.shape, dtype=tensor_dtype, device="meta")
    for name, linear in quantized.items():
        layer = quantized_linear_state(
            linear,
            scheme,
            dtype,
            double_quant=double_quant,
            offset=(offsets or {}).get(name, TYPICAL_OFFSET),
        )
        for attr, tensor in layer.items():
            state[f"{name}.{attr}" if name else attr] = tensor
    return state


def double_quant_offsets(model: nn.Module) -> dict[str, float]:
    """Layer name -> the double-quantisation offset of each such layer of a quantised model."""
    import bitsandbytes as bnb

    return {
        name: float(module.weight.quant_state.offset.item())
        for name, module in model.named_modules()
        if isinstance(module, bnb.nn.Linear4bit) and module.weight.quant_state.nested
    }
