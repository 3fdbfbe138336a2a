"""What a model weighs: its parameters and the bytes of the tensors it stores.

- **Stored bytes** are the bytes of the tensors the model stores (its state dict), at
  the dtype it runs in, never ``get_memory_footprint()``. They split into *weights*
  (the parameters; for a bitsandbytes layer the packed 4-bit or int8 weights plus their
  quantisation state) and *buffers* (constants stored beside them, such as SD3's
  sin-cos position table, which no scheme quantises). For a full-size architecture built
  on the meta device they are computed from the same layout
  (:func:`generation.transforms.quantization.expected_state`), without any weights in memory.
- **Parameters** count the original weights: a quantised layer counts
  ``in_features x out_features`` (+ bias), like the layer it replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from generation.transforms import quantization


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
    model: nn.Module,
    scheme: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    *,
    double_quant: bool = True,
) -> StoredBytes:
    """Bytes ``model`` (unquantised, possibly on the meta device) would store in ``dtype``,
    after quantisation with ``scheme`` (4-bit: double-quantised unless told otherwise)."""
    state = quantization.expected_state(model, scheme, dtype, double_quant=double_quant)
    return stored_bytes(model, state)
