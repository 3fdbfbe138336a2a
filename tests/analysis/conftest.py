"""Fixtures of the analysis tests: real published pairwise data and small simulated studies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.data import read_responses
from analysis.simulate import PairDesign, simulate_pairs


@pytest.fixture(scope="session")
def tmo_responses(shared_data: Path) -> pd.DataFrame:
    """Eilertsen et al.'s tone-mapping comparisons (pwcmp example 3) as responses."""
    return read_responses(shared_data / "pairwise/pwcmp_video_tmo/ex3_tmo_cmp_data.csv")


@pytest.fixture(scope="session")
def lightfield_responses(shared_data: Path) -> pd.DataFrame:
    """Adhikarla et al.'s light-field quality comparisons (pwcmp example 4) as responses."""
    return read_responses(shared_data / "pairwise/pwcmp_lightfield_quality/lf_quality_pwcmps.csv")


@pytest.fixture(scope="session")
def small_study() -> tuple[pd.DataFrame, list[float]]:
    """Six variants, 30 participants x 60 trials, Bradley-Terry with a little noise."""
    truth = [0.0, -0.2, -0.5, -0.8, 0.3, -1.2]
    design = PairDesign(
        variants=("orig", "hpp", "bk", "koala", "sana", "tiny"),
        n_participants=30,
        trials_per_participant=60,
    )
    return simulate_pairs(design, truth, seed=7), truth
