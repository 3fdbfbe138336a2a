"""The report in real Chromium: the ranking comes first, and nothing overflows sideways."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.pipeline import AnalysisOptions, run_analysis
from analysis.report import write_report
from analysis.simulate import PairDesign, simulate_pairs, simulate_ratings

VARIANTS = ("original", "hierarchicalprune-30", "bk-sdm", "koala", "sana-sprint-1.6b")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pairs = simulate_pairs(
        PairDesign(VARIANTS, n_participants=16, trials_per_participant=30, n_prompts=6),
        [0.0, -0.3, -1.2, -1.3, -0.6],
        seed=3,
        position=0.2,
    )
    ratings = simulate_ratings(list(VARIANTS), [4.38, 4.16, 3.4, 3.3, 3.9], n_participants=16,
                               ratings_per_participant=10, n_prompts=6, seed=4)  # fmt: skip
    responses = pd.concat([pairs, ratings], ignore_index=True)
    result = run_analysis(responses, AnalysisOptions(reference="original", rounds=40, workers=1))
    return write_report(result, tmp_path_factory.mktemp("r") / "report")


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)])
def test_report_leads_with_the_ranking_and_fits_the_screen(
    browser, report, width, height, tmp_path
):
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.goto(report.as_uri())
        first_heading = page.locator("h2 ~ h3").first.inner_text()
        assert first_heading.startswith("Ranking: quality (pairwise")
        table = page.locator("table.data").first
        assert "hierarchicalprune-30" in table.inner_text() and "vs original" in table.inner_text()
        if width >= 1000:  # the answer is on the first screen of a laptop
            assert table.bounding_box()["y"] < height
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow} px of horizontal overflow at {width}x{height}"
        shot = tmp_path / f"report-{width}.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
    finally:
        context.close()
