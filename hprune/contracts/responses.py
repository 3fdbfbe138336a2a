"""The responses export: tidy, one row per answered trial (design.md).

Columns, in order: ``study, participant, trial_index, kind, criterion, prompt_id, left_image,
right_image, left_variant, right_variant, choice, rating, rt_ms, server_ms, shown_at,
answered_at, passed_checks``, then the study's extras (:data:`EXTRA_COLUMNS`). ``kind`` is
pair, rating, attention or practice; a pair trial has a ``choice`` (left, right, tie); a
rating trial has a ``rating`` and its variant in ``left_variant``.

Written by the study as ``responses.csv`` and ``responses.parquet`` with a ``codebook.json``
beside them (:func:`write_responses`); read back from a file or an export folder
(:func:`read_responses_table`) and checked (:func:`validate_responses`) by the analysis. The
CSV's text cells are spreadsheet-safe (:mod:`hprune.contracts.spreadsheet`); the Parquet file
holds them verbatim.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hprune.contracts.spreadsheet import neutralise_formulas, restore_formulas
from hprune.errors import UserError

#: The contract's columns, in the contract's order.
CONTRACT_COLUMNS = [
    "study",
    "participant",
    "trial_index",
    "kind",
    "criterion",
    "prompt_id",
    "left_image",
    "right_image",
    "left_variant",
    "right_variant",
    "choice",
    "rating",
    "rt_ms",
    "server_ms",
    "shown_at",
    "answered_at",
    "passed_checks",
]

#: Columns the study's export writes beyond the contract.
EXTRA_COLUMNS = [
    "study_version",
    "seed",
    "check",
    "check_passed",
    "participant_outcome",
    "criterion_order",
    "min_display_ms",
    "load_ms",
    "attention_max_failures",
]

#: Every column the study's export writes, in order.
COLUMNS = CONTRACT_COLUMNS + EXTRA_COLUMNS
RESPONSES_CSV = "responses.csv"
RESPONSES_PARQUET = "responses.parquet"
CODEBOOK_NAME = "codebook.json"
EXPORT_FILES = (RESPONSES_CSV, RESPONSES_PARQUET, CODEBOOK_NAME)
_TIME_COLUMNS = ("shown_at", "answered_at")

CODEBOOK = {
    "study": "study name (the spec's `name`)",
    "participant": "pseudonymous participant id: a hash of the server's random participant id; "
    "the same person keeps it across the study, and it does not reveal their Prolific id",
    "trial_index": "position of the trial in the participant's session, from 0 (practice first); "
    "positions may skip where a trial was not needed",
    "kind": "pair (2AFC), rating (MOS), attention (gold or repeat check) or practice",
    "criterion": "what was asked, e.g. quality or alignment (the spec's criterion name)",
    "prompt_id": "the prompt of the image(s)",
    "left_image": "manifest image_id shown on the left (the only image of a rating trial); "
    "a generated broken image of a gold trial is `broken-<source image_id>`",
    "right_image": "manifest image_id shown on the right; empty for rating trials",
    "left_variant": "variant of the left image; `attention-broken` for a gold trial's broken image",
    "right_variant": "variant of the right image; empty for rating trials",
    "choice": "left, right or tie (pair trials)",
    "rating": "1-5 (rating trials)",
    "rt_ms": "client response time: from both images being displayed to the answer, milliseconds",
    "server_ms": "server time from first serving the trial to receiving the answer, milliseconds",
    "shown_at": "UTC time the server first served the trial (ISO 8601)",
    "answered_at": "UTC time the server stored the answer (ISO 8601)",
    "passed_checks": "participant level: true if the participant passed every gold attention "
    "trial they answered (so filter `passed_checks` to keep attentive participants); repeated-"
    "trial consistency is in check_passed and does not affect it",
    "study_version": "study version the participant was assigned (a new import makes a new one)",
    "seed": "seed of the image(s)",
    "check": "attention trials: broken (gold: one image obviously broken) or repeat (an earlier "
    "trial again with the sides swapped)",
    "check_passed": "attention trials: gold answered correctly (the intact image, or a rating "
    "<= 2 for a broken image); repeat answered consistently (same variant, or ratings within 1)",
    "participant_outcome": "completed, failed_attention, timed_out, declined, or empty while "
    "the participant has not finished",
    "criterion_order": "participant level: the order of the participant's criterion blocks, "
    "names joined by |; with the spec's criterion_order: counterbalanced each order is given "
    "to equally many participants (to within one); empty for sessions from before it was kept",
    "min_display_ms": "the trial's images were displayed at least this long before an answer "
    "was taken (the spec's min_display_ms; inputs earlier were ignored), so rt_ms >= it; "
    "empty for sessions from before it was kept",
    "load_ms": "client time from receiving the trial to its images being displayed "
    "(loading and decoding), milliseconds; empty when the client did not say",
    "attention_max_failures": "the study's attention policy for this participant: failed gold "
    "trials tolerated before the session ends (the spec's attention.max_failures, of the "
    "participant's study version); hprune analyze excludes whoever failed more",
}

REQUIRED = ["participant", "kind", "left_variant", "right_variant", "choice", "rating"]
OPTIONAL_DEFAULTS: dict[str, object] = {
    "study": "",
    "trial_index": pd.NA,
    "criterion": "quality",
    "prompt_id": "",
    "left_image": pd.NA,
    "right_image": pd.NA,
    "rt_ms": np.nan,
    "server_ms": np.nan,
    "shown_at": pd.NaT,
    "answered_at": pd.NaT,
    "passed_checks": True,
    "check": pd.NA,  # attention trials: "broken" (gold) or "repeat" (study export extras)
    "check_passed": pd.NA,
}
KINDS = {"pair", "rating", "attention", "practice"}
CHOICES = {"left", "right", "tie"}


def write_responses(frame: pd.DataFrame, folder: Path) -> None:
    """The three export files of ``frame`` (columns :data:`COLUMNS`) in ``folder``."""
    csv_frame = neutralise_formulas(frame)
    for column in _TIME_COLUMNS:
        csv_frame[column] = csv_frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    csv_frame.to_csv(folder / RESPONSES_CSV, index=False)
    frame.to_parquet(folder / RESPONSES_PARQUET, index=False)
    codebook = {
        "format": "hprune responses export, one row per answered trial",
        "rows": len(frame),
        "columns": {c: {"dtype": str(frame[c].dtype), "meaning": CODEBOOK[c]} for c in COLUMNS},
    }
    (folder / CODEBOOK_NAME).write_text(json.dumps(codebook, indent=2) + "\n")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or a UserError saying why not."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path, low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def export_file(folder: Path) -> Path:
    """The responses file of an export folder: the Parquet file, else the CSV."""
    for name in (RESPONSES_PARQUET, RESPONSES_CSV):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder} holds no {RESPONSES_PARQUET} or {RESPONSES_CSV}")


def read_responses_table(source: str | Path) -> pd.DataFrame:
    """The raw table of a responses file or export folder (check it with validate_responses)."""
    path = Path(source)
    if path.is_dir():
        path = export_file(path)
    frame = read_table(path)
    return frame if path.suffix.lower() in {".parquet", ".pq"} else restore_formulas(frame)


def validate_responses(frame: pd.DataFrame, *, study: str | None = None) -> pd.DataFrame:
    """Check the export contract; fill optional columns; normalise types.

    Raises a UserError naming the problem for missing columns, unknown trial kinds,
    pair trials without a valid choice, rating trials without a finite rating, and a
    file that mixes studies without ``study`` saying which one.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(
            f"the responses lack column(s) {', '.join(missing)} "
            "(expected the responses export: participant, kind, left_variant, right_variant, "
            "choice, rating, ...)"
        )
    frame = frame.copy()
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = default
    frame["kind"] = frame["kind"].astype("string").str.strip().str.lower()
    unknown = sorted(set(frame["kind"].dropna().unique()) - KINDS)  # unique: no 1M-row loop
    if unknown or frame["kind"].isna().any():
        raise UserError(
            f"unknown trial kind(s) {', '.join(unknown) or '<empty>'} (expected pair, rating, "
            "attention, practice)"
        )
    if study is not None:
        frame = frame[frame["study"].astype(str) == study]
        if frame.empty:
            raise UserError(f"no responses of study {study!r}")
    elif frame["study"].astype(str).nunique() > 1:
        names = ", ".join(sorted(frame["study"].astype(str).unique()))
        raise UserError(f"the responses mix several studies ({names}); pick one with --study")
    for column in ("participant", "left_variant", "right_variant", "prompt_id", "criterion"):
        frame[column] = frame[column].astype("string")
    frame["choice"] = frame["choice"].astype("string").str.strip().str.lower()
    frame["rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame["rt_ms"] = pd.to_numeric(frame["rt_ms"], errors="coerce")
    frame["passed_checks"] = _as_bool(frame["passed_checks"])
    if frame["participant"].isna().any():
        raise UserError(f"{int(frame['participant'].isna().sum())} responses have no participant")

    pairs = frame["kind"] == "pair"
    bad_choice = pairs & ~frame["choice"].isin(CHOICES).fillna(False)
    if bad_choice.any():
        examples = ", ".join(sorted(set(frame.loc[bad_choice, "choice"].astype(str)))[:5])
        raise UserError(
            f"{int(bad_choice.sum())} pair trials have no valid choice (left/right/tie): {examples}"
        )
    no_variant = pairs & (frame["left_variant"].isna() | frame["right_variant"].isna())
    if no_variant.any():
        raise UserError(f"{int(no_variant.sum())} pair trials lack a left or right variant")
    ratings = frame["kind"] == "rating"
    nan_rating = ratings & ~np.isfinite(frame["rating"].to_numpy(float, na_value=np.nan))
    if nan_rating.any():
        raise UserError(
            f"{int(nan_rating.sum())} rating trials have no numeric rating (NaN or empty), e.g. "
            f"participant {frame.loc[nan_rating, 'participant'].iloc[0]}"
        )
    if (ratings & frame["left_variant"].isna()).any():
        raise UserError("some rating trials name no variant (left_variant)")
    return frame.reset_index(drop=True)


def _as_bool(column: pd.Series) -> pd.Series:
    if column.dtype == bool:
        return column
    text = column.astype("string").str.strip().str.lower()
    mapped = text.map(
        {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    )
    return mapped.fillna(True).astype(bool)
