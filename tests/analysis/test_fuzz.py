"""Property test: whatever export it is given, analyze succeeds or exits 2 with one line."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
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


# Found by this test (random order seed 1321079277): no participant had a pair the others'
# leave-one-out scores could judge, and the outlier test indexed an empty array.
NOBODY_SCORABLE = """participant,kind,criterion,prompt_id,left_variant,right_variant,choice,rating,rt_ms,passed_checks
p2,pair,alignment,y,a,d,left,,,False
p5,practice,quality,y,d,d,right,,,False
p5,pair,alignment,y,b,c,right,,2500.0,False
p4,practice,quality,y,b,c,right,,2500.0,True
p1,pair,quality,z,c,b,right,,,True
p3,pair,alignment,y,a,d,right,,,True
p2,practice,alignment,z,a,d,left,,,False
p3,pair,quality,y,d,a,left,,200.0,True
p2,pair,alignment,x,d,a,right,,2500.0,False
p2,rating,quality,y,b,,,2.0,200.0,False
"""


# Found by this test: a variant rated by one participant has no mean in most resampled
# studies, which left the MOS interval with no complete round at all.
RATED_ONCE = """participant,kind,criterion,prompt_id,left_variant,right_variant,choice,rating,rt_ms,passed_checks
p4,rating,quality,y,b,,,4.0,2500.0,True
p4,rating,alignment,z,a,,,3.0,200.0,False
p3,pair,quality,z,a,d,right,,,True
p3,attention,quality,x,a,a,right,,200.0,True
p1,rating,quality,x,b,,,3.0,200.0,True
p5,attention,alignment,z,b,d,right,,200.0,False
p5,practice,quality,z,a,d,left,,200.0,True
p3,rating,alignment,y,d,,,2.0,2500.0,True
p3,rating,alignment,x,d,,,1.0,2500.0,True
p2,pair,alignment,z,d,b,left,,,False
p3,practice,alignment,z,d,a,right,,,False
p3,rating,alignment,z,b,,,1.0,2500.0,False
p2,practice,quality,x,a,a,right,,,True
p4,attention,alignment,z,b,c,tie,,200.0,False
p3,practice,quality,z,c,c,tie,,2500.0,True
p1,practice,alignment,x,a,b,tie,,200.0,False
p5,pair,quality,z,d,b,right,,2500.0,False
p4,pair,alignment,z,c,b,left,,200.0,False
p5,pair,alignment,y,c,a,right,,200.0,True
p1,pair,alignment,y,d,b,right,,,True
p4,pair,quality,y,b,a,tie,,200.0,True
p5,practice,quality,y,c,b,right,,2500.0,True
p1,rating,quality,y,c,,,2.0,,False
p5,pair,alignment,z,a,b,right,,200.0,False
p5,rating,alignment,z,d,,,3.0,,False
"""


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=exports(), flags=st.sampled_from([[], ["--position"], ["--prior", "0.5"],
                                               ["--bias-reduction", "--ties", "half"],
                                               ["--jod-prior", "gaussian"]]))  # fmt: skip
@example(frame=pd.read_csv(io.StringIO(NOBODY_SCORABLE)), flags=[])
@example(frame=pd.read_csv(io.StringIO(RATED_ONCE)), flags=["--prior", "0.5"])
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
