"""The spreadsheet-safety rule of the exports' CSV files, and its exact inverse."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from hprune.contracts.spreadsheet import neutralise_formulas, restore_formulas


def test_formula_starts_are_quoted_and_nothing_else_changes() -> None:
    frame = pd.DataFrame(
        {
            "text": ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "'q", "a=b", "", None],
            "number": [-1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        }
    )
    safe = neutralise_formulas(frame)
    assert safe["text"].tolist()[:8] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@A1",
        "'\tx",
        "'\rx",
        "''q",
        "a=b",
    ]
    assert safe["text"].iloc[8] == "" and pd.isna(safe["text"].iloc[9])
    assert safe["number"].tolist() == frame["number"].tolist()
    assert restore_formulas(safe).equals(frame)


@given(st.lists(st.text(max_size=8), max_size=20))
def test_restoring_gives_back_exactly_what_was_written(values) -> None:
    frame = pd.DataFrame({"text": pd.Series(values, dtype="string")})
    safe = neutralise_formulas(frame)
    assert not safe["text"].str.match(r"[=+\-@\t\r]").fillna(False).any()
    assert restore_formulas(safe)["text"].tolist() == values
