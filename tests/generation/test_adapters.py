"""Adapters: one global block index, identity replacement == structural removal, both semantics."""

from __future__ import annotations

import copy

import pytest
import torch

from generation.adapters import BLOCK, get_adapter
from generation.store.toy_models import build_flux_transformer, build_sd3_transformer, default_spec
from hprune.errors import UserError


def make_transformer(arch: str):
    torch.manual_seed(0)
    spec = default_spec(arch)
    build = build_flux_transformer if arch == "flux" else build_sd3_transformer
    return build(spec).eval()


def transformer_inputs(arch: str, batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    common = dict(
        encoder_hidden_states=torch.randn(batch, 7, 64, generator=g),
        return_dict=False,
    )
    if arch == "flux":
        return dict(
            common,
            hidden_states=torch.randn(batch, 16, 16, generator=g),
            pooled_projections=torch.randn(batch, 32, generator=g),
            timestep=torch.tensor([0.5, 0.7][:batch]),
            img_ids=torch.zeros(16, 3),
            txt_ids=torch.zeros(7, 3),
        )
    return dict(
        common,
        hidden_states=torch.randn(batch, 4, 8, 8, generator=g),
        pooled_projections=torch.randn(batch, 64, generator=g),
        timestep=torch.tensor([500.0, 700.0][:batch]),
    )


@torch.no_grad()
def run(transformer, inputs) -> torch.Tensor:
    return transformer(**inputs)[0]


ARCHS = ["sd3", "sd35", "flux"]


@pytest.mark.parametrize("ablation", ["identity", "zero"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_part_ablates_reversibly(arch, ablation) -> None:
    transformer = make_transformer(arch)
    adapter = get_adapter(transformer, ablation)
    inputs = transformer_inputs(arch)
    base = run(transformer, inputs)
    for part in adapter.parts():
        with adapter.ablate([part]):
            ablated = run(transformer, inputs)
        assert torch.equal(run(transformer, inputs), base), f"{part} not restored"
        assert not torch.allclose(ablated, base), f"ablating {part} changed nothing"


def structural_cases() -> list[tuple[str, int, str]]:
    """Every subcomponent kind once per block kind: first block, an SD3.5 dual block, the last block."""
    return [
        *[
            ("sd3", i, c)
            for i in (0, 7)
            for c in ("norm1", "norm1_context", "attn", "ff", "ff_context")
            if (i, c) != (7, "ff_context")
        ],
        ("sd35", 1, "attn"),  # MMDiT-X: attn and attn2 together
        ("sd35", 1, "norm1"),
        *[("flux", 0, c) for c in ("norm1", "norm1_context", "attn", "ff", "ff_context")],
        *[("flux", 4, c) for c in ("norm", "attn", "mlp")],
        *[
            (arch, i, BLOCK)
            for arch, i in (
                ("sd3", 0),
                ("sd3", 6),
                ("sd35", 2),
                ("flux", 3),
                ("flux", 4),
                ("flux", 11),
            )
        ],
    ]


@pytest.fixture(scope="module")
def reference_outputs() -> dict:
    return {arch: make_transformer(arch) for arch in ARCHS}


@pytest.mark.parametrize("ablation", ["identity", "zero"])
@pytest.mark.parametrize(("arch", "index", "component"), structural_cases())
def test_structural_removal_frees_parameters_and_equals_ablation(
    reference_outputs, arch, index, component, ablation
) -> None:
    transformer = copy.deepcopy(reference_outputs[arch])
    adapter = get_adapter(transformer, ablation)
    inputs = transformer_inputs(arch)
    with adapter.ablate([(index, component)]):
        ablated = run(transformer, inputs)
    before = adapter.total_params()
    freed = adapter.part_params((index, component))
    assert freed > 0
    if component == BLOCK:
        adapter.remove_blocks([index])
    else:
        adapter.remove_components([(index, component)])
        assert component not in adapter.components(index)
        assert adapter.component_params(index, component) == 0
    assert adapter.total_params() == before - freed
    torch.testing.assert_close(run(transformer, inputs), ablated, rtol=0, atol=1e-6)


def test_sd3_skip_layers_equals_deleting_the_block_and_the_last_block_stays() -> None:
    transformer = make_transformer("sd3")
    adapter = get_adapter(transformer)
    inputs = transformer_inputs("sd3")
    with torch.no_grad():
        skipped = transformer(**inputs, skip_layers=[2, 5])[0]
    with adapter.ablate([(2, BLOCK), (5, BLOCK)]):
        assert torch.equal(run(transformer, inputs), skipped)
    pruned = copy.deepcopy(transformer)
    kept = get_adapter(pruned).remove_blocks([2, 5])
    assert kept == [0, 1, 3, 4, 6, 7]
    assert pruned.config.num_layers == 6
    assert torch.equal(run(pruned, inputs), skipped)
    assert pruned.transformer_blocks[-1].context_pre_only
    with pytest.raises(UserError, match="must stay last"):
        adapter.remove_blocks([7])


def test_sd35_dual_attention_layers_are_remapped_on_removal() -> None:
    transformer = make_transformer("sd35")
    adapter = get_adapter(transformer)
    adapter.remove_blocks([1, 4])
    assert tuple(transformer.config.dual_attention_layers) == (0, 1)
    assert [b.attn2 is not None for b in transformer.transformer_blocks] == [True, True] + [
        False
    ] * 4


def test_flux_global_index_spans_double_then_single_blocks() -> None:
    transformer = make_transformer("flux")
    adapter = get_adapter(transformer)
    assert adapter.num_blocks == 12
    assert [adapter.block_kind(i) for i in (0, 3, 4, 11)] == [
        "double",
        "double",
        "single",
        "single",
    ]
    assert adapter.locate(5) == ("single_transformer_blocks", 1)
    assert adapter.components(4) == ("norm", "attn", "mlp")
    adapter.remove_blocks([1, 2, 3, 6])
    assert (transformer.config.num_layers, transformer.config.num_single_layers) == (1, 7)
    assert adapter.num_blocks == 8


def test_flux_single_block_attn_and_mlp_both_removed() -> None:
    """zero: proj_out keeps no input columns, only its bias; identity: proj_out is gone."""
    inputs = transformer_inputs("flux")
    parts = [(5, "attn"), (5, "mlp")]
    for ablation in ("zero", "identity"):
        transformer = make_transformer("flux")
        adapter = get_adapter(transformer, ablation)
        with adapter.ablate(parts):
            ablated = run(transformer, inputs)
        adapter.remove_components(parts)
        proj_out = transformer.single_transformer_blocks[1].proj_out
        if ablation == "zero":
            assert proj_out.in_features == 0
        else:
            assert not list(proj_out.parameters())
        torch.testing.assert_close(run(transformer, inputs), ablated, rtol=0, atol=1e-6)


def test_one_ablation_semantics_per_model() -> None:
    transformer = make_transformer("sd3")
    get_adapter(transformer, "zero").remove_components([(1, "ff")])
    assert get_adapter(transformer).ablation == "zero"  # remembered
    with pytest.raises(UserError, match="removed with 'zero' ablation"):
        get_adapter(transformer, "identity")
    with pytest.raises(UserError, match="unknown ablation"):
        get_adapter(make_transformer("sd3"), "half")


def test_parameter_counts_add_up() -> None:
    for arch in ARCHS:
        adapter = get_adapter(make_transformer(arch))
        for index in range(adapter.num_blocks):
            parts = sum(adapter.component_params(index, c) for c in adapter.components(index))
            assert parts <= adapter.block_params(index)
            # everything but parameter-free norms and FLUX's shared proj_out bias is a subcomponent
            assert adapter.block_params(index) - parts <= adapter.transformer.inner_dim


def test_bad_parts_are_user_errors() -> None:
    adapter = get_adapter(make_transformer("sd3"))
    with pytest.raises(UserError, match="out of range"):
        adapter.check_part((8, BLOCK))
    with pytest.raises(UserError, match="no subcomponent 'ff_context'"):
        adapter.check_part((7, "ff_context"))
    with pytest.raises(UserError, match="out of range"):
        adapter.remove_blocks([-1])
    flux = get_adapter(make_transformer("flux"))
    with pytest.raises(UserError, match="every block"):
        flux.remove_blocks(range(12))
    with pytest.raises(UserError, match="unsupported transformer"):
        get_adapter(torch.nn.Linear(2, 2))


def test_block_similarity_is_recorded_for_every_block() -> None:
    transformer = make_transformer("flux")
    adapter = get_adapter(transformer)
    with adapter.capture_block_similarity() as stats:
        run(transformer, transformer_inputs("flux"))
    means = stats.means()
    assert len(means) == 12 and all(m is not None and -1 <= m <= 1 for m in means)
    assert stats.count == [2] * 12
