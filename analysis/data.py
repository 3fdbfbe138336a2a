"""Reading and checking responses exports (and published pairwise data sets).

The responses export (design.md) is tidy, one row per answered trial:
``study, participant, trial_index, kind, criterion, prompt_id, left_image, right_image,
left_variant, right_variant, choice, rating, rt_ms, server_ms, shown_at, answered_at,
passed_checks``. ``kind`` is pair, rating, attention or practice; a pair trial has a
``choice`` (left, right, tie); a rating trial has a ``rating`` and its variant in
``left_variant``.

Sources: a CSV or Parquet file, an export folder (``responses.parquet`` or
``responses.csv`` beside ``codebook.json``), or the pwcmp CSV layouts of published
pairwise experiments (observer/scene/condition columns), converted on read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hprune.errors import UserError
from study.export_format import CONTRACT_COLUMNS

#: The columns of the responses export, in the contract's order (design.md).
EXPORT_COLUMNS = CONTRACT_COLUMNS
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


def is_database_url(source: str) -> bool:
    return "://" in str(source)


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


def _export_file(folder: Path) -> Path:
    for name in ("responses.parquet", "responses.csv"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder} holds no responses.parquet or responses.csv")


def read_responses(source: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """Responses from a file, an export folder, or a published pwcmp data set; checked.

    A database URL is read through the study's own export code (see
    ``read_responses_database``). ``study`` picks one study when the source holds several.
    """
    if is_database_url(str(source)):
        frame = read_responses_database(str(source), study=study)
    else:
        path = Path(source)
        if path.is_dir():
            path = _export_file(path)
        frame = read_table(path)
        if is_pwcmp(frame):
            frame = from_pwcmp(frame)
    return validate_responses(frame, study=study)


def read_responses_database(url: str, *, study: str | None = None) -> pd.DataFrame:
    """Responses straight from a study database, through the study package's exporter (which
    refuses a bad URL, a missing SQLite file or an unreachable server with a one-line error)."""
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from study.export import export_responses  # Flask-free part of the study package
    except ImportError as exc:
        raise UserError(
            "reading a study database needs the study package's exporter "
            f"(study.export.export_responses): {exc}. Export the responses with "
            "'hprune study export' and pass the file instead."
        ) from exc
    try:
        return export_responses(url, study=study)
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the study database: {first}") from exc


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
    unknown = sorted(set(frame["kind"].dropna()) - KINDS)
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


# ----------------------------------------------------------------- published data


def is_pwcmp(frame: pd.DataFrame) -> bool:
    """The pwcmp example layouts (Perez-Ortiz & Mantiuk's toolbox)."""
    cols = set(frame.columns)
    return {"observer", "scene", "condition_A", "condition_B", "is_A_selected"} <= cols or {
        "observer",
        "scene",
        "dist_type1",
        "dist_level1",
        "dist_type2",
        "dist_level2",
        "selected",
    } <= cols


def from_pwcmp(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert a pwcmp pairwise CSV into responses-export rows.

    The observer becomes the participant, the scene the prompt, condition A the "left"
    stimulus (pwcmp does not record screen sides, so position effects are meaningless
    here). The light-field layout names a condition ``<dist_type>_<dist_level>``.
    """
    if "condition_A" in frame.columns:
        a, b = frame["condition_A"].astype(str), frame["condition_B"].astype(str)
        a_chosen = frame["is_A_selected"].astype(int) == 1
        criterion = frame["criterion"].astype(str) if "criterion" in frame else "quality"
    else:
        a = frame["dist_type1"].astype(str) + "_" + frame["dist_level1"].astype(str)
        b = frame["dist_type2"].astype(str) + "_" + frame["dist_level2"].astype(str)
        a_chosen = frame["selected"].astype(int) == 1
        criterion = "quality"
    return pd.DataFrame(
        {
            "study": "pwcmp",
            "participant": frame["observer"].astype(str),
            "trial_index": np.arange(len(frame)),
            "kind": "pair",
            "criterion": criterion,
            "prompt_id": frame["scene"].astype(str),
            "left_variant": a,
            "right_variant": b,
            "choice": np.where(a_chosen, "left", "right"),
            "rating": np.nan,
        }
    )
