"""The cases of "statistics a reviewer can trust": each one a silent wrong number before.

Reference numbers:
- Firth (``br = TRUE``): R 4.2.2 with BradleyTerry2 1.1-2 and brglm 0.7.2 (Debian bookworm
  packages r-cran-bradleyterry2, r-cran-brglm), ``BTm(..., br = TRUE)``; printed with
  ``options(digits = 15)``.
- pwcmp: github.com/mantiuk/pwcmp at 07876b2 (``pw_scale.m``, ``pw_outlier_analysis.m``), run
  unchanged in GNU Octave 7.3 (statistics 1.5.3) on the shared TMO data, with the groups built
  as ``pw_outlier_analysis_table`` builds them (one per scene) and an ``optimoptions`` shim for
  Octave (fminunc, analytic gradient, TolFun = TolX = 1e-12). pwcmp's README reports two
  observers above the customary dist_L threshold of 1.5 on these data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.bradley_terry import fit_bradley_terry
from analysis.bt500 import bt500_screening
from analysis.comparisons import collapse, from_pairs
from analysis.data import read_responses, validate_responses
from analysis.design import position_check
from analysis.pipeline import AnalysisOptions, run_analysis
from analysis.pwcmp import iqr_distance, outlier_likelihoods, preference_matrix, scale_with_prior
from analysis.qc import QCOptions, run_qc
from hprune.cli import main

DATA = Path(__file__).parent / "data"


def _frame(rows, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "participant": p,
                "kind": "pair",
                "criterion": "quality",
                "prompt_id": q,
                "left_variant": a,
                "right_variant": b,
                "choice": c,
                "rating": np.nan,
                **extra,
            }
            for p, q, a, b, c in rows
        ]
    )


def _analyze(path: Path, out: Path, *args: str):
    return CliRunner().invoke(
        main, ["analyze", "--responses", str(path), "--out", str(out), "--workers", "1", *args]
    )


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------ the position effect


def _minimal_position_case() -> pd.DataFrame:
    """The issue's case: every choice left, pairs (b, a) 75 + (a, b) 25, (c, b) 75 + (b, c) 25."""
    left = ["b"] * 75 + ["a"] * 25 + ["c"] * 75 + ["b"] * 25
    right = ["a"] * 75 + ["b"] * 25 + ["b"] * 75 + ["c"] * 25
    return _frame(
        [
            (f"p{i % 10}", f"x{i % 5}", a, b, "left")
            for i, (a, b) in enumerate(zip(left, right, strict=True))
        ]
    )


def test_position_effect_running_to_infinity_is_dropped_with_the_pairs_named(tmp_path) -> None:
    frame = _minimal_position_case()
    comparisons, _, _ = from_pairs(validate_responses(frame))
    check = position_check(comparisons)
    assert check.unbounded == "left" and not check.estimable
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    result = _analyze(path, tmp_path / "out", "--rounds", "30")
    assert result.exit_code == 0, result.output
    warnings = (tmp_path / "out/warnings.txt").read_text()
    assert "position effect left out" in warnings and "a vs b: all 100 to the left" in warnings
    scores = pd.read_csv(tmp_path / "out/tables/scores_quality.csv").set_index("variant")
    # Without the position term: c won 75 of 100 against b, b 75 of 100 against a.
    assert scores.loc["c", "bt_score"] - scores.loc["b", "bt_score"] == pytest.approx(np.log(3))
    assert (scores["bt_se"] < 1).all() and (scores["ci_high"] > scores["ci_low"]).all()
    explicit = _analyze(path, tmp_path / "out2", "--rounds", "10", "--position")
    _one_line_error(explicit, "position effect cannot be estimated", "--no-position")


def test_never_reversed_pairs_confound_the_position_effect(tmp_path) -> None:
    """The first crash export: each pair always in one order (was LinAlgError)."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(300):
        a, b = [("a", "b"), ("b", "c"), ("c", "d")][i % 3]
        rows.append((f"p{i % 12}", f"x{i % 6}", a, b, "left" if rng.random() < 0.6 else "right"))
    frame = _frame(rows)
    check = position_check(from_pairs(validate_responses(frame))[0])
    assert not np.isfinite(check.vif) and len(check.one_order) == 3
    # A cycle of one-order pairs identifies gamma in principle, but barely (VIF 12 > 10).
    cycle = _frame(
        rows + [("p0", "x0", "a", "c", "left")] * 50 + [("p1", "x0", "a", "c", "right")] * 50
    )
    nearly = position_check(from_pairs(validate_responses(cycle))[0])
    assert nearly.vif == pytest.approx(12.0) and not nearly.estimable
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    result = _analyze(path, tmp_path / "out", "--rounds", "20")
    assert result.exit_code == 0, result.output
    warnings = (tmp_path / "out/warnings.txt").read_text()
    assert "confounded with the scores" in warnings and "a always left of b" in warnings


def test_winner_always_first_is_a_warning_not_a_statsmodels_traceback(tmp_path) -> None:
    """The second crash export: every answer 'left' on a counterbalanced design."""
    rows = []
    for i in range(120):
        a, b = [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"), ("a", "c"), ("c", "a")][i % 6]
        rows.append((f"p{i % 8}", f"x{i % 4}", a, b, "left"))
    path = tmp_path / "r.csv"
    _frame(rows).to_csv(path, index=False)
    result = _analyze(path, tmp_path / "out", "--rounds", "20")
    assert result.exit_code == 0, result.output
    warnings = (tmp_path / "out/warnings.txt").read_text()
    assert "mixed logit not fitted" in warnings and "position effect left out" in warnings


def test_data_without_sides_get_no_position_effect(shared_data, tmp_path) -> None:
    source = shared_data / "pairwise/pwcmp_video_tmo/ex3_tmo_cmp_data.csv"
    responses = read_responses(source)
    assert responses.attrs["sides"] is False
    result = run_analysis(responses, AnalysisOptions(rounds=0, mixed_models=False))
    part = result.primary.pairs["perceptual"]
    assert not part.position and not part.bt.has_param("position")
    _one_line_error(
        _analyze(source, tmp_path / "o", "--rounds", "0", "--position"), "no screen sides"
    )


# ------------------------------------------------------------ quality control


def _baseball() -> pd.DataFrame:
    """Every game a 'participant' with one trial, home team on the left (273 games)."""
    games = pd.read_csv(DATA / "baseball_1987.csv")
    rows = []
    for g in games.itertuples(index=False):
        rows += [(g.home_team, g.away_team, "left")] * g.home_wins
        rows += [(g.home_team, g.away_team, "right")] * g.away_wins
    return validate_responses(
        _frame([(f"game{i:03d}", "season", a, b, c) for i, (a, b, c) in enumerate(rows)])
    )


def test_single_trial_participants_are_not_assessed_never_excluded() -> None:
    responses = _baseball()
    assert len(responses) == 273
    qc = run_qc(responses)
    assert qc.excluded == []
    assert set(qc.participants["outlier_verdict"]) == {"not assessed"}
    with_qc = run_analysis(responses, AnalysisOptions(rounds=0, mixed_models=False))
    without = run_analysis(
        responses, AnalysisOptions(rounds=0, mixed_models=False, exclusions=False)
    )
    a = with_qc.primary.pairs["quality"].scores.set_index("variant")["bt_score"]
    b = without.primary.pairs["quality"].scores.set_index("variant")["bt_score"]
    assert np.allclose(a, b[a.index])


def test_pwcmp_outlier_analysis_reproduces_pwcmp_on_the_tmo_data(tmo_responses) -> None:
    table = outlier_likelihoods(tmo_responses, group="prompt_id").set_index("participant")
    pwcmp_l = {"F01": -0.2468461852, "F02": -0.1912899632, "M02": -0.3267929418,
               "M06": -0.2604004880, "bab": -0.3530191997, "rwn": -0.2127643053}  # fmt: skip
    for observer, value in pwcmp_l.items():
        assert table.loc[observer, "loo_log10_lik"] == pytest.approx(value, abs=2e-6)
    dist = pd.Series(iqr_distance(table["loo_log10_lik"].to_numpy()), index=table.index)
    pwcmp_dist = {"F01": 0.3535022623, "M02": 3.4505442404, "M06": 0.8785797845,
                  "bab": 4.4665181822, "F02": 0.0}  # fmt: skip
    for observer, value in pwcmp_dist.items():
        assert dist[observer] == pytest.approx(value, abs=1e-4)
    assert set(dist.index[dist > 1.5]) == {"M02", "bab"}  # pwcmp's README: two observers
    qc = run_qc(tmo_responses, QCOptions(outlier_rule="pwcmp", scenes="prompt_id"))
    assert set(qc.excluded) == {"M02", "bab"}
    calibrated = run_qc(tmo_responses, QCOptions(scenes="prompt_id"))
    assert set(calibrated.excluded) == {"M02", "bab"}


def test_pwcmp_gaussian_prior_scaling_matches_pwcmp(tmo_responses) -> None:
    comparisons, _, _ = from_pairs(tmo_responses)
    assert comparisons.items[:3] == ("ferwerda96", "hateren06", "irawan05")
    q, converged = scale_with_prior(preference_matrix(comparisons))
    pwcmp = [-0.1214666905, -1.3692258099, 1.0389136834, 0.6147314147, -0.5668785640,
             0.0360744961, 0.3678514702]  # fmt: skip
    assert converged and np.allclose(q, pwcmp, atol=2e-6)
    exhibition = tmo_responses[tmo_responses["prompt_id"] == "exhibition"]
    q, _ = scale_with_prior(preference_matrix(from_pairs(exhibition, comparisons.items)[0]))
    pwcmp = [-0.4115819558, -2.3340274939, 2.7210418322, 0.5794706996, -0.6323233883,
             -0.0304866796, 0.1079069859]  # fmt: skip
    assert np.allclose(q, pwcmp, atol=2e-5)  # fminunc stops a little short on this flatter one


def test_bt500_screening_by_hand() -> None:
    """20 raters, 10 images. Each image: one 1, one 5, three 2s, three 4s, twelve 3s, so
    kurtosis 1.9 / 0.7^2 = 3.88 (normal: c = 2), S = 0.858, and only the 1 and the 5 lie
    2 S away. r19 gives the 1 or the 5 on every image (P = Q = 5: rejected); the other
    extreme goes to r0..r9 in turn, once each and one-sided (kept)."""
    rows = []
    for image in range(10):
        others = [r for r in range(19) if r != image % 10]
        values = {19: 1 if image % 2 == 0 else 5, image % 10: 5 if image % 2 == 0 else 1}
        for j, rater in enumerate(others):
            values[rater] = 2 if j < 3 else (4 if j < 6 else 3)
        rows += [(f"r{rater}", f"img{image}", y) for rater, y in values.items()]
    ratings = pd.DataFrame(
        {
            "participant": [r for r, _, _ in rows],
            "left_image": [i for _, i, _ in rows],
            "prompt_id": "x",
            "left_variant": "v",
            "criterion": "quality",
            "rating": [float(y) for _, _, y in rows],
        }
    )
    table = bt500_screening(ratings).set_index("participant")
    assert table.loc["r19", "bt500_high"] == 5 and table.loc["r19", "bt500_low"] == 5
    assert table.loc["r19", "bt500_verdict"] == "reject"
    assert table.loc["r0", "bt500_high"] + table.loc["r0", "bt500_low"] == 1
    assert (table.drop(index="r19")["bt500_verdict"] == "keep").all()
    few = bt500_screening(ratings, min_ratings=11)
    assert set(few["bt500_verdict"]) == {"not assessed"}


def _attention(frame: pd.DataFrame, failures: dict[str, int]) -> pd.DataFrame:
    rows = []
    for person, failed in failures.items():
        for i in range(3):
            rows.append(
                {
                    "participant": person,
                    "kind": "attention",
                    "criterion": "attention",
                    "left_variant": "a",
                    "right_variant": "b",
                    "choice": "left",
                    "rating": np.nan,
                    "check": "broken",
                    "check_passed": i >= failed,
                }
            )
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def test_exclusions_follow_the_studys_attention_policy(tmp_path) -> None:
    pairs = _frame(
        [(f"p{i % 6}", "x", "ab"[i % 2], "ba"[i % 2], "left" if i % 3 else "right")
         for i in range(60)]
    )  # fmt: skip
    frame = _attention(pairs, {"p0": 1, "p1": 2})
    only = QCOptions(min_trials=100)  # these tests are about the attention policy alone
    no_policy = run_qc(validate_responses(frame), only)
    assert set(no_policy.excluded) == {"p0", "p1"} and "does not say" in no_policy.attention_policy
    frame["attention_max_failures"] = 1  # the study tolerated one failed gold trial
    qc = run_qc(validate_responses(frame), only)
    assert qc.excluded == ["p1"] and "study's attention.max_failures" in qc.attention_policy
    override = run_qc(
        validate_responses(frame), QCOptions(max_attention_failures=0, min_trials=100)
    )
    assert set(override.excluded) == {"p0", "p1"}
    # The report lists each exclusion with its reason and the Prolific ID of a participants file.
    folder = tmp_path / "export"
    folder.mkdir()
    frame.to_csv(folder / "responses.csv", index=False)
    pd.DataFrame({"participant": [f"p{i}" for i in range(6)],
                  "prolific_pid": [f"PID{i}" for i in range(6)]}).to_csv(
        folder / "participants.csv", index=False)  # fmt: skip
    result = _analyze(
        folder, tmp_path / "out", "--rounds", "0", "--no-mixed-models", "--min-trials", "100"
    )
    assert result.exit_code == 0, result.output
    excluded = pd.read_csv(tmp_path / "out/tables/exclusions.csv")
    assert excluded.to_dict("records") == [
        {"participant": "p1", "prolific_pid": "PID1",
         "reasons": "failed 2 gold attention check(s), more than the 1 tolerated"}
    ]  # fmt: skip


# ------------------------------------------------------------ intervals


def test_a_variant_seen_once_in_a_tie_is_marked_and_its_interval_is_not_narrowed() -> None:
    truth = {"a": 0.0, "b": -0.4, "c": -0.8, "d": -1.2}
    rng = np.random.default_rng(11)
    rows = []
    names = list(truth)
    for i in range(600):
        a, b = rng.choice(names, 2, replace=False)
        p = 1 / (1 + np.exp(-(truth[a] - truth[b])))
        rows.append((f"p{i % 20}", f"x{i % 5}", a, b, "left" if rng.random() < p else "right"))
    rows.append(("p0", "x0", "new", "a", "tie"))
    result = run_analysis(
        validate_responses(_frame(rows)),
        AnalysisOptions(rounds=200, ties="half", mixed_models=False),
    )
    scores = result.primary.pairs["quality"].scores.set_index("variant")
    assert scores.loc["new", "unreliable"] == "only 1 comparison(s)"
    assert scores.loc["new", "ci_low"] <= scores.loc["new", "wald_low"]
    assert scores.loc["new", "ci_high"] >= scores.loc["new", "wald_high"]
    assert (
        scores["ci_high"] - scores["ci_low"] >= scores["wald_high"] - scores["wald_low"] - 1e-12
    ).all()
    text = "\n".join(result.warnings)
    assert "unreliable intervals" in text and "new (only 1 comparison(s))" in text
    assert "sum-zero scores share their mean" in text and "--reference" in text


def test_prior_fit_reports_with_and_without(tmp_path) -> None:
    rng = np.random.default_rng(5)
    rows = [(f"p{i % 6}", "x", *("ab" if i % 2 else "ba"), "left" if rng.random() < 0.6 else "right")
            for i in range(60)]  # fmt: skip
    rows += [(f"p{i % 6}", "x", "c", "a", "left") for i in range(4)]  # c won everything
    path = tmp_path / "r.csv"
    _frame(rows).to_csv(path, index=False)
    separated = _analyze(path, tmp_path / "o1", "--rounds", "30", "--prior", "0.5")
    assert separated.exit_code == 0, separated.output
    assert "without it they do not exist" in separated.output  # on stdout, not only the report
    balanced = [r for r in rows if r[2] != "c"] + [("p0", "y", "c", "a", "right")] * 3
    balanced += [("p1", "y", "c", "b", "left")] * 3
    _frame(balanced).to_csv(path, index=False)
    result = _analyze(path, tmp_path / "o2", "--rounds", "30", "--prior", "2")
    assert result.exit_code == 0, result.output
    assert "drives the scores: they move by up to" in result.output
    table = pd.read_csv(tmp_path / "o2/tables/prior_effect_quality.csv")
    assert (table["shift"].abs() > 0).any() and table["without_prior"].notna().all()


# ------------------------------------------------------------ Firth, against R


def _baseball_comparisons():
    games = pd.read_csv(DATA / "baseball_1987.csv")
    items = sorted(set(games.home_team))
    left, right, outcome = [], [], []
    for g in games.itertuples(index=False):
        n = g.home_wins + g.away_wins
        left += [items.index(g.home_team)] * n
        right += [items.index(g.away_team)] * n
        outcome += [0] * g.home_wins + [1] * g.away_wins
    return collapse(items, np.array(left), np.array(right), np.array(outcome))[0]


def test_firth_bias_reduction_matches_bradleyterry2_br_true() -> None:
    comparisons = _baseball_comparisons()
    # BTm(cbind(home.wins, away.wins), home.team, away.team, ~ team + at.home, br = TRUE)
    fit = fit_bradley_terry(comparisons, position=True, reference="Baltimore", bias_reduction=True)
    r = {"Boston": (1.111175708698087, 0.335558768526964),
         "Cleveland": (0.683990968851053, 0.332908399445859),
         "Detroit": (1.433780823644411, 0.341960862381849),
         "Milwaukee": (1.574068603983821, 0.344652200272209),
         "New York": (1.245043053109484, 0.337998569053855),
         "Toronto": (1.289613047297519, 0.337922038876841)}  # fmt: skip
    for team, (estimate, se) in r.items():
        i = fit.items.index(team)
        assert fit.params[i] == pytest.approx(estimate, abs=1e-7)
        assert fit.se[i] == pytest.approx(se, abs=1e-7)
    assert fit.param("position")[0] == pytest.approx(0.293927992971830, abs=1e-7)
    assert fit.param("position")[1] == pytest.approx(0.130444360711270, abs=1e-7)
    # Plain ML for comparison (BTm without br): bias reduction shrinks every gap.
    ml = fit_bradley_terry(comparisons, position=True, reference="Baltimore")
    assert ml.param("position")[0] == pytest.approx(0.302260655527553, abs=1e-7)
    assert (np.abs(fit.scores) <= np.abs(ml.scores) + 1e-12).all()
    # A design where a won every comparison: no MLE, a finite Firth estimate (R: br = TRUE).
    separated, _ = collapse(
        ("a", "b", "c"), np.array([0, 0, 0, 1, 1, 1, 0, 0]), np.array([1, 1, 1, 2, 2, 2, 2, 2]),
        np.array([0, 0, 0, 0, 0, 1, 0, 0]),
    )  # fmt: skip
    fit = fit_bradley_terry(separated, reference="a", bias_reduction=True)
    assert fit.params[1:] == pytest.approx([-2.13462584580452, -2.62667589988231], abs=1e-6)
    assert fit.se[1:] == pytest.approx([1.60018150534690, 1.74547519865702], abs=1e-6)


def test_bias_reduction_with_ties_asks_for_a_tie_rule(tmp_path) -> None:
    path = tmp_path / "r.csv"
    _frame([("p1", "x", "a", "b", "tie"), ("p2", "x", "b", "a", "left"),
            ("p3", "x", "a", "b", "left")]).to_csv(path, index=False)  # fmt: skip
    _one_line_error(
        _analyze(path, tmp_path / "o", "--rounds", "0", "--bias-reduction"), "--ties half"
    )
    ok = _analyze(path, tmp_path / "o2", "--rounds", "0", "--bias-reduction", "--ties", "half")
    assert ok.exit_code == 0, ok.output
