"""The mini paper chain: its plan, its dependencies, and its runner (serial and side by side)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from generation.mini import paper
from hprune.cli import main


def test_every_step_reads_only_what_an_earlier_stage_made(tmp_path) -> None:
    config = paper.PaperConfig(work=tmp_path / "work")
    for steps in (paper.plan(config), paper.demo_plan(config, tmp_path / "demo")):
        made = {str(step.output): step for step in steps}
        for step in steps:
            for arg in step.args:
                if arg in made and made[arg] is not step:
                    assert paper._stage(made[arg]) < paper._stage(step), (step.name, arg)


def test_demo_plan_builds_exactly_the_demo_variants(tmp_path) -> None:
    config = paper.PaperConfig(work=tmp_path / "work")
    names = [step.name for step in paper.demo_plan(config, tmp_path / "demo")]
    for needed in paper.DEMO_VARIANTS.values():
        if needed:
            assert needed in names
    assert names[-2:] == ["demo-render", "demo-score"]
    assert not any(
        n.startswith(("profile", "contrib-mini-geneval", "distill-hpp-20-pwp-sgd")) for n in names
    )


def test_paper_dry_run_prints_the_chain() -> None:
    result = CliRunner().invoke(main, ["mini", "paper", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("hprune mini data")
    assert any(
        line.startswith("hprune distill") and "--weighting inverse" in line for line in lines
    )
    config = paper.PaperConfig()
    twins = [v.name for v in paper.variants(config) if v.name.endswith("-s1")]
    assert len(twins) == len(config.second_seed) > 0
    # a twin distilled from seed 1 has its seed-0 architecture: profiled once
    assert sum(line.startswith("hprune profile") for line in lines) == len(
        paper.variants(config)
    ) - len(twins)
    assert sum(line.startswith("hprune distill") and "--seed 1" in line for line in lines) == len(
        twins
    )
    assert lines[-1].startswith("hprune mini latency")
    assert "--eval-seeds" not in result.output  # the evaluation: all 84 prompts x seeds 0-3
    assert any(line.startswith("hprune render") and "--seeds 0-3" in line for line in lines)


def test_steps_run_side_by_side_skip_what_exists_and_report_a_failure(tmp_path) -> None:
    steps = [
        paper.Step(
            f"data-{name}",
            ("mini", "data", "--out", str(tmp_path / name), "-n", "2"),
            tmp_path / name,
        )
        for name in ("a", "b")
    ]
    timings = tmp_path / "timings.json"
    paper.run_steps(steps, jobs=2, logs=tmp_path / "logs", echo=lambda _: None, timings=timings)
    assert all((step.output / "metadata.jsonl").is_file() for step in steps)
    assert (tmp_path / "logs" / "data-a.log").is_file()
    recorded = json.loads(timings.read_text())
    assert set(recorded["steps"]) == {"data-a", "data-b"} and recorded["jobs"] == 2
    assert recorded["stages"]["data"] >= max(recorded["steps"].values()) > 0
    said: list[str] = []
    paper.run_steps(steps, jobs=2, logs=tmp_path / "logs", echo=said.append, timings=timings)
    assert json.loads(timings.read_text()) == recorded  # skipped steps keep their timings
    assert sorted(said) == [
        f"[skip] data-{n}: {tmp_path / n} exists" for n in ("a", "b")
    ]  # any order
    broken = paper.Step(
        "prune-x",
        ("prune", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")),
        tmp_path / "x",
    )
    with pytest.raises(RuntimeError, match=r"step prune-x failed \(exit 2\); see .*prune-x.log"):
        paper.run_steps([broken], jobs=2, logs=tmp_path / "logs", echo=lambda _: None)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_shardable_step_runs_as_jobs_processes(tmp_path) -> None:
    """With ``jobs=2`` the render stage is one ``hprune render`` under torchrun: each of the two
    processes renders half the images, and the folder holds all of them once."""
    from generation.mini import EVALUATION_PROMPTS
    from generation.mini.teacher import RENDER_OPTIONS, TEACHER_DIR

    rows = [paper.PaperVariant(n, n, "-", TEACHER_DIR) for n in ("original", "again")]
    variants_yaml = tmp_path / "variants.yaml"
    paper.write_variants_yaml(variants_yaml, rows, {**RENDER_OPTIONS, "steps": 2})
    out = tmp_path / "stimuli"
    step = paper.Step(
        "render",
        ("render", "--variants", str(variants_yaml), "--prompts", str(EVALUATION_PROMPTS),
         "--per-category", "1", "--seeds", "0", "--batch-size", "4", "--out", str(out)),
        out / "manifest.csv",
        shardable=True,
    )  # fmt: skip
    paper.run_steps([step], jobs=2, logs=tmp_path / "logs", echo=lambda _: None)
    log = (tmp_path / "logs" / "render.log").read_text()
    assert "12 images" in log and "6 rendered here" in log, log[-2000:]
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 12 and manifest["image_id"].is_unique


def test_claims_are_tested_pairwise_with_holm(tmp_path) -> None:
    """Synthetic verdicts: HPP clearly above BK-SDM at 30%, equal to KOALA; the seed twin equal."""
    from generation.mini.report import claim_tests

    config = paper.PaperConfig(work=tmp_path, permutation_rounds=4000)
    rng = np.random.default_rng(0)
    rates = {"hpp-30-pwp-sgd": 0.6, "bk-sdm-30-kd": 0.2, "koala-30-kd": 0.6}
    rates["hpp-30-pwp-sgd-s1"] = 0.6
    rows = []
    for p in range(60):
        category = ("counting", "position", "colors")[p % 3]
        for seed in range(4):
            shared = rng.random()  # a prompt x seed is easy or hard for every variant alike
            for variant, rate in rates.items():
                own = 0.7 * shared + 0.3 * rng.random()
                rows.append((variant, f"p{p}", seed, category, float(own < rate)))
    frame = pd.DataFrame(rows, columns=["variant", "prompt_id", "seed", "category", "correct"])
    tests, seeds = claim_tests(config, frame)
    by_claim = {row["claim"]: row for row in tests}
    assert set(by_claim) == {
        "HPP+PWP+SGDistill > BK-SDM+KD at 30%",
        "HPP+PWP+SGDistill > KOALA+KD at 30%",
    }  # the claims whose variants are there
    bk = by_claim["HPP+PWP+SGDistill > BK-SDM+KD at 30%"]
    assert bk["test"].difference > 0.2 and bk["verdict"] == "supports"
    assert bk["p_holm"] >= bk["test"].p_value
    assert by_claim["HPP+PWP+SGDistill > KOALA+KD at 30%"]["verdict"] == "cannot resolve"
    assert [row["a"] for row in seeds] == ["hpp-30-pwp-sgd"]
    assert abs(seeds[0]["test"].difference) < 0.1
