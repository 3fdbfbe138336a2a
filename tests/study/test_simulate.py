"""Simulated participants: the observer model, and whole studies through a real HTTP server."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from hprune.cli import main
from study.simulate.driver import run_simulation
from study.simulate.observer import Observer, Preferences
from study.simulate.oracle import StimulusOracle
from tests.study.conftest import VARIANTS, serve_in_thread

TRUTH = {"original": 0.0, "hpp-20": -1.0, "koala": -2.0, "bk-sdm": -3.0}


def test_observer_follows_bradley_terry_with_bias_and_lapses() -> None:
    prefs = Preferences({"a": 1.0, "b": 0.0}, participant_sd=0.0, position_bias=0.4, lapse_rate=0.1)
    observer = Observer(prefs, np.random.default_rng(0))
    n = 40_000
    left_a = Counter(observer.choose("a", "b") for _ in range(n))["left"] / n
    left_b = Counter(observer.choose("b", "a") for _ in range(n))["left"] / n
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert left_a == pytest.approx(0.05 + 0.9 * sigmoid(1.4), abs=0.01)
    assert left_b == pytest.approx(0.05 + 0.9 * sigmoid(-0.6), abs=0.01)
    assert "tie" not in {observer.choose("a", "b") for _ in range(500)}


def test_observer_ties_ratings_and_attention() -> None:
    prefs = Preferences(
        {"a": 0.0, "b": 0.0},
        tie_strength=1.0,
        lapse_rate=0.0,
        position_bias=0.0,
        attention_failure_rate=0.25,
        quality={"a": 4.5, "b": 1.5},
    )
    observer = Observer(prefs, np.random.default_rng(1))
    ties = Counter(observer.choose("a", "b", tie=True) for _ in range(30_000))["tie"] / 30_000
    assert ties == pytest.approx(1 / 3, abs=0.01)  # Davidson at equal scores: nu / (2 + nu)
    good = [observer.rate("a") for _ in range(2000)]
    bad = [observer.rate("b", 1, 7) for _ in range(2000)]
    assert set(good) <= set(range(1, 6)) and set(bad) <= set(range(1, 8))
    assert np.mean(good) > np.mean(bad) + 2
    fails = np.mean([observer.fails_attention() for _ in range(20_000)])
    assert fails == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="lapse_rate"):
        Preferences({"a": 0.0}, lapse_rate=1.5)
    assert Preferences.evenly_spaced(["x", "y", "z"], 0.5).scores == {"x": 0, "y": -0.5, "z": -1.0}


def _pair_trials(app, key: str) -> list[tuple[str, str, str | None]]:
    """(left variant, right variant, choice) of the main pair trials of the participants who
    completed the study (those the app counts: failed ones free their tasks), from the DB."""
    from sqlalchemy.orm import aliased

    from study.models import Answer, Participant, Stimulus, Study, Trial

    left, right = aliased(Stimulus), aliased(Stimulus)
    with app.extensions["hprune_db"].read() as session:
        return session.execute(
            select(left.variant, right.variant, Answer.choice)
            .select_from(Trial)
            .join(left, left.id == Trial.left_id)
            .join(right, right.id == Trial.right_id)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .outerjoin(Answer, Answer.trial_id == Trial.id)
            .where(Study.public_key == key, Trial.kind == "pair")
            .where(Participant.outcome == "completed")
        ).all()


def _answer_count(app, key: str) -> int:
    from study.models import Answer, Participant, Study

    with app.extensions["hprune_db"].read() as session:
        return session.scalar(
            select(func.count(Answer.id))
            .join(Participant, Participant.id == Answer.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == key)
        )


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["balanced", "active"])
def test_simulated_study_recovers_the_true_ranking(app, db_url, make_study, scheduler) -> None:
    from analysis.live import live_scores
    from study.export import export_responses

    handle = make_study(trials_per_criterion=12, scheduler=scheduler)
    oracle = StimulusOracle.from_database(db_url, handle.name)
    assert oracle.study_key == handle.key and oracle.variants == sorted(VARIANTS)
    with serve_in_thread(app) as base:
        report = run_simulation(
            oracle,
            Preferences(TRUTH, position_bias=1.0),
            base_url=base,
            participants=32,  # enough that adjacent variants (1 logit apart) never swap
            concurrency=8,
            seed=3,
        )
    assert report.errors() == []
    assert set(report.outcomes()) <= {"completed", "failed_attention"}, report.outcomes()
    assert report.outcomes().get("completed", 0) >= 24
    # every acknowledged answer is in the database, once
    assert _answer_count(app, handle.key) == report.answers

    scores = live_scores(export_responses(db_url, handle.name)).set_index("variant")["score"]
    assert list(scores.sort_values(ascending=False).index) == list(TRUTH)

    trials = _pair_trials(app, handle.key)
    assert len(trials) >= 240
    for variant in VARIANTS:  # counterbalanced sides (the app's job, checked over a study)
        shown = [lv == variant for lv, rv, _ in trials if variant in (lv, rv)]
        assert abs(np.mean(shown) - 0.5) <= 0.02, f"{variant} left in {np.mean(shown):.3f}"
    chose_left = np.mean([c == "left" for *_, c in trials if c])
    assert chose_left > 0.55  # the simulated participants' left bias (about 0.63 here) shows


def test_simulate_command(app, db_url, make_study, tmp_path) -> None:
    handle = make_study(trials_per_criterion=4, practice_trials=0)
    runner = CliRunner()
    truth = tmp_path / "truth.json"
    with serve_in_thread(app) as base:
        args = ["study", "simulate", "-n", "3", "--url", base, "--study", handle.name]
        result = runner.invoke(
            main,
            [*args, "--scores", "original=1,hpp-20=0,koala=-1,bk-sdm=-2", "--truth-out", truth],
            env={"DATABASE_URL": db_url},
        )
        assert result.exit_code == 0, result.output
        assert "answers:" in result.output and "completed" in result.output
        assert json.loads(truth.read_text())["scores"]["original"] == 1.0

        bad = runner.invoke(
            main, [*args, "--scores", "original=1,dalle=3"], env={"DATABASE_URL": db_url}
        )
        assert bad.exit_code == 2
        assert "Error: --scores names variants the study does not have: dalle" in bad.output
        bad = runner.invoke(main, [*args, "--scores", "original"], env={"DATABASE_URL": db_url})
        assert bad.exit_code == 2 and "name=value" in bad.output
        bad = runner.invoke(main, [*args[:-1], "nope"], env={"DATABASE_URL": db_url})
        assert bad.exit_code == 2 and "no study named 'nope'" in bad.output
    gone = runner.invoke(main, args, env={"DATABASE_URL": db_url})
    assert gone.exit_code == 2 and "cannot reach the study server" in gone.output
