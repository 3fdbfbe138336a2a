"""Ablation semantics against block outputs computed by hand from the blocks' own sublayers.

``identity`` is the reference implementation's: a removed attention or feed-forward returns
its input (the modulated, normalised stream), SD3.5's attn2 goes with attn, FLUX single
``attn`` keeps ``proj_out`` whole and ``mlp`` drops both MLP layers and keeps the first
``dim`` features; ``zero`` adds nothing. A removed modulation is LayerNorm with gates 1.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from generation.adapters import get_adapter
from generation.store.toy_models import build_flux_transformer, build_sd3_transformer, default_spec


@functools.cache
def _built(arch: str):
    torch.manual_seed(0)
    build = build_flux_transformer if arch == "flux" else build_sd3_transformer
    return build(default_spec(arch)).eval()


def toy(arch: str):
    """A fresh copy of the toy transformer (built once per architecture)."""
    return copy.deepcopy(_built(arch))


def stream_inputs(width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (
        torch.randn(2, 6, width, generator=g),  # image tokens
        torch.randn(2, 4, width, generator=g),  # text tokens
        torch.randn(2, width, generator=g),  # time embedding
    )


def removed_output(x: torch.Tensor, ablation: str) -> torch.Tensor:
    """What a removed attention or feed-forward returns for input ``x``."""
    return x if ablation == "identity" else torch.zeros_like(x)


def modulation(norm, x, temb, removed: bool):
    """The adaLN outputs; removed: LayerNorm(x), every shift/scale 0 and gate 1."""
    if not removed:
        return norm(x, emb=temb)
    chunks = {"AdaLayerNormZero": 5, "SD35AdaLayerNormZeroX": 7}[type(norm).__name__]
    zero, one = torch.zeros_like(temb), torch.ones_like(temb)
    plain = norm.norm(x)
    outputs = [plain, one, zero, zero, one]  # normed, gate_msa, shift_mlp, scale_mlp, gate_mlp
    return tuple([*outputs, plain, one])[:chunks]  # MMDiT-X: normed for attn2, gate_msa2


@torch.no_grad()
def mmdit_by_hand(block, h, c, temb, removed: set[str], ablation: str):
    """An SD3 joint / FLUX double block, written out sublayer by sublayer."""
    dual = getattr(block, "use_dual_attention", False)
    first = modulation(block.norm1, h, temb, "norm1" in removed)
    nh, g_msa, shift, scale, g_mlp = first[:5]
    nc, cg_msa, c_shift, c_scale, c_gmlp = modulation(
        block.norm1_context, c, temb, "norm1_context" in removed
    )
    if "attn" in removed:
        a, ca = removed_output(nh, ablation), removed_output(nc, ablation)
    else:
        a, ca = block.attn(hidden_states=nh, encoder_hidden_states=nc)[:2]
    h = h + g_msa[:, None] * a
    if dual:
        nh2, g_msa2 = first[5:]
        a2 = removed_output(nh2, ablation) if "attn" in removed else block.attn2(hidden_states=nh2)
        h = h + g_msa2[:, None] * a2
    x = block.norm2(h) * (1 + scale[:, None]) + shift[:, None]
    h = h + g_mlp[:, None] * (removed_output(x, ablation) if "ff" in removed else block.ff(x))
    c = c + cg_msa[:, None] * ca
    x = block.norm2_context(c) * (1 + c_scale[:, None]) + c_shift[:, None]
    ff_c = removed_output(x, ablation) if "ff_context" in removed else block.ff_context(x)
    return c + c_gmlp[:, None] * ff_c, h


@torch.no_grad()
def flux_single_by_hand(block, h, c, temb, removed: set[str], ablation: str):
    """A FLUX single block, written out: attention and MLP side by side, one proj_out."""
    x = torch.cat([c, h], dim=1)
    if "norm" in removed:
        nx, gate = block.norm.norm(x), torch.ones_like(temb)
    else:
        nx, gate = block.norm(x, emb=temb)
    attn = removed_output(nx, ablation) if "attn" in removed else block.attn(hidden_states=nx)
    if "mlp" in removed and ablation == "identity":
        out = attn  # proj_mlp and proj_out identities; the first dim features are the attention's
    else:
        mlp = block.act_mlp(block.proj_mlp(nx))
        if "mlp" in removed:
            mlp = torch.zeros_like(mlp)
        out = block.proj_out(torch.cat([attn, mlp], dim=2))
    x = x + gate[:, None] * out
    return x[:, : c.shape[1]], x[:, c.shape[1] :]


CASES = [
    # arch, block, removed subcomponents
    ("sd3", 2, {"attn"}),
    ("sd3", 2, {"ff"}),
    ("sd3", 2, {"ff_context"}),
    ("sd3", 2, {"norm1", "ff_context"}),
    ("sd3", 2, {"norm1_context", "attn", "ff"}),
    ("sd35", 0, {"attn"}),  # MMDiT-X: attn and attn2 go together
    ("sd35", 1, {"attn", "ff"}),
    ("sd35", 1, {"norm1"}),
    ("flux", 1, {"attn"}),
    ("flux", 1, {"ff", "norm1_context"}),
    ("flux", 5, {"attn"}),
    ("flux", 5, {"mlp"}),
    ("flux", 5, {"attn", "mlp"}),
    ("flux", 5, {"norm", "mlp"}),
]


@pytest.mark.parametrize("ablation", ["identity", "zero"])
@pytest.mark.parametrize(("arch", "index", "removed"), CASES)
def test_block_output_matches_the_hand_computation(arch, index, removed, ablation) -> None:
    transformer = toy(arch)
    adapter = get_adapter(transformer, ablation)
    block = adapter.block(index)
    h, c, temb = stream_inputs(transformer.inner_dim)
    by_hand = flux_single_by_hand if adapter.block_kind(index) == "single" else mmdit_by_hand
    expected = by_hand(block, h, c, temb, removed, ablation)
    parts = [(index, name) for name in sorted(removed)]

    with torch.no_grad(), adapter.ablate(parts):
        ablated = adapter.block(index)(hidden_states=h, encoder_hidden_states=c, temb=temb)
    for got, want in zip(ablated, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

    freed = sum(adapter.component_params(index, name) for name in removed)
    before = adapter.total_params()
    adapter.remove_components(parts)
    assert adapter.total_params() == before - freed
    with torch.no_grad():
        structural = adapter.block(index)(hidden_states=h, encoder_hidden_states=c, temb=temb)
    for got, want in zip(structural, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_two_semantics_differ_and_free_what_the_reference_frees() -> None:
    flux = toy("flux")
    identity, zero = get_adapter(flux, "identity"), get_adapter(copy.deepcopy(flux), "zero")
    single = identity.block(5)
    attn, mlp, proj_out = (sum(p.numel() for p in m.parameters()) for m in (
        single.attn, single.proj_mlp, single.proj_out))  # fmt: skip
    width = single.proj_out.out_features
    # identity (reference): attn keeps proj_out whole; mlp (proj_mlp_out) frees all of proj_out
    assert identity.component_params(5, "attn") == attn
    assert identity.component_params(5, "mlp") == mlp + proj_out
    # zero: each frees its own columns of proj_out
    assert zero.component_params(5, "attn") == attn + width * width
    assert zero.component_params(5, "mlp") == mlp + single.mlp_hidden_dim * width
    sd35 = get_adapter(toy("sd35"))
    block = sd35.block(0)
    assert "attn2" not in sd35.components(0)
    assert sd35.component_params(0, "attn") == sum(
        p.numel() for m in (block.attn, block.attn2) for p in m.parameters()
    )
