"""Quality control: published alpha values, triads by hand, and a study with bad participants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.comparisons import from_pairs
from analysis.qc import (
    QCOptions,
    apply_exclusions,
    circular_triads,
    count_circular_triads,
    krippendorff_alpha,
    position_bias,
    repeated_pair_consistency,
    run_qc,
)
from analysis.simulate import PairDesign, simulate_pairs
from hprune.contracts.responses import validate_responses


def test_krippendorff_alpha_reproduces_the_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers,
    # 12 units, values 1..5 with missing data.
    table = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = np.array([u for row in table for u in range(12)])
    values = np.array([np.nan if v is None else v for row in table for v in row], float)
    expected = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    for level, alpha in expected.items():
        assert round(krippendorff_alpha(units, values, level), 3) == alpha
    assert krippendorff_alpha(np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 2.0, 2.0])) == 1.0


def test_circular_triads_by_hand() -> None:
    cycle = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert count_circular_triads(cycle) == (1, 1)
    order = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert count_circular_triads(order) == (0, 1)
    # Four items, a > b > c > a and d beats everybody: 1 circular of 4 triads.
    m = np.zeros((4, 4))
    m[0, 1] = m[1, 2] = m[2, 0] = 1
    m[3, :3] = 1
    assert count_circular_triads(m) == (1, 4)
    # An undecided pair removes the triads through it.
    m[2, 0] = 0
    assert count_circular_triads(m) == (0, 2)


def _pairs(rows):
    return validate_responses(
        pd.DataFrame(
            [
                {
                    "participant": p,
                    "kind": "pair",
                    "criterion": "q",
                    "prompt_id": q,
                    "left_variant": a,
                    "right_variant": b,
                    "choice": c,
                    "rating": np.nan,
                }
                for p, q, a, b, c in rows
            ]
        )
    )


def test_repeated_pair_consistency_and_position_bias_by_hand() -> None:
    rows = [
        ("p1", "x", "a", "b", "left"),  # a
        ("p1", "x", "b", "a", "right"),  # a again: agrees
        ("p1", "x", "a", "b", "right"),  # b: disagrees with both
        ("p2", "x", "a", "b", "left"),
        ("p2", "y", "a", "b", "left"),  # different prompt: not a repeat
    ]
    table = repeated_pair_consistency(_pairs(rows)).set_index("participant")
    assert table.loc["p1", "repeat_pairs"] == 3 and table.loc["p1", "consistency"] == pytest.approx(
        1 / 3
    )
    assert "p2" not in table.index
    cyclic = [
        ("p3", "x", "a", "b", "left"),
        ("p3", "x", "b", "c", "left"),
        ("p3", "x", "c", "a", "left"),
    ]
    ordered = [
        ("p4", "x", "a", "b", "left"),
        ("p4", "x", "b", "c", "left"),
        ("p4", "x", "a", "c", "left"),
    ]
    triads = circular_triads(_pairs(cyclic + ordered)).set_index("participant")
    assert triads.loc["p3", "circular_fraction"] == 1.0
    assert triads.loc["p4", "circular_fraction"] == 0.0 and triads.loc["p4", "triads"] == 1
    always_left = [("p9", f"q{i}", "a", "b", "left") for i in range(20)]
    bias = position_bias(_pairs(always_left), 0.01).set_index("participant")
    assert bias.loc["p9", "left_rate"] == 1.0
    assert bias.loc["p9", "position_p"] == pytest.approx(2 * 0.5**20)
    assert bias.loc["p9", "position_flag"]


@pytest.fixture(scope="module")
def study_with_bad_participants() -> pd.DataFrame:
    design = PairDesign(("a", "b", "c", "d", "e"), n_participants=30, trials_per_participant=60)
    responses = simulate_pairs(
        design, [0.0, -0.5, -1.0, -1.5, -2.0], spammers=0.1, attention_trials=5, seed=21
    )
    # One contrarian: answers the opposite of what she sees (slow and attentive).
    contrarian = (responses.participant == "p0003") & (responses.kind == "pair")
    responses.loc[contrarian, "choice"] = responses.loc[contrarian, "choice"].map(
        {"left": "right", "right": "left", "tie": "tie"}
    )
    return validate_responses(responses)


def test_bad_participants_are_excluded_with_reasons(study_with_bad_participants) -> None:
    responses = study_with_bad_participants
    qc = run_qc(responses)
    table = qc.participants.set_index("participant")
    spammers = set(table.index[table["median_rt_ms"] < 600])
    assert spammers, "the simulation should contain fast spammers"
    assert spammers <= set(qc.excluded)
    assert "leave-one-out likelihood" in table.loc["p0003", "reasons"]
    good = table.drop(index=[*spammers, "p0003"])
    # An attentive participant may miss one attention check (2% each in the simulation),
    # but nobody else trips the speed or likelihood checks.
    assert all("gold attention" in r for r in good.loc[good.excluded, "reasons"])
    assert good["excluded"].sum() <= 2
    kept = apply_exclusions(responses, qc)
    assert set(kept.participant) == set(good.index[~good.excluded])
    agreement = qc.agreement.set_index("data")
    assert 0 < agreement.loc["pair", "alpha"] < 1


def test_options_change_the_filter_and_small_studies_get_notes(study_with_bad_participants) -> None:
    responses = study_with_bad_participants
    lenient = run_qc(
        responses, QCOptions(max_attention_failures=99, max_fast_fraction=1.0, outlier_alpha=0.0)
    )
    assert lenient.excluded == []
    one = responses[responses.participant == "p0000"]
    qc = run_qc(one)
    assert any("leave-one-out" in note for note in qc.notes)


def test_study_export_check_columns() -> None:
    # The study export marks gold trials check=broken and repeat checks check=repeat,
    # each with a per-trial check_passed; passed_checks is participant-level.
    rows = [
        ("p1", "attention", "broken", False),
        ("p1", "attention", "repeat", True),
        ("p2", "attention", "broken", True),
        ("p2", "attention", "repeat", False),
        ("p2", "attention", "repeat", True),
    ]
    frame = validate_responses(
        pd.DataFrame(
            [
                {
                    "participant": p,
                    "kind": k,
                    "check": c,
                    "check_passed": ok,
                    "passed_checks": p != "p1",
                    "left_variant": "a",
                    "right_variant": "b",
                    "choice": "left",
                    "rating": np.nan,
                }
                for p, k, c, ok in rows
            ]
        )
    )
    qc = run_qc(frame).participants.set_index("participant")
    assert qc.loc["p1", "attention_failed"] == 1 and qc.loc["p1", "attention_trials"] == 1
    assert qc.loc["p2", "attention_failed"] == 0
    assert qc.loc["p2", "consistency"] == 0.5 and qc.loc["p1", "consistency"] == 1.0
    assert qc.loc["p1", "excluded"] and not qc.loc["p2", "excluded"]


def test_circular_triads_equal_the_per_participant_count() -> None:
    """All (participant, criterion) matrices at once give what one matrix at a time gives."""
    design = PairDesign(("a", "b", "c", "d", "e"), n_participants=15, trials_per_participant=12)
    responses = simulate_pairs(design, [0.0, 0.1, -0.2, 0.3, 0.0], tie_log_nu=-1.0, seed=4)
    responses.loc[responses.index % 3 == 0, "criterion"] = "alignment"
    # One participant sees only two variants in one criterion: no triads there.
    responses.loc[responses["participant"] == "p0000", ["left_variant", "right_variant"]] = [
        "a",
        "b",
    ]
    expected = {}
    for (person, _), trials in responses.groupby(["participant", "criterion"]):
        names = sorted(set(trials["left_variant"]) | set(trials["right_variant"]))
        if len(names) < 3:
            continue
        wins = from_pairs(trials, names)[0].wins_matrix()
        circular, complete = count_circular_triads(wins - wins.T)
        before = expected.get(person, (0, 0))
        expected[person] = (before[0] + circular, before[1] + complete)
    table = circular_triads(responses).set_index("participant")
    assert set(table.index) == set(expected)
    for person, (circular, complete) in expected.items():
        assert (table.loc[person, "circular_triads"], table.loc[person, "triads"]) == (
            circular,
            complete,
        )
    assert table["circular_triads"].sum() > 0
