"""Property test: whatever export it is given, analyze succeeds or exits 2 with one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hprune.cli import main

VARIANTS = ["a", "b", "c", "d"]


@st.composite
def exports(draw) -> pd.DataFrame:
    """Small random exports: pair, rating and attention trials, odd choices and sides."""
    n = draw(st.integers(1, 40))
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(["pair", "pair", "pair", "rating", "attention", "practice"]))
        left = draw(st.sampled_from(VARIANTS))
        right = draw(st.sampled_from(VARIANTS)) if kind != "rating" else None
        rows.append(
            {
                "participant": draw(st.sampled_from(["p1", "p2", "p3", "p4", "p5"])),
                "kind": kind,
                "criterion": draw(st.sampled_from(["quality", "alignment"])),
                "prompt_id": draw(st.sampled_from(["x", "y", "z"])),
                "left_variant": left,
                "right_variant": right,
                "choice": draw(st.sampled_from(["left", "right", "tie", "left", "right"]))
                if kind != "rating"
                else None,
                "rating": float(draw(st.integers(1, 5))) if kind == "rating" else np.nan,
                "rt_ms": draw(st.sampled_from([np.nan, 200.0, 2500.0])),
                "passed_checks": draw(st.booleans()),
            }
        )
    return pd.DataFrame(rows)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=exports(), flags=st.sampled_from([[], ["--position"], ["--prior", "0.5"],
                                               ["--bias-reduction", "--ties", "half"],
                                               ["--jod-prior", "gaussian"]]))  # fmt: skip
def test_analyze_succeeds_or_exits_2_with_one_line(tmp_path_factory, frame, flags) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    frame.to_csv(folder / "r.csv", index=False)
    result = CliRunner().invoke(
        main,
        ["analyze", "--responses", str(folder / "r.csv"), "--out", str(folder / "out"),
         "--rounds", "5", "--workers", "1", *flags],
    )  # fmt: skip
    if result.exit_code == 0:
        assert (folder / "out/report.html").is_file()
        return
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert not (folder / "out").exists()
