"""NF4 byte accounting on odd-sized layers against real bitsandbytes ``Linear4bit`` on the CPU.

A layer of n weights stores ceil(n / 2) packed bytes and ceil(n / 64) block scales (float32, or
uint8 with double quantisation plus ceil(blocks / 256) float32 nested scales). Layers whose
weight count is a multiple of 64 (every layer of the toys) cannot tell ceil from floor; these can:
33 x 7 (231 weights: 116 bytes, 4 blocks), 65 x 3 (195: 98, 4), 1 x 1 (1: 1, 1) and 129 x 129
(16,641: 8,321 bytes, 261 blocks, 2 nested blocks).
"""

from __future__ import annotations

import math

import bitsandbytes as bnb
import pytest
import torch

from generation.transforms import quantization
from generation.transforms.footprint import tensor_bytes

SHAPES = [(33, 7), (65, 3), (1, 1), (129, 129)]


def real_layer(linear: torch.nn.Linear, scheme: str, double_quant: bool) -> torch.nn.Module:
    """bitsandbytes' own Linear4bit, built and quantised the documented way (on ``.to``)."""
    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=torch.float32,
        compress_statistics=double_quant,
        quant_type=scheme,
    )
    layer.weight = bnb.nn.Params4bit(
        linear.weight.detach().clone(),
        requires_grad=False,
        blocksize=64,
        compress_statistics=double_quant,
        quant_type=scheme,
    )
    if linear.bias is not None:
        layer.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return layer.to("cpu")


def layout(state):
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
@pytest.mark.parametrize(("n_in", "n_out"), SHAPES)
def test_predicted_layout_is_what_bitsandbytes_stores(n_in, n_out, scheme, double_quant) -> None:
    torch.manual_seed(n_in * 1000 + n_out)
    linear = torch.nn.Linear(n_in, n_out, bias=n_in != 1)
    layer = real_layer(linear, scheme, double_quant)
    stored = layer.state_dict()
    # the offset's decimal form is written into the packed JSON description: pass the real one
    offset = {"offset": float(layer.weight.quant_state.offset)} if double_quant else {}
    predicted = quantization.quantized_linear_state(
        linear, scheme, torch.float32, double_quant=double_quant, **offset
    )
    assert layout(predicted) == layout(stored)

    n = n_in * n_out
    blocks = math.ceil(n / 64)
    assert stored["weight"].numel() == math.ceil(n / 2)
    assert stored["weight.absmax"].numel() == blocks
    expected = math.ceil(n / 2) + 16 * 4  # packed codes, the 16-entry code book
    if double_quant:
        assert stored["weight.nested_absmax"].numel() == math.ceil(blocks / 256)
        expected += blocks + 4 * math.ceil(blocks / 256) + 256 * 4  # uint8 scales, nested
    else:
        expected += 4 * blocks  # float32 scales
    expected += 4 * n_out * (linear.bias is not None)
    expected += stored[f"weight.quant_state.bitsandbytes__{scheme}"].numel()  # packed JSON
    assert tensor_bytes(predicted) == tensor_bytes(stored) == expected


@pytest.mark.parametrize("double_quant", [True, False])
def test_a_model_of_odd_layers_quantises_to_the_predicted_bytes(double_quant) -> None:
    """The project's own path (quantize_transformer, quantized_state_dict) on a model of odd
    layers stores exactly what expected_state predicts, tensor by tensor."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(i, o) for i, o in SHAPES))
    predicted_typical = quantization.expected_state(
        model, "nf4", torch.float32, double_quant=double_quant
    )
    unquantized = torch.nn.Sequential(*(torch.nn.Linear(i, o) for i, o in SHAPES))
    quantization.quantize_transformer(model, "nf4", double_quant=double_quant, progress=False)
    stored = quantization.quantized_state_dict(model)
    offsets = quantization.double_quant_offsets(model)
    assert len(offsets) == (len(SHAPES) if double_quant else 0)
    exact = quantization.expected_state(
        unquantized, "nf4", torch.float32, double_quant=double_quant, offsets=offsets
    )
    assert layout(exact) == layout(stored)
    assert tensor_bytes(exact) == tensor_bytes(stored)
    assert predicted_typical.keys() == stored.keys()
    assert stored["0.weight"].numel() == 116 and stored["3.weight.absmax"].numel() == 261


class OddModel(torch.nn.Module):
    """Two odd layers, a norm (no Linear: never quantised) and a persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(33, 7)  # 231 weights + 7 biases
        self.b = torch.nn.Linear(7, 3, bias=False)  # 21 weights
        self.norm = torch.nn.LayerNorm(3)  # 6 parameters
        self.register_buffer("table", torch.zeros(5, 2))  # 10 values, not parameters


def test_footprint_of_odd_layers_by_hand() -> None:
    """Parameters count a quantised layer's original weights; stored bytes split into weights
    (with their quantisation state) and buffers, as predicted on the meta device."""
    from generation.transforms.footprint import (
        expected_bytes,
        linear_parameter_fraction,
        parameter_count,
        stored_bytes,
    )

    torch.manual_seed(0)
    model = OddModel()
    assert parameter_count(model) == 231 + 7 + 21 + 6
    assert linear_parameter_fraction(model) == pytest.approx((231 + 7 + 21) / 265)
    plain = stored_bytes(model)
    assert (plain.weights, plain.buffers, plain.total) == (265 * 4, 40, 265 * 4 + 40)
    bf16 = expected_bytes(model, None, torch.bfloat16)
    assert (bf16.weights, bf16.buffers) == (265 * 2, 20)

    predicted = expected_bytes(model, "nf4", torch.float32, double_quant=False)
    quantization.quantize_transformer(model, "nf4", double_quant=False, progress=False)
    assert parameter_count(model) == 265  # the weights a quantised layer stands for
    real = stored_bytes(model)
    assert real == predicted and real.buffers == 40
    json_bytes = sum(
        v.numel() for k, v in quantization.quantized_state_dict(model).items() if "quant_state" in k
    )
    # a: 116 packed + 4 float32 scales, b: 11 packed + 1 scale; 16-entry code books; biases, norm
    expected = (116 + 4 * 4) + (11 + 1 * 4) + 2 * 16 * 4 + 7 * 4 + 6 * 4 + json_bytes
    assert real.weights == expected
