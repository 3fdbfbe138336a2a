"""The mixed logit recovers scores and position bias and agrees with Bradley-Terry."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bradley_terry import fit_bradley_terry
from analysis.comparisons import from_pairs
from analysis.mixed_logit import mixed_logit
from analysis.simulate import PairDesign, simulate_pairs
from hprune.errors import UserError


def test_recovers_truth_and_matches_bt_with_position() -> None:
    truth = np.array([0.0, -0.6, 0.4])
    design = PairDesign(("a", "b", "c"), n_participants=24, trials_per_participant=40, n_prompts=8)
    responses = simulate_pairs(design, truth, position=0.4, tie_log_nu=-2.0, seed=11)
    result = mixed_logit(responses, "a")
    fixed = result.fixed.set_index("variant")
    assert result.n_ties_dropped == int((responses.choice == "tie").sum()) > 0
    assert abs(fixed.loc["", "estimate"] - 0.4) < 3 * fixed.loc["", "sd"] + 0.05
    decided = responses[responses.choice != "tie"]
    bt = fit_bradley_terry(from_pairs(decided)[0], position=True, reference="a")
    for name in ("b", "c"):
        assert fixed.loc[name, "estimate"] == pytest.approx(bt.param(name)[0], abs=0.08)
    assert fixed.loc["", "estimate"] == pytest.approx(bt.param("position")[0], abs=0.08)
    assert set(result.random["component"]) == {"participant", "prompt"}
    assert (result.random["sd"] > 0).all()


def test_bad_input() -> None:
    design = PairDesign(("a", "b"), n_participants=2, trials_per_participant=4)
    responses = simulate_pairs(design, [0, 0], seed=0)
    with pytest.raises(UserError, match="reference"):
        mixed_logit(responses, "zzz")
    with pytest.raises(UserError, match="tie"):
        mixed_logit(responses.assign(choice="tie"), "a")
