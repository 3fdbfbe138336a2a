"""Responses for the analysis: the study's export files, and published pairwise data sets.

The responses export itself (columns, reading, checking) is defined in
:mod:`hprune.contracts.responses`. Here: a source is a CSV or Parquet file, an export folder
(``responses.parquet`` or ``responses.csv`` beside ``codebook.json``), or the pwcmp CSV
layouts of published pairwise experiments (observer/scene/condition columns), converted on
read. A study database URL is read by the ``hprune analyze`` command, which knows the study
package (:func:`hprune.commands.analyze.read_responses`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hprune.contracts.responses import read_responses_table, read_table, validate_responses
from hprune.errors import UserError


def is_database_url(source: str) -> bool:
    return "://" in str(source)


def read_responses(source: str | Path, *, study: str | None = None) -> pd.DataFrame:
    """Responses from an export file or folder, or a published pwcmp data set; checked.

    ``study`` picks one study when the source holds several.
    """
    if is_database_url(str(source)):
        raise UserError(
            f"{source} is a database URL: read it with 'hprune analyze', or export the "
            "responses with 'hprune study export' and pass the folder"
        )
    frame = read_responses_table(source)
    sides = True
    if is_pwcmp(frame):
        frame, sides = from_pwcmp(frame), False
    frame = with_participant_ids(frame, Path(source))
    frame = validate_responses(frame, study=study)
    frame.attrs["sides"] = sides  # False: left/right mean nothing (pwcmp's A/B)
    return frame


def with_participant_ids(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Add ``prolific_pid`` from the participants export beside the responses, where there is
    one that has it (the report lists exclusions by it, for approving and rejecting)."""
    folder = source if source.is_dir() else source.parent
    if "prolific_pid" in frame:
        return frame
    for name in ("participants.parquet", "participants.csv"):
        if (folder / name).is_file():
            people = read_table(folder / name)
            if not {"participant", "prolific_pid"} <= set(people.columns):
                return frame
            ids = people.drop_duplicates("participant").set_index("participant")["prolific_pid"]
            return frame.assign(prolific_pid=frame["participant"].map(ids))
    return frame


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
