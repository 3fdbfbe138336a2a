"""Pruning: HPP ordering, baselines at a budget, surgery that reloads exactly, records, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from generation.adapters import BLOCK, get_adapter
from generation.measurement.contrib import Contribution
from generation.model_record import read_record
from generation.planning import bk_sdm_plan, hpp_plan, koala_plan
from generation.planning.hpp import WEIGHTINGS, HPPRule, exp_decay, paper_weight
from generation.recipes.prune import prune_model
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_pipeline, load_transformer
from generation.store.toy_models import build_sd3_transformer, default_spec
from generation.transforms.plan import explicit_plan, parse_removal
from hprune.cli import main
from hprune.errors import UserError


def sd35_adapter():
    torch.manual_seed(0)
    return get_adapter(build_sd3_transformer(default_spec("sd35")).eval())


def contribution(
    adapter, block_drop, component_drop=lambda i, c: 0.5, similarity=None
) -> Contribution:
    drops = {(i, BLOCK): block_drop(i) for i in range(adapter.num_blocks)}
    drops |= {
        (i, c): component_drop(i, c)
        for i in range(adapter.num_blocks)
        for c in adapter.components(i)
    }
    return Contribution(
        model_fingerprint="x",
        family=adapter.family,
        num_blocks=adapter.num_blocks,
        original_indices=list(range(adapter.num_blocks)),
        higher_is_better=True,
        drops=drops,
        block_similarity=similarity or [0.5] * adapter.num_blocks,
        raw={},
    )


# ----- plans --------------------------------------------------------------------------


TOY_DROPS = {0: 10.0, 1: 0.1, 2: 0.1, 3: 0.2, 4: 0.5, 5: 0.3, 6: 5.0, 7: 1.0}


def toy_contribution(adapter) -> Contribution:
    """Blocks 0 and 6 critical (drop >= 0.25 x 10); cheap parts: ff_context < attn < ff."""
    parts = {"ff_context": 0.01, "attn": 0.02, "ff": 0.05}
    return contribution(adapter, TOY_DROPS.__getitem__, lambda i, c: parts.get(c, 0.9))


def test_hpp_keeps_critical_head_and_tail_blocks_and_cuts_late_blocks_first() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    plan = hpp_plan(adapter, toy_contribution(adapter), 0.85, original_parameters=total)
    # head = blocks 0-3 (first half), critical = 0 and 6, tail = 7 (after the last critical):
    # the candidates are 4 and 5, lower |drop| x exp((i-8)/8) first
    assert [e["block"] for e in plan.removed_blocks] == [5, 4]
    assert plan.details["critical_blocks"] == [0, 6]
    assert not plan.removed_subcomponents and plan.parameters_after <= 0.85 * total
    assert all(e["stage"] == "blocks" for e in plan.removed_blocks)


def test_beyond_the_block_floor_subcomponents_go_in_the_middle_without_attention() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    plan = hpp_plan(adapter, toy_contribution(adapter), 0.65, original_parameters=total)
    assert plan.block_indices() == [4, 5]  # whole blocks only down to the moderate level
    staged = [(e["block"], e["component"], e["stage"]) for e in plan.removed_subcomponents]
    # the region is 8/3 <= i < 4, i.e. block 3: its parts by drop, attn excluded
    assert staged[:4] == [
        (3, "ff_context", "subcomponents"),
        (3, "ff", "subcomponents"),
        (3, "norm1", "subcomponents"),
        (3, "norm1_context", "subcomponents"),
    ]
    # not enough there: the fallback takes the rest from the non-critical blocks after the
    # first third (block 7 here; 6 is critical), still never attention
    assert staged[4:] and all(stage == "fallback-subcomponents" for _, _, stage in staged[4:])
    assert all(i == 7 and c != "attn" for i, c, _ in staged[4:])
    assert plan.parameters_after <= 0.65 * total
    with pytest.raises(UserError, match=r"cannot reach the budget 0\.55"):
        hpp_plan(adapter, toy_contribution(adapter), 0.55, original_parameters=total)


def test_a_block_that_loses_every_subcomponent_is_removed_whole() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    rule = HPPRule(sub_blocks=(3, 3), exclude=(), block_floor=1.0)  # only block 3's parts
    plan = hpp_plan(adapter, toy_contribution(adapter), 0.89, original_parameters=total, rule=rule)
    assert plan.block_indices() == [3] and not plan.removed_subcomponents
    assert plan.removed_blocks[0]["stage"] == "subcomponents-whole"
    assert plan.parameters_after == total - adapter.block_params(3)


def test_hpp_rule_options_and_weightings() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    contrib = toy_contribution(adapter)
    region = HPPRule(sub_blocks=(1, 2), exclude=())
    plan = hpp_plan(adapter, contrib, 0.75, original_parameters=total, rule=region)
    assert {i for i, _ in plan.component_parts()} <= {1, 2}
    assert plan.component_parts()[0][1] == "ff_context"
    assert exp_decay(5, 8) < exp_decay(4, 8) and paper_weight(5, 8) > paper_weight(4, 8)
    assert set(WEIGHTINGS) == {"paper", "exp-decay", "none"}
    with pytest.raises(UserError, match="measured with 'zero' ablation"):
        hpp_plan(adapter, Contribution(**{**contrib.__dict__, "ablation": "zero"}), 0.8,
                 original_parameters=total)  # fmt: skip
    for bad in (dict(critical_fraction=-1), dict(layout_fraction=0.6), dict(weighting="x")):
        with pytest.raises(UserError):
            HPPRule(**bad)


def test_baselines_meet_the_same_budget() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    middle = bk_sdm_plan(adapter, 0.8, original_parameters=total)
    assert middle.block_indices() == [3, 4]  # around the centre 3.5, ties to the later block
    uniform = bk_sdm_plan(adapter, 0.8, original_parameters=total, layout="uniform")
    assert uniform.block_indices() == [1, 5]
    similar = koala_plan(
        adapter,
        contribution(adapter, lambda i: 0.1, similarity=[0.1, 0.2, 0.95, 0.3, 0.9, 0.2, 0.1, 0.99]),
        0.8,
        original_parameters=total,
    )
    assert similar.block_indices() == [2, 4]  # 7 is the most similar but must stay last
    for plan in (middle, uniform, similar):
        assert plan.parameters_after <= 0.8 * total
        assert not plan.removed_subcomponents


def test_removal_specs() -> None:
    assert parse_removal("25-28,31-34") == ([25, 26, 27, 28, 31, 32, 33, 34], [])
    assert parse_removal("3, 1-2, 13:ff") == ([1, 2, 3], [(13, "ff")])
    for bad in ("4-2", "x", "", "1:", "1-2-3"):
        with pytest.raises(UserError):
            parse_removal(bad)


def test_plan_bad_input() -> None:
    adapter = sd35_adapter()
    total = adapter.total_params()
    for budget in (0, 1, 1.5, -0.2):
        with pytest.raises(UserError, match="strictly between 0 and 1"):
            bk_sdm_plan(adapter, budget, original_parameters=total)
    with pytest.raises(UserError, match="out of range"):
        explicit_plan(adapter, "3,99", original_parameters=total)
    with pytest.raises(UserError, match="must stay last"):
        explicit_plan(adapter, "7", original_parameters=total)
    with pytest.raises(UserError, match="no subcomponent 'ff_context'"):
        explicit_plan(adapter, "7:ff_context", original_parameters=total)
    with pytest.raises(UserError, match="cannot reach the budget"):
        bk_sdm_plan(adapter, 0.05, original_parameters=total)
    with pytest.raises(UserError, match="already has"):
        bk_sdm_plan(adapter, 0.5, original_parameters=total * 2)
    flux = contribution(sd35_adapter(), lambda i: 0.1)
    flux = Contribution(**{**flux.__dict__, "family": "flux"})
    with pytest.raises(UserError, match="flux model"):
        hpp_plan(adapter, flux, 0.8, original_parameters=total)


# ----- surgery, saving and reloading ----------------------------------------------------


def aligned(module):
    """Copy every tensor out of the safetensors memory map: unaligned views take other BLAS
    paths than fresh tensors, which changes float rounding (about 1e-7), not the model."""
    for param in module.parameters():
        param.data = param.data.clone()
    return module


def transformer_inputs(transformer) -> dict:
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, 7, 64, generator=g)
    if "Flux" in type(transformer).__name__:
        return dict(
            hidden_states=torch.randn(1, 16, 16, generator=g),
            encoder_hidden_states=text,
            pooled_projections=torch.randn(1, 32, generator=g),
            timestep=torch.tensor([0.5]),
            img_ids=torch.zeros(16, 3),
            txt_ids=torch.zeros(7, 3),
            return_dict=False,
        )
    return dict(
        hidden_states=torch.randn(1, 4, 8, 8, generator=g),
        encoder_hidden_states=text,
        pooled_projections=torch.randn(1, 64, generator=g),
        timestep=torch.tensor([500.0]),
        return_dict=False,
    )


@torch.no_grad()
def run(transformer, inputs):
    return transformer(**inputs)[0]


CASES = {
    "sd3": "2-3,0:norm1_context,5:ff",
    "sd35": "1,4,0:attn,2:ff_context,7:norm1",
    "flux": "1,6-7,0:ff,4:attn,5:mlp,9:attn,9:mlp,10:norm",
}


@pytest.mark.parametrize("ablation", ["identity", "zero"])
@pytest.mark.parametrize("arch", sorted(CASES))
def test_pruned_model_reloads_exactly_with_plain_diffusers_and_the_project_loader(
    arch, ablation, toy_model_dir, tmp_path
) -> None:
    from diffusers import DiffusionPipeline

    from generation.transforms import pruned_classes  # diffusers finds the class once imported

    out = tmp_path / "pruned"
    plan, pruned = prune_model(
        toy_model_dir(arch),
        out,
        lambda a, o: explicit_plan(a, CASES[arch], original_parameters=o),
        ablation=ablation,
    )
    inputs = transformer_inputs(pruned)
    expected = run(pruned, inputs)
    cls = pruned_classes.PRUNED_CLASSES[pruned_classes.diffusers_base(type(pruned))]
    index = json.loads((out / "model_index.json").read_text())
    assert index["transformer"] == ["generation.transforms.pruned_classes", cls.__name__]
    plain = aligned(DiffusionPipeline.from_pretrained(out).transformer.eval())
    direct = aligned(cls.from_pretrained(out / "transformer").eval())
    ours = aligned(load_transformer(out))
    for model in (plain, direct, ours):
        assert type(model) is cls and model.config.ablation == ablation
        assert torch.equal(run(model, inputs), expected)
        assert get_adapter(model).total_params() == plan.parameters_after
    assert plan.to_json()["ablation"] == ablation
    record = read_record(out)
    assert record.kept_blocks == [
        i
        for i in range(len(record.kept_blocks) + len(record.removed_blocks))
        if i not in record.removed_blocks
    ]
    assert record.pruning["method"] == "explicit" and record.history[-1]["stage"] == "prune"
    assert record.parent_fingerprint == model_fingerprint(toy_model_dir(arch))
    # every other component is shared with the parent, not rewritten
    parent_vae = toy_model_dir(arch) / "vae" / "diffusion_pytorch_model.safetensors"
    assert (
        out / "vae" / "diffusion_pytorch_model.safetensors"
    ).stat().st_ino == parent_vae.stat().st_ino


def test_config_counts_and_records_per_architecture(toy_model_dir, tmp_path) -> None:
    prune_model(
        toy_model_dir("sd35"),
        tmp_path / "sd35",
        lambda a, o: explicit_plan(a, CASES["sd35"], original_parameters=o),
    )
    config = json.loads((tmp_path / "sd35" / "transformer" / "config.json").read_text())
    assert config["num_layers"] == 6 and config["dual_attention_layers"] == [0, 1]
    assert config["removed_subcomponents"] == [[0, "attn"], [1, "ff_context"], [5, "norm1"]]
    record = read_record(tmp_path / "sd35")
    assert record.kept_blocks == [0, 2, 3, 5, 6, 7] and record.removed_blocks == [1, 4]
    assert record.removed_subcomponents == [
        {"block": 0, "component": "attn"},
        {"block": 2, "component": "ff_context"},
        {"block": 7, "component": "norm1"},
    ]
    prune_model(
        toy_model_dir("flux"),
        tmp_path / "flux",
        lambda a, o: explicit_plan(a, CASES["flux"], original_parameters=o),
    )
    config = json.loads((tmp_path / "flux" / "transformer" / "config.json").read_text())
    assert (config["num_layers"], config["num_single_layers"]) == (3, 6)


def test_pruning_twice_keeps_original_indices(toy_model_dir, tmp_path) -> None:
    first = tmp_path / "first"
    prune_model(
        toy_model_dir("flux"),
        first,
        lambda a, o: explicit_plan(a, "1,5:mlp", original_parameters=o),
    )
    # current block 4 is original 5 (its mlp already removed), current 8 is original 9
    plan, pruned = prune_model(
        first, tmp_path / "second", lambda a, o: explicit_plan(a, "8,4:attn", original_parameters=o)
    )
    record = read_record(tmp_path / "second")
    assert record.removed_blocks == [1, 9]
    assert record.removed_subcomponents == [
        {"block": 5, "component": "mlp"},
        {"block": 5, "component": "attn"},
    ]
    assert record.kept_blocks == [0, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert [h["stage"] for h in record.history] == ["toy-model", "prune", "prune"]
    reloaded = aligned(load_transformer(tmp_path / "second"))
    torch.testing.assert_close(
        run(reloaded, transformer_inputs(pruned)),
        run(pruned, transformer_inputs(pruned)),
        rtol=0,
        atol=1e-6,
    )
    assert plan.kept_fraction < 1


def test_the_flux_trap_and_the_sd3_refusal_without_the_config_update(
    toy_model_dir, tmp_path
) -> None:
    """Saved without updating the config, FLUX reloads deleted blocks as random weights."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    flux = load_transformer(toy_model_dir("flux"))
    counts = dict(
        num_layers=flux.config.num_layers, num_single_layers=flux.config.num_single_layers
    )
    get_adapter(flux).remove_blocks([2, 8])
    expected = run(flux, transformer_inputs(flux))
    flux.register_to_config(**counts)  # the mistake: the old counts stay in config.json
    flux.save_pretrained(tmp_path / "flux-trap")
    # diffusers only warns: the deleted positions are left on the meta device by default,
    # or initialised at random with low_cpu_mem_usage=False; either way the model is wrong
    trapped = FluxTransformer2DModel.from_pretrained(tmp_path / "flux-trap")
    assert len(trapped.transformer_blocks) == 4 and len(trapped.single_transformer_blocks) == 8
    assert any(p.is_meta for p in trapped.parameters())
    trapped = FluxTransformer2DModel.from_pretrained(
        tmp_path / "flux-trap", low_cpu_mem_usage=False
    )
    assert not torch.allclose(run(trapped.eval(), transformer_inputs(flux)), expected, atol=1e-3)
    prune_model(
        toy_model_dir("flux"),
        tmp_path / "flux-ok",
        lambda a, o: explicit_plan(a, "2,8", original_parameters=o),
    )
    right = aligned(
        FluxTransformer2DModel.from_pretrained(tmp_path / "flux-ok" / "transformer").eval()
    )
    torch.testing.assert_close(run(right, transformer_inputs(flux)), expected, rtol=0, atol=1e-6)

    sd3 = load_transformer(toy_model_dir("sd3"))
    get_adapter(sd3).remove_blocks([2])
    sd3.register_to_config(num_layers=8)
    sd3.save_pretrained(tmp_path / "sd3-trap")
    with pytest.raises((RuntimeError, ValueError, OSError)):
        SD3Transformer2DModel.from_pretrained(tmp_path / "sd3-trap")


def test_pruned_pipeline_renders_the_same_image_with_either_loader(toy_model_dir, tmp_path) -> None:
    from diffusers import DiffusionPipeline

    out = tmp_path / "pruned"
    prune_model(toy_model_dir("sd3"), out, lambda a, o: bk_sdm_plan(a, 0.7, original_parameters=o))
    kwargs = dict(
        num_inference_steps=2, height=32, width=32, max_sequence_length=16, output_type="np"
    )
    images = []
    for pipe in (DiffusionPipeline.from_pretrained(out), load_pipeline(out)):
        pipe.set_progress_bar_config(disable=True)
        images.append(
            pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images[0]
        )
    assert (images[0] == images[1]).all()


# ----- the command ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def contrib_file(sd3_toy_dir, tmp_path_factory):
    from generation.measurement.contrib import run_contrib
    from hprune.contracts.prompts import Prompt

    out = tmp_path_factory.mktemp("prune-contrib") / "contrib.json"
    prompts = [Prompt(prompt_id="p", text="a blue square", category="", metadata={})]
    run_contrib(
        sd3_toy_dir,
        prompts,
        [0],
        out,
        steps=2,
        height=32,
        width=32,
        max_sequence_length=16,
        progress=False,
    )
    return out


def test_prune_command_methods(sd3_toy_dir, contrib_file, tmp_path) -> None:
    runner = CliRunner()
    base = ["prune", "--model", str(sd3_toy_dir)]
    for method in ("hpp", "koala", "bk-sdm", "bk-sdm-uniform"):
        out = tmp_path / method
        args = [*base, "--plan", method, "--budget", "0.75", "--out", str(out)]
        if method in ("hpp", "koala"):
            args += ["--contrib", str(contrib_file)]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"method {method}" in result.output and "remove blocks" in result.output
        record = read_record(out)
        assert record.pruning["method"] == method and record.pruning["kept_fraction"] <= 0.75
    result = runner.invoke(
        main, [*base, "--remove", "1-2,4:ff", "--out", str(tmp_path / "explicit")]
    )
    assert result.exit_code == 0, result.output
    assert read_record(tmp_path / "explicit").removed_subcomponents == [
        {"block": 4, "component": "ff"}
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plan", "hpp", "--budget", "1.2"], "strictly between 0 and 1"),
        (["--plan", "hpp", "--budget", "0"], "strictly between 0 and 1"),
        (["--plan", "hpp", "--budget", "0.8"], "needs --contrib"),
        (["--plan", "bk-sdm"], "needs --budget"),
        (["--plan", "hpp", "--method", "koala", "--budget", "0.8"], "disagree"),
        (["--remove", "0-7"], "must stay last"),
        (["--remove", "0-6,99"], "out of range"),
        (["--remove", "2", "--budget", "0.5"], "takes no --budget"),
        ([], "either --plan"),
    ],
)
def test_prune_command_bad_input_leaves_nothing_behind(
    sd3_toy_dir, tmp_path, extra, message
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["prune", "--model", str(sd3_toy_dir), "--out", str(out), *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_prune_dry_run_and_ablation_options(sd3_toy_dir, tmp_path) -> None:
    runner = CliRunner()
    base = ["prune", "--model", str(sd3_toy_dir)]
    result = runner.invoke(main, [*base, "--remove", "1,4:ff", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "remove blocks: 1" in result.output and "remove subcomponents: 4:ff" in result.output
    assert "identity ablation" in result.output and "dry run: nothing written" in result.output
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "zero"
    result = runner.invoke(
        main, [*base, "--remove", "4:ff", "--ablation", "zero", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "transformer" / "config.json").read_text())
    assert config["ablation"] == "zero" and config["removed_subcomponents"] == [[4, "ff"]]
    result = runner.invoke(main, ["prune", "--model", str(out), "--remove", "5:ff", "--ablation",
                                  "identity", "--out", str(tmp_path / "mixed")])  # fmt: skip
    assert result.exit_code == 2 and "removed with 'zero' ablation" in result.output
    assert not (tmp_path / "mixed").exists()
    for extra, message in (
        (["--remove", "1"], "give --out"),
        (["--remove", "1", "--arch-config", "x.json", "--dry-run"], "--model (or, with --dry-run"),
    ):
        result = runner.invoke(main, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output


def test_prune_command_refuses_bad_models_and_contrib_files(
    toy_model_dir, contrib_file, tmp_path
) -> None:
    runner = CliRunner()
    flux = toy_model_dir("flux")
    result = runner.invoke(
        main, ["prune", "--model", str(flux), "--remove", "0-11", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "every block" in result.output
    result = runner.invoke(
        main,
        ["prune", "--model", str(tmp_path / "nope"), "--remove", "1", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    args = [
        "prune",
        "--model",
        str(flux),
        "--plan",
        "hpp",
        "--budget",
        "0.8",
        "--contrib",
        str(contrib_file),
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "measured on another model" in result.output
    result = runner.invoke(main, [*args, "--ignore-fingerprint"])
    assert result.exit_code == 2 and "flux model" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "hprune-contrib", "version": 1, "entries": []}')
    args[args.index(str(contrib_file))] = str(broken)
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and "malformed" in result.output
    # a quantised model is pruned before quantising, never after
    quantised = tmp_path / "quantised"
    shutil.copytree(flux, quantised)
    record_file = quantised / "transformer" / "hprune_record.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "quantization": {"scheme": "nf4"}}))
    result = runner.invoke(
        main, ["prune", "--model", str(quantised), "--remove", "1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "quantised" in result.output
    assert not (tmp_path / "o").exists()
