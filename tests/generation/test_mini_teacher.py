"""The shipped mini teacher: loads offline, draws what it is asked for, and is judged by every path."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from generation.mini import EVALUATION_PROMPTS, teacher
from generation.mini.benchmark import evaluate_pipeline
from hprune.cli import main
from hprune.contracts.prompts import read_prompts

# mini-GenEval overall of the shipped teacher on the 12 prompts below at TEST_STEPS steps,
# seed 0, was 0.583 when the teacher was committed (torch 2.13.0 CPU, diffusers 0.42.1);
# the floor leaves a margin for library drift (one task mean of the six is worth 0.083).
FLOOR = 0.45
TEST_STEPS = 8


@pytest.fixture(scope="module")
def twelve_prompts():
    return read_prompts(EVALUATION_PROMPTS, per_category=2, seed=0)


@pytest.fixture(scope="module")
def pipe():
    from generation.store.loading import load_pipeline

    return load_pipeline(teacher.TEACHER_DIR)


def test_shipped_teacher_is_complete_and_small() -> None:
    files = {p.relative_to(teacher.TEACHER_DIR).as_posix() for p in teacher.TEACHER_DIR.rglob("*")}
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        assert f"{part}/config.json" in files
    assert {"model_index.json", "train_config.json", "train_log.jsonl", teacher.INFO_NAME} <= files
    size = sum(p.stat().st_size for p in teacher.TEACHER_DIR.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    info = teacher.read_info(teacher.TEACHER_DIR)
    assert info["render"] == teacher.RENDER_OPTIONS
    assert info["training"]["evaluations"], "the training log has held-out evaluations"


def test_shipped_teacher_loads_offline_and_passes_its_floor(pipe, twelve_prompts) -> None:
    assert len(twelve_prompts) == 12
    assert len(pipe.transformer.transformer_blocks) >= 12
    variant = teacher.teacher_variant(steps=TEST_STEPS)
    evaluation = evaluate_pipeline(pipe, variant, twelve_prompts, [0])
    scores = evaluation.scores()
    assert scores["overall"] >= FLOOR, scores
    # the same images judged again give the same verdicts: the checker is deterministic
    again = evaluate_pipeline(pipe, variant, twelve_prompts, [0])
    assert [r["correct"] for r in again.results] == [r["correct"] for r in evaluation.results]


def test_render_score_and_mini_eval_agree_on_a_stimuli_folder(tmp_path, twelve_prompts) -> None:
    """hprune render -> hprune score --scorer mini-geneval -> hprune mini eval --images."""
    prompts = tmp_path / "prompts.jsonl"
    rows = [{**p.metadata, "prompt": p.text} for p in twelve_prompts[::3]]
    for row in rows:
        row.pop("geneval_index", None)
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    variants = tmp_path / "variants.yaml"
    options = {**teacher.RENDER_OPTIONS, "steps": TEST_STEPS}
    variants.write_text(
        yaml.safe_dump(
            [{"name": "original", "model": str(teacher.TEACHER_DIR), "pipeline": options}]
        )
    )
    runner = CliRunner()
    stimuli = tmp_path / "stimuli"
    result = runner.invoke(
        main,
        ["render", "--variants", str(variants), "--prompts", str(prompts), "--out", str(stimuli)],
    )
    assert result.exit_code == 0, result.output
    metrics = tmp_path / "metrics.csv"
    result = runner.invoke(
        main,
        ["score", "--stimuli", str(stimuli), "--scorer", "mini-geneval", "--out", str(metrics)],
    )
    assert result.exit_code == 0, result.output
    import pandas as pd

    table = pd.read_csv(metrics)
    assert set(table["metric"]) == {"mini-geneval"} and len(table) == len(rows)
    result = runner.invoke(main, ["mini", "eval", "--images", str(stimuli)])
    assert result.exit_code == 0, result.output
    assert "original" in result.output and "overall" in result.output


def test_mini_eval_renders_a_model_and_writes_geneval_results(tmp_path, twelve_prompts) -> None:
    prompts = tmp_path / "two.jsonl"
    lines = EVALUATION_PROMPTS.read_text().splitlines()
    prompts.write_text("\n".join([lines[0], lines[-1]]) + "\n")
    out = tmp_path / "geneval"
    result = CliRunner().invoke(
        main,
        [
            "mini",
            "eval",
            "--prompts",
            str(prompts),
            "--seeds",
            "0-1",
            "--steps",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "color_attr" in result.output
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4
    assert {r["filename"] for r in results} == {
        "00000/samples/0000.png",
        "00000/samples/0001.png",
        "00001/samples/0000.png",
        "00001/samples/0001.png",
    }
    assert all((out / r["filename"]).is_file() for r in results)
    metadata = json.loads((out / "00001" / "metadata.jsonl").read_text())
    assert metadata["tag"] == "color_attr"


def test_mini_eval_refuses_a_folder_that_is_not_stimuli(tmp_path) -> None:
    result = CliRunner().invoke(main, ["mini", "eval", "--images", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a stimuli folder" in result.output
