"""``hprune score`` and ``hprune import-metrics`` on a stimulus set rendered from the toy SD3 pipeline."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from generation.measurement.image_metrics import image_array, psnr, ssim
from hprune.cli import main as cli
from hprune.contracts.manifest import read_manifest
from hprune.contracts.metrics import read_metric_infos, read_metrics

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory, sd3_toy_dir, shared_data) -> Path:
    """original (reference), an identical copy, and a 1-step variant; GenEval's first prompt, two seeds."""
    from generation.measurement.rendering.stimuli import render_stimuli
    from hprune.contracts.prompts import read_prompts
    from hprune.contracts.variants import read_variants

    folder = tmp_path_factory.mktemp("scoring")
    (folder / "variants.yaml").write_text(
        textwrap.dedent(
            f"""
            - {{name: original, model: {sd3_toy_dir}, reference: true, pipeline: {{steps: 2, guidance: 0.0, resolution: 32}}}}
            - {{name: copy, model: {sd3_toy_dir}, pipeline: {{steps: 2, guidance: 0.0, resolution: 32}}}}
            - {{name: short, model: {sd3_toy_dir}, pipeline: {{steps: 1, guidance: 0.0, resolution: 32}}}}
            """
        )
    )
    geneval = shared_data / "prompts" / "geneval" / "evaluation_metadata.jsonl"
    prompts = read_prompts(geneval)[:1]
    out = folder / "stimuli"
    render_stimuli(read_variants(folder / "variants.yaml"), prompts, SEEDS, out, progress=False)
    return out


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def import_geneval(results: Path, stimuli: Path, out: Path):
    return run(
        "import-metrics",
        results,
        "--format",
        "geneval",
        "--stimuli",
        stimuli,
        "--out",
        out,
        "--merge",
    )


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_reference_scorers_compare_with_the_reference_image(stimuli, tmp_path):
    out = tmp_path / "metrics.csv"
    result = run(
        "score", "--stimuli", stimuli, "--scorer", "ssim-vs-original,psnr-vs-original", "--out", out
    )
    assert result.exit_code == 0, result.output
    table = read_metrics(out)
    rows = {row.image_id: row for row in read_manifest(stimuli)}
    assert set(table["metric"]) == {"ssim-vs-original", "psnr-vs-original"}
    assert len(table) == 2 * 4  # copy and short, two seeds each; the reference is not scored
    assert set(table["variant"]) == {"copy", "short"}
    reference = {(r.prompt_id, r.seed): r for r in rows.values() if r.variant == "original"}
    for record in table.itertuples():
        row = rows[record.image_id]
        a = image_array(Image.open(stimuli / row.file).convert("RGB"))
        b = image_array(
            Image.open(stimuli / reference[row.prompt_id, row.seed].file).convert("RGB")
        )
        expected = ssim(a, b) if record.metric == "ssim-vs-original" else min(psnr(a, b), 100.0)
        assert record.value == pytest.approx(expected, rel=1e-9)
        assert record.higher_is_better
        if row.variant == "copy":  # same model, same noise: the same image
            assert record.value == (1.0 if record.metric == "ssim-vs-original" else 100.0)
        else:
            assert record.value < (1.0 if record.metric == "ssim-vs-original" else 100.0)
    infos = read_metric_infos(out)
    assert "same prompt and seed" in infos["ssim-vs-original"].scale


def test_score_needs_a_reference_and_an_honest_folder(stimuli, tmp_path):
    no_ref = tmp_path / "no-ref"
    shutil.copytree(stimuli, no_ref)
    info = json.loads((no_ref / "render.json").read_text())
    (no_ref / "render.json").write_text(json.dumps({**info, "reference": None}))
    line = one_line_error(
        run(
            "score",
            "--stimuli",
            no_ref,
            "--scorer",
            "ssim-vs-original",
            "--out",
            tmp_path / "m.csv",
        )
    )
    assert "needs a reference variant" in line

    broken = tmp_path / "broken"
    shutil.copytree(stimuli, broken)
    (broken / read_manifest(broken)[-1].file).write_bytes(b"not the image")
    line = one_line_error(
        run(
            "score",
            "--stimuli",
            broken,
            "--scorer",
            "ssim-vs-original",
            "--out",
            tmp_path / "m.csv",
        )
    )
    assert "disagrees with the files" in line and "different sha256" in line
    assert not (tmp_path / "m.csv").exists()

    line = one_line_error(
        run("score", "--stimuli", stimuli, "--scorer", "nonsense", "--out", tmp_path / "m.csv")
    )
    assert "unknown scorer 'nonsense'" in line

    from generation.measurement.scoring import score_stimuli
    from hprune.errors import UserError

    with pytest.raises(UserError, match=r"scores final latents.*'hprune contrib'"):
        score_stimuli(stimuli, ["fidelity"], scorer_options={"fidelity": {"metric": "latent-mse"}})


def test_learned_scorers_refuse_to_run_without_local_weights(stimuli, tmp_path, monkeypatch):
    monkeypatch.delenv("HPRUNE_WEIGHTS_DIR", raising=False)
    for name in ("clipscore", "hpsv2", "pickscore"):
        line = one_line_error(
            run("score", "--stimuli", stimuli, "--scorer", name, "--out", tmp_path / "m.csv")
        )
        assert "needs local weights" in line and "never downloads" in line
    line = one_line_error(
        run(
            "score",
            "--stimuli",
            stimuli,
            "--scorer",
            "hpsv2",
            "--weights",
            tmp_path / "absent",
            "--out",
            tmp_path / "m.csv",
        )
    )
    assert "weights folder" in line and "does not exist" in line
    monkeypatch.setenv("HPRUNE_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights" / "pickscore").mkdir(parents=True)
    line = one_line_error(
        run("score", "--stimuli", stimuli, "--scorer", "pickscore", "--out", tmp_path / "m.csv")
    )
    assert "has no config.json" in line


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny CLIPModel + processor saved to a folder: the real loading and
    scoring code path, with meaningless numbers (there are no real CLIP weights offline)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from generation.store.tokenizers import build_clip_tokenizer
    from generation.store.toy_models import TOY_WORDS

    tokenizer = build_clip_tokenizer(TOY_WORDS)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 2}  # fmt: skip
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    directory = tmp_path_factory.mktemp("tiny-clip") / "clip"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_clipscore_from_a_local_tiny_random_clip(stimuli, tiny_clip_dir, tmp_path):
    """Real code path, meaningless numbers: the CLIP weights are random."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "metrics.csv"
    result = run(
        "score", "--stimuli", stimuli, "--scorer", "ssim-vs-original", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run(
        "score", "--stimuli", stimuli, "--scorer", "clipscore", "--weights", tiny_clip_dir, "--out", out, "--merge",
        "--batch-size", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = read_metrics(out)
    assert (table["metric"] == "ssim-vs-original").sum() == 4  # kept by --merge
    clip = table[table["metric"] == "clipscore"].set_index("image_id")["value"]
    rows = read_manifest(stimuli)
    assert len(clip) == len(rows) == 6
    assert ((clip >= 0) & (clip <= 2.5)).all()
    # the same numbers from CLIPModel's own forward pass: logits_per_image = logit_scale * cos
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    images = [Image.open(stimuli / row.file).convert("RGB") for row in rows]
    inputs = processor(
        text=[row.prompt for row in rows], images=images, return_tensors="pt", padding=True
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
        cosine = (logits.diagonal() / model.logit_scale.exp()).numpy()
    np.testing.assert_allclose(
        [clip[row.image_id] for row in rows], 2.5 * np.maximum(cosine, 0), atol=1e-5
    )
    info = read_metric_infos(out)["clipscore"]
    assert info.version.startswith("clip (clip,") and "Hessel" in info.scale


def test_import_metrics_command(stimuli, tmp_path):
    rows = read_manifest(stimuli)
    scores = tmp_path / "hps.csv"
    pd.DataFrame(
        [
            {
                "prompt_id": r.prompt_id,
                "seed": r.seed,
                "variant": r.variant,
                "score": 0.25 + r.seed / 100,
            }
            for r in rows
        ]
    ).to_csv(scores, index=False)
    out = tmp_path / "metrics.csv"
    result = run(
        "import-metrics", scores, "--format", "csv", "--stimuli", stimuli, "--out", out,
        "--metric", "hpsv2.1", "--version", "2.1", "--scale", "cosine",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = read_metrics(out)
    assert len(table) == 6 and set(table["image_id"]) == {r.image_id for r in rows}
    assert read_metric_infos(out)["hpsv2.1"].version == "2.1"

    results = tmp_path / "results.jsonl"  # as GenEval writes it for a folder per variant
    lines = [
        {"filename": f"/x/{r.variant}/00000/samples/{r.seed:04d}.png", "tag": "single_object",
         "correct": r.variant != "short" or r.seed == 0, "reason": "", "metadata": "{}", "details": "{}"}
        for r in rows
    ]  # fmt: skip
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = import_geneval(results, stimuli, out)
    assert result.exit_code == 0, result.output
    assert "short: GenEval 0.500 over 2 images" in result.output
    table = read_metrics(out)
    geneval = table[table["metric"] == "geneval"]
    assert len(geneval) == 6 and len(table) == 12
    assert geneval.groupby("variant")["value"].mean().to_dict() == {
        "copy": 1.0,
        "original": 1.0,
        "short": 0.5,
    }

    results.write_text(
        json.dumps({**lines[0], "filename": "/x/original/00000/samples/0009.png"}) + "\n"
    )
    line = one_line_error(import_geneval(results, stimuli, out))
    assert "no image of variant 'original', prompt 'geneval-00000', seed 9" in line
    assert len(read_metrics(out)) == 12  # the existing file is untouched
