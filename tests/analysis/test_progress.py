"""Progress lines of a long analysis: every stage named on stdout, the results untouched."""

from __future__ import annotations

import pandas as pd

from analysis.pipeline import AnalysisOptions, run_analysis
from analysis.simulate import PairDesign, simulate_pairs


def test_stages_are_printed_and_change_nothing(capsys) -> None:
    design = PairDesign(("a", "b", "c"), n_participants=8, trials_per_participant=20, n_prompts=4)
    responses = simulate_pairs(design, [0.0, -0.5, 0.4], position=0.2, seed=2)
    quiet = run_analysis(responses, AnalysisOptions(rounds=20, workers=1))
    assert capsys.readouterr().out == ""
    loud = run_analysis(responses, AnalysisOptions(rounds=20, workers=1, progress=True))
    out = capsys.readouterr().out
    for stage in (
        "analyze: quality control of 8 participants ...",
        "analyze: quality control of 8 participants: done in",
        "[all responses/quality] pairwise analysis of 160 pair trials: done in",
        "cluster bootstrap, 20 rounds of two models: done in",
        "mixed logit: done in",
        "outlier analysis: leave-one-out scales of 1 of 1 groups found",
    ):
        assert stage in out, out
    pd.testing.assert_frame_equal(
        quiet.primary.pairs["quality"].scores, loud.primary.pairs["quality"].scores
    )
    pd.testing.assert_frame_equal(quiet.qc.participants, loud.qc.participants)
