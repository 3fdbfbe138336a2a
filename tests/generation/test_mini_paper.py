"""The mini paper chain: its plan, its dependencies, and its runner (serial and side by side)."""

from __future__ import annotations

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
    assert sum(line.startswith("hprune profile") for line in lines) == len(
        paper.variants(paper.PaperConfig())
    )


def test_steps_run_side_by_side_skip_what_exists_and_report_a_failure(tmp_path) -> None:
    steps = [
        paper.Step(
            f"data-{name}",
            ("mini", "data", "--out", str(tmp_path / name), "-n", "2"),
            tmp_path / name,
        )
        for name in ("a", "b")
    ]
    paper.run_steps(steps, jobs=2, logs=tmp_path / "logs", echo=lambda _: None)
    assert all((step.output / "metadata.jsonl").is_file() for step in steps)
    assert (tmp_path / "logs" / "data-a.log").is_file()
    said: list[str] = []
    paper.run_steps(steps, jobs=2, logs=tmp_path / "logs", echo=said.append)
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
