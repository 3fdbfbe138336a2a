"""The participants export: one row per participant, beside the responses (design.md).

It is what a researcher approves, rejects and pays from: who each pseudonymous participant
is on Prolific, how their session ended and which completion code they were given, their
attention results, their median response time, and the screen they answered on.

Written by the study as ``participants.csv`` and ``participants.parquet`` with
``participants_codebook.json`` beside them (:func:`write_participants`), read back and
checked by :func:`read_participants` (the Parquet file where there is one). The CSV's text
cells are spreadsheet-safe (:mod:`hprune.contracts.spreadsheet`); the Parquet file keeps
them verbatim. To add a column: add it to :data:`COLUMNS` (with its kind in
:data:`INT_COLUMNS`, :data:`FLOAT_COLUMNS`, :data:`BOOL_COLUMNS` or :data:`TIME_COLUMNS` if
it is not text) and :data:`CODEBOOK`, and have the study fill it.

Simulated participants (``hprune study simulate``) never look like Prolific ones: their
``source`` is ``simulated`` and their Prolific columns are empty (the id they arrived with is
in ``external_id``), so no approvals file can pay or reject them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hprune.contracts.spreadsheet import neutralise_formulas, restore_formulas
from hprune.errors import UserError
from hprune.fileio import atomic_write_bytes, atomic_write_text

PARTICIPANTS_CSV = "participants.csv"
PARTICIPANTS_PARQUET = "participants.parquet"
PARTICIPANTS_CODEBOOK = "participants_codebook.json"
PARTICIPANTS_FILES = (PARTICIPANTS_CSV, PARTICIPANTS_PARQUET, PARTICIPANTS_CODEBOOK)
COLUMNS = [
    "study",
    "participant",
    "source",
    "simulated",
    "prolific_pid",
    "prolific_study_id",
    "prolific_session_id",
    "external_id",
    "study_version",
    "outcome",
    "completion_code",
    "arrived_at",
    "consented_at",
    "finished_at",
    "last_seen_at",
    "trials_answered",
    "attention_answered",
    "attention_failed",
    "attention_max_failures",
    "passed_checks",
    "median_rt_ms",
    "viewport_width",
    "viewport_height",
    "device_class",
    "order_seed",
    "criterion_order",
]
#: Columns added after the first exports: a file without them reads with them empty.
LATER_COLUMNS = ("order_seed", "criterion_order")
INT_COLUMNS = (
    "study_version",
    "trials_answered",
    "attention_answered",
    "attention_failed",
    "attention_max_failures",
    "viewport_width",
    "viewport_height",
    "order_seed",
)
FLOAT_COLUMNS = ("median_rt_ms",)
BOOL_COLUMNS = ("simulated", "passed_checks")
TIME_COLUMNS = ("arrived_at", "consented_at", "finished_at", "last_seen_at")
SOURCES = ("prolific", "lab", "anonymous", "simulated")
OUTCOMES = ("completed", "failed_attention", "timed_out", "declined")
DEVICE_CLASSES = ("desktop", "mobile")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

CODEBOOK = {
    "study": "study name (the spec's `name`)",
    "participant": "pseudonymous participant id, the same as in the responses export",
    "source": "how the participant arrived: prolific (PROLIFIC_PID in the link), lab (id in "
    "the link), anonymous (neither) or simulated (hprune study simulate)",
    "simulated": "true for a participant played by hprune study simulate: never a real person, "
    "never paid",
    "prolific_pid": "Prolific PROLIFIC_PID (prolific participants only)",
    "prolific_study_id": "Prolific STUDY_ID, where the entry link gave one (prolific only)",
    "prolific_session_id": "Prolific SESSION_ID, where the entry link gave one (prolific only); "
    "Prolific's submission id",
    "external_id": "the id a lab or simulated participant arrived with (the link's id, or the "
    "simulator's); empty for prolific and anonymous participants",
    "study_version": "study version the participant was assigned",
    "outcome": "completed, failed_attention, timed_out, declined, or empty while the "
    "participant has not finished",
    "completion_code": "the completion code the participant was given for the outcome: the "
    "spec's code as it is for prolific participants (Prolific checks it), that code with a "
    "random suffix of their own for everyone else; empty if none",
    "arrived_at": "UTC time the participant first arrived (ISO 8601)",
    "consented_at": "UTC time the participant gave consent (ISO 8601), empty if they did not",
    "finished_at": "UTC time the session ended (ISO 8601), empty while it has not",
    "last_seen_at": "UTC time of the participant's last arrival (ISO 8601)",
    "trials_answered": "answered trials of every kind, practice included",
    "attention_answered": "answered attention trials (gold and repeat)",
    "attention_failed": "attention trials answered wrongly (gold) or inconsistently (repeat)",
    "attention_max_failures": "the study's attention policy: failed gold trials tolerated before "
    "the session ends with failed_attention (the spec's attention.max_failures)",
    "passed_checks": "true if the participant passed every gold attention trial they "
    "answered (the responses export's passed_checks)",
    "median_rt_ms": "median client response time over answered trials other than practice, "
    "milliseconds; empty if there are none",
    "viewport_width": "browser window width at the screen check, CSS pixels",
    "viewport_height": "browser window height at the screen check, CSS pixels",
    "device_class": "mobile (phone or tablet) or desktop, from the browser's user agent; "
    "empty if it sent none",
    "order_seed": "the seed of every random choice in the participant's session (trial order, "
    "attention positions, sides): with the study version and the study's state it replays "
    "their trials (study.flow.planning)",
    "criterion_order": "the order of the participant's criterion blocks, |-joined; empty "
    "before their trials were assigned",
}


def typed_participants(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the contract's columns in order and typed (text as ``string``)."""
    frame = frame.assign(**{c: pd.NA for c in LATER_COLUMNS if c not in frame.columns})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"the participants lack column(s) {', '.join(missing)}")
    frame = frame[COLUMNS].copy()
    for column in COLUMNS:
        if column in INT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
        elif column in FLOAT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column]).astype("Float64")
        elif column in BOOL_COLUMNS:
            frame[column] = frame[column].astype("boolean")
        elif column in TIME_COLUMNS:
            frame[column] = pd.to_datetime(frame[column], utc=True)
        else:
            frame[column] = frame[column].astype("string").replace("", pd.NA)
    return frame


def validate_participants(frame: pd.DataFrame, *, where: str = "participants") -> pd.DataFrame:
    """Typed and checked: every participant once; known sources, outcomes and device classes;
    ``simulated`` exactly for source simulated; Prolific ids only for prolific participants."""
    try:
        frame = typed_participants(frame)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{where}: {str(exc).splitlines()[0]}") from None
    if frame["participant"].isna().any():
        raise UserError(f"{where}: a row has no participant")
    twice = frame["participant"][frame["participant"].duplicated()]
    if not twice.empty:
        raise UserError(f"{where}: participant {twice.iloc[0]} is listed twice")
    for column, allowed in (
        ("source", SOURCES),
        ("outcome", OUTCOMES),
        ("device_class", DEVICE_CLASSES),
    ):
        unknown = sorted(set(frame[column].dropna()) - set(allowed))
        if unknown:
            raise UserError(
                f"{where}: unknown {column} {', '.join(unknown)} (expected {', '.join(allowed)})"
            )
    simulated = frame["simulated"].fillna(False).astype(bool)
    if (simulated != (frame["source"] == "simulated").fillna(False)).any():
        raise UserError(f"{where}: simulated must be true exactly where source is simulated")
    prolific_ids = frame[["prolific_pid", "prolific_study_id", "prolific_session_id"]]
    is_prolific = (frame["source"] == "prolific").fillna(False).astype(bool)
    if (prolific_ids.notna().any(axis=1) & ~is_prolific).any():
        raise UserError(f"{where}: only prolific participants may have Prolific ids")
    return frame


def write_participants(frame: pd.DataFrame, folder: Path) -> Path:
    """``participants.csv``, ``participants.parquet`` and ``participants_codebook.json`` of
    ``frame`` in ``folder`` (checked first); the CSV's path."""
    frame = validate_participants(frame)
    folder = Path(folder)
    out = neutralise_formulas(frame)
    for column in TIME_COLUMNS:
        out[column] = out[column].dt.strftime(_TIME_FORMAT)
    path = folder / PARTICIPANTS_CSV
    atomic_write_text(path, out.to_csv(index=False, lineterminator="\n"))
    atomic_write_bytes(folder / PARTICIPANTS_PARQUET, frame.to_parquet(index=False))
    codebook = {
        "format": "hprune participants export, one row per participant",
        "rows": len(frame),
        "spreadsheet_safe_csv": "text cells starting with = + - @, a tab, a carriage return or "
        "a quote are written with a quote in front (hprune.contracts.spreadsheet); the Parquet "
        "file holds them verbatim",
        "columns": {c: {"dtype": str(frame[c].dtype), "meaning": CODEBOOK[c]} for c in COLUMNS},
    }
    atomic_write_text(folder / PARTICIPANTS_CODEBOOK, json.dumps(codebook, indent=2) + "\n")
    return path


def read_participants(source: str | Path) -> pd.DataFrame:
    """The participants of a ``participants.parquet`` or ``participants.csv``, or of an export
    folder holding one (the Parquet file first), checked."""
    path = Path(source)
    if path.is_dir():
        parquet = path / PARTICIPANTS_PARQUET
        path = parquet if parquet.is_file() else path / PARTICIPANTS_CSV
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
        return validate_participants(frame, where=str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame = restore_formulas(frame)
    for column in (*INT_COLUMNS, *FLOAT_COLUMNS, *BOOL_COLUMNS, *TIME_COLUMNS):
        if column in frame.columns:
            frame[column] = frame[column].replace("", None)
    for column in BOOL_COLUMNS:
        if column in frame.columns:
            text = frame[column].str.strip().str.lower()
            frame[column] = text.map(_BOOLS)
            bad = text.notna() & frame[column].isna()
            if bad.any():
                raise UserError(
                    f"{path}: {column} must be true or false, got {text[bad].iloc[0]!r}"
                )
    return validate_participants(frame, where=str(path))


_BOOLS = {"true": True, "1": True, "false": False, "0": False}
