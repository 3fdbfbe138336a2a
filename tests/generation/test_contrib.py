"""Contribution analysis on the toy models: entries, skip_layers == deletion, resume, bad input."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import generation.measurement.contrib as contrib_module
from generation.adapters import BLOCK, get_adapter
from generation.measurement.contrib import journal_path, read_contrib, run_contrib
from generation.store.loading import load_transformer
from hprune.cli import main
from hprune.contracts.prompts import Prompt
from hprune.errors import UserError

PROMPTS = [Prompt(prompt_id="p0", text="a photo of a red circle", category="", metadata={})]
FAST = dict(steps=2, height=32, width=32, max_sequence_length=16, progress=False)


@pytest.fixture(scope="module")
def sd3_contrib(sd35_toy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrib") / "contrib.json"
    return out, run_contrib(sd35_toy_dir, PROMPTS, [0], out, **FAST)


def test_every_block_and_subcomponent_has_a_score_and_a_drop(sd3_contrib, sd35_toy_dir) -> None:
    out, result = sd3_contrib
    assert json.loads(out.read_text()) == result
    assert not journal_path(out).exists()
    adapter = get_adapter(load_transformer(sd35_toy_dir))
    expected = adapter.parts()
    assert [(e["block"], e["component"]) for e in result["entries"]] == expected
    assert result["baseline"]["score"] == pytest.approx(1.0)  # SSIM of the baseline with itself
    assert result["scorer"] == {
        "name": "fidelity",
        "metric": "fidelity-ssim",
        "options": {},
        "higher_is_better": True,
        "needs_reference": True,
    }
    for entry in result["entries"]:
        assert entry["drop"] == pytest.approx(1.0 - entry["score"])
        assert entry["drop"] > 0
        assert entry["parameters"] == adapter.part_params((entry["block"], entry["component"]))
    assert len(result["block_similarity"]) == 8
    assert result["prompts"] == [
        {"prompt_id": "p0", "text": "a photo of a red circle", "category": ""}
    ]
    assert result["seeds"] == [0] and result["render"]["steps"] == 2
    contribution = read_contrib(out)
    assert len(contribution.block_drops()) == 8
    assert contribution.model_fingerprint == result["model_fingerprint"]
    assert result["ablation"] == contribution.ablation == "identity"  # the reference's default


def test_zero_ablation_scores_differ_and_are_recorded(sd3_contrib, sd35_toy_dir, tmp_path) -> None:
    _, identity = sd3_contrib
    out = tmp_path / "zero.json"
    zero = run_contrib(
        sd35_toy_dir, PROMPTS, [0], out, parts="subcomponents", ablation="zero", **FAST
    )
    assert zero["ablation"] == read_contrib(out).ablation == "zero"
    by_part = {(e["block"], e["component"]): e["drop"] for e in identity["entries"]}
    differ = [e for e in zero["entries"] if e["component"] in ("attn", "ff", "ff_context")]
    assert all(e["drop"] != by_part[(e["block"], e["component"])] for e in differ)
    norms = [e for e in zero["entries"] if e["component"].startswith("norm")]
    assert all(e["drop"] == by_part[(e["block"], e["component"])] for e in norms)  # same in both
    legacy = {k: v for k, v in zero.items() if k != "ablation"}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert read_contrib(tmp_path / "legacy.json").ablation == "zero"  # measured before it was named


def test_whole_block_score_equals_deleting_the_block(sd3_contrib, sd35_toy_dir) -> None:
    from generation.measurement.contrib import render
    from generation.measurement.scorers import get_scorer
    from generation.store.loading import load_pipeline
    from hprune.contracts.variants import PipelineOptions

    _, result = sd3_contrib
    options = PipelineOptions(steps=2, guidance=0.0, height=32, width=32, max_sequence_length=16)
    items = [(PROMPTS[0].text, 0)]
    pipe = load_pipeline(sd35_toy_dir)
    baseline = render(pipe, items, options, batch_size=1)
    get_adapter(pipe.transformer).remove_blocks([3])
    deleted = render(pipe, items, options, batch_size=1)
    score = get_scorer("fidelity").score(deleted, PROMPTS, baseline)[0]
    entry = next(e for e in result["entries"] if (e["block"], e["component"]) == (3, BLOCK))
    assert score == pytest.approx(entry["score"], abs=1e-6)


def test_an_interrupted_run_resumes_where_it_stopped(
    sd35_toy_dir, tmp_path, monkeypatch, sd3_contrib
) -> None:
    out = tmp_path / "contrib.json"
    real_render = contrib_module.render
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # the baseline and four parts are done
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(contrib_module, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_contrib(sd35_toy_dir, PROMPTS, [0], out, parts="blocks", **FAST)
    assert not out.exists()
    journal = journal_path(out)
    assert len(journal.read_text().splitlines()) == 1 + 4
    with journal.open("a") as f:
        f.write('{"block": 4, "comp')  # a write cut short by the interruption
    calls.clear()
    monkeypatch.setattr(
        contrib_module, "render", lambda *a, **k: (calls.append(1), real_render(*a, **k))[1]
    )
    result = run_contrib(sd35_toy_dir, PROMPTS, [0], out, parts="blocks", **FAST)
    assert len(calls) == 1 + 4  # the baseline and the four remaining blocks
    assert not journal.exists()
    full = {(e["block"], e["component"]): e["score"] for e in sd3_contrib[1]["entries"]}
    for entry in result["entries"]:
        assert entry["score"] == pytest.approx(full[(entry["block"], entry["component"])], abs=1e-9)


@pytest.mark.parametrize("arch", ["sd35", "flux"])
def test_prompts_are_encoded_once_and_the_scores_stay_identical(
    arch, toy_model_dir, tmp_path
) -> None:
    """Reusing the text conditioning and noise for every part gives exactly the scores of
    rendering each part from the prompts; the text encoders run once per batch, not per part.
    Guidance > 1 makes SD3 encode negative prompts too; batches of 3 for 4 items leave a short one."""
    prompts = [*PROMPTS, Prompt(prompt_id="p1", text="two blue squares", category="", metadata={})]
    encoder_calls = Counter()

    def count(module, args, output) -> None:
        if type(module).__name__ in ("CLIPTextModelWithProjection", "T5EncoderModel"):
            encoder_calls[type(module).__name__] += 1

    results = {}
    for reuse in (True, False):
        encoder_calls.clear()
        handle = torch.nn.modules.module.register_module_forward_hook(count)
        try:
            results[reuse] = run_contrib(
                toy_model_dir(arch),
                prompts,
                [0, 1],
                tmp_path / f"{reuse}.json",
                parts="blocks",
                guidance=3.0,
                batch_size=3,
                reuse_inputs=reuse,
                **FAST,
            )
        finally:
            handle.remove()
        renders = 1 + len(results[reuse]["entries"])
        per_render = (2 if arch == "sd35" else 1) * 2  # (prompts + negatives under CFG) x batches
        assert encoder_calls["T5EncoderModel"] == per_render * (1 if reuse else renders)
    assert results[True]["entries"] == results[False]["entries"]
    assert results[True]["baseline"] == results[False]["baseline"]


def test_latent_mse_scores_final_latents_without_decoding(sd35_toy_dir, tmp_path) -> None:
    from generation.measurement.contrib import render
    from generation.store.loading import load_pipeline
    from hprune.contracts.variants import PipelineOptions

    decodes = Counter()

    def count(module, args, output) -> None:
        decodes[type(module).__name__] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        result = run_contrib(
            sd35_toy_dir,
            PROMPTS,
            [0, 1],
            tmp_path / "c.json",
            parts="blocks",
            scorer_options={"metric": "latent-mse"},
            **FAST,
        )
    finally:
        handle.remove()
    assert decodes["SD3Transformer2DModel"] > 0 and decodes["Decoder"] == 0  # no VAE decode
    assert result["scorer"]["metric"] == "fidelity-latent-mse"
    assert not result["scorer"]["higher_is_better"]
    assert result["baseline"]["scores"] == [0.0, 0.0]
    for entry in result["entries"]:
        assert entry["drop"] == entry["score"] > 0
    # block 3's score is the MSE between the final latents with and without the block
    options = PipelineOptions(steps=2, guidance=0.0, height=32, width=32, max_sequence_length=16)
    items = [(PROMPTS[0].text, 0), (PROMPTS[0].text, 1)]
    pipe = load_pipeline(sd35_toy_dir)
    baseline = render(pipe, items, options, batch_size=2, output_type="latent")
    get_adapter(pipe.transformer).remove_blocks([3])
    deleted = render(pipe, items, options, batch_size=2, output_type="latent")
    assert baseline[0].shape == (4, 4, 4)  # (channels, height / 8, width / 8)
    expected = np.mean(
        [torch.mean((d - b).double() ** 2).item() for d, b in zip(deleted, baseline, strict=True)]
    )
    entry = next(e for e in result["entries"] if (e["block"], e["component"]) == (3, BLOCK))
    assert entry["score"] == pytest.approx(expected, rel=1e-5)


def test_a_journal_of_other_settings_is_refused_unless_restarted(sd35_toy_dir, tmp_path) -> None:
    out = tmp_path / "contrib.json"
    journal_path(out).write_text(json.dumps({"header": {"seeds": [9]}}) + "\n")
    with pytest.raises(UserError, match="other settings"):
        run_contrib(sd35_toy_dir, PROMPTS, [0], out, parts="blocks", **FAST)
    result = run_contrib(sd35_toy_dir, PROMPTS, [0], out, parts="blocks", restart=True, **FAST)
    assert len(result["entries"]) == 8


def test_flux_blocks_use_one_global_index(flux_toy_dir, tmp_path) -> None:
    result = run_contrib(flux_toy_dir, PROMPTS, [0, 1], tmp_path / "c.json", parts="blocks", **FAST)
    assert [e["block"] for e in result["entries"]] == list(range(12))
    assert [e["kind"] for e in result["entries"]] == ["double"] * 4 + ["single"] * 8
    assert len(result["baseline"]["scores"]) == 2
    assert all(np.isfinite(e["drop"]) for e in result["entries"])


def test_bad_input(sd35_toy_dir, tmp_path, sd3_contrib) -> None:
    out, _ = sd3_contrib
    with pytest.raises(UserError, match="already exists"):
        run_contrib(sd35_toy_dir, PROMPTS, [0], out, **FAST)
    with pytest.raises(UserError, match="unknown scorer"):
        run_contrib(sd35_toy_dir, PROMPTS, [0], tmp_path / "c.json", scorer="nope", **FAST)
    with pytest.raises(UserError, match="multiples of 16"):
        run_contrib(sd35_toy_dir, PROMPTS, [0], tmp_path / "c.json", **{**FAST, "height": 40})
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read"),
        ('{"format": "other"}', "not an hprune contrib.json"),
        ('{"format": "hprune-contrib", "version": 1}', "malformed"),
        (
            '{"format": "hprune-contrib", "version": 1, "num_blocks": 2, "model_fingerprint": "x", '
            '"family": "sd3", "scorer": {"higher_is_better": true}, '
            '"entries": [{"block": 5, "component": "block", "drop": 0.1}]}',
            "malformed",
        ),
    ],
)
def test_malformed_contrib_files(tmp_path, content, message) -> None:
    path = tmp_path / "contrib.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_contrib(path)
    with pytest.raises(UserError, match="does not exist"):
        read_contrib(tmp_path / "missing.json")


def test_contrib_command(sd35_toy_dir, tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a red circle\n")
    out = tmp_path / "contrib.json"
    args = ["contrib", "--model", str(sd35_toy_dir), "--prompts", str(prompts), "--out", str(out)]
    args += ["--steps", "2", "--height", "32", "--width", "32", "--max-sequence-length", "16"]
    result = CliRunner().invoke(
        main, [*args, "--parts", "blocks", "--scorer-option", "metric=psnr"]
    )
    assert result.exit_code == 0, result.output
    assert "largest drops" in result.output
    assert read_contrib(out).raw["scorer"]["metric"] == "fidelity-psnr"
    bad = CliRunner().invoke(main, [*args, "--overwrite", "--scorer-option", "metric"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
    bad = CliRunner().invoke(main, [*args, "--overwrite", "--seeds", "3-1"])
    assert bad.exit_code == 2 and "backwards" in bad.output
    bad = CliRunner().invoke(main, ["contrib", "--model", str(sd35_toy_dir)])
    assert bad.exit_code == 2 and "needs --prompts, --out" in bad.output
