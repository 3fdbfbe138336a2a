"""CSV cells that a spreadsheet opens as text, never as a formula (CSV or "formula" injection).

Spreadsheet programs (Excel, LibreOffice Calc, Google Sheets) evaluate a CSV cell that starts
with ``=``, ``+``, ``-`` or ``@`` as a formula, and a leading tab or carriage return can hide
such a start; a formula in an export can run commands or send the sheet's data elsewhere
when a researcher opens it (OWASP, "CSV Injection"). Study exports carry text that came from
outside: manifest fields (prompt ids, image ids, variant names) and the ids participants
arrive with.

The rule, for every text cell of a CSV the study writes (numbers, booleans and times are
never touched):

- a cell that starts with one of ``= + - @``, a tab or a carriage return is written with a
  single quote in front (``=1+1`` becomes ``'=1+1``), which spreadsheets show as text;
- a cell that already starts with a single quote gets one more (``'x`` becomes ``''x``), so
  that the rule can be undone exactly.

Reading back (:func:`restore_formulas`, done by the contracts' CSV readers) removes one
leading quote from every text cell that has one, giving the exact text written. Parquet files
keep every value verbatim: use them for analysis, the CSV files for looking.
"""

from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def _neutralise(value: str) -> str:
    return QUOTE + value if value.startswith((*FORMULA_STARTS, QUOTE)) else value


def _restore(value: str) -> str:
    return value[1:] if value.startswith(QUOTE) else value


def _text_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c
        for c in frame.columns
        if pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object
    ]


def _map_text(frame: pd.DataFrame, function) -> pd.DataFrame:
    """``function`` applied to every str cell of the text columns; all else kept as it is."""
    out = frame.copy()
    for column in _text_columns(out):
        values = out[column]
        changed = [function(v) if isinstance(v, str) else v for v in values]
        out[column] = pd.Series(changed, index=values.index, dtype=values.dtype)
    return out


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text cells made spreadsheet-safe (the module's rule), for a CSV."""
    return _map_text(frame, _neutralise)


def restore_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """The text a CSV written with :func:`neutralise_formulas` held (read back as text)."""
    return _map_text(frame, _restore)
