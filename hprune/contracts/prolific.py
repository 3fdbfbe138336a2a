"""Prolific approvals: which submissions to approve, reject or look at, made from the
participants export (:mod:`hprune.contracts.participants`), in Prolific's own terms.

Prolific's API (docs.prolific.com, "Bulk approve submissions" and "Approve or reject a
submission") approves in bulk with ``POST https://api.prolific.com/api/v1/submissions/
bulk-approve/`` and a JSON body of either ``{"submission_ids": [...]}`` (which Prolific
recommends; a submission id is the ``SESSION_ID`` it passes in the study link, and the
submissions need not be from one study) or ``{"study_id": "...", "participant_ids": [...]}``.
There is no bulk rejection: each submission is rejected on its own with ``POST
.../submissions/<submission id>/transition/`` and ``{"action": "REJECT", "message": ...,
"rejection_category": ...}``, the message at least 100 characters long and the category one
of Prolific's.

Two files:

- ``prolific_approvals.csv``: one row per Prolific participant (simulated ones are never
  listed): ``participant_id`` (PROLIFIC_PID), ``study_id`` (STUDY_ID), ``submission_id``
  (SESSION_ID), ``action``, ``reason``, ``message`` (for rejections, to send as it is or
  edit), ``completion_code`` and the pseudonymous ``participant`` of the other exports;
- ``prolific_bulk_approve.json``: a list of bulk-approval bodies, one POST each, that
  approve every APPROVE row: by submission id, and by study and participant id for rows
  whose link gave no SESSION_ID (:func:`bulk_approve_bodies`).

Actions, from how the session ended (the study decided it while the participant took part):

- ``APPROVE``: completed;
- ``REJECT``: ended on the attention checks (outcome ``failed_attention``: more failed gold
  trials than the spec's ``attention.max_failures``), which Prolific accepts as a reason to
  reject when the checks are fair;
- ``REVIEW``: anything else (timed out, declined consent, never finished): Prolific asks
  researchers to request a return, or pay for the time spent, rather than reject these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hprune.contracts.participants import validate_participants
from hprune.contracts.spreadsheet import neutralise_formulas
from hprune.fileio import atomic_write_text

APPROVALS_CSV = "prolific_approvals.csv"
BULK_APPROVE_JSON = "prolific_bulk_approve.json"
PROLIFIC_FILES = (APPROVALS_CSV, BULK_APPROVE_JSON)
BULK_APPROVE_URL = "https://api.prolific.com/api/v1/submissions/bulk-approve/"
COLUMNS = [
    "participant_id",
    "study_id",
    "submission_id",
    "action",
    "reason",
    "message",
    "completion_code",
    "participant",
]
ACTIONS = ("APPROVE", "REJECT", "REVIEW")
MIN_REJECTION_MESSAGE = 100  # characters, as Prolific requires


def _decision(person: pd.Series) -> tuple[str, str, str | None]:
    """(action, reason, rejection message) of one Prolific participant."""
    outcome = person["outcome"] if pd.notna(person["outcome"]) else None
    if outcome == "completed":
        return "APPROVE", "completed the study", None
    if outcome == "failed_attention":
        failed, answered = int(person["attention_failed"]), int(person["attention_answered"])
        tolerated = person["attention_max_failures"]
        allowed = f" ({int(tolerated)} allowed)" if pd.notna(tolerated) else ""
        reason = f"failed the attention checks: {failed} of {answered} check trials{allowed}"
        message = (
            "Your submission is rejected because it failed this study's attention checks: "
            f"{failed} of its {answered} check trials were answered wrongly or inconsistently "
            "(such as choosing an obviously broken image over an intact one), more than the "
            f"study allows{allowed}, so the session ended early."
        )
        return "REJECT", reason, message
    reason = {
        "timed_out": "ran out of the study's time limit",
        "declined": "declined consent",
        None: "has not finished the study",
    }[outcome]
    return "REVIEW", f"{reason}: request a return or pay for the time spent", None


def approvals(participants: pd.DataFrame) -> pd.DataFrame:
    """The approvals table (module docstring) of a participants export."""
    people = validate_participants(participants)
    people = people[(people["source"] == "prolific").fillna(False).astype(bool)]
    rows = []
    for _, person in people.iterrows():
        action, reason, message = _decision(person)
        if (
            action == "APPROVE"
            and pd.isna(person["prolific_session_id"])
            and pd.isna(person["prolific_study_id"])
        ):
            reason += " (approve by hand: the link gave no SESSION_ID or STUDY_ID)"
        rows.append(
            {
                "participant_id": person["prolific_pid"],
                "study_id": person["prolific_study_id"],
                "submission_id": person["prolific_session_id"],
                "action": action,
                "reason": reason,
                "message": message,
                "completion_code": person["completion_code"],
                "participant": person["participant"],
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS).astype("string")


def bulk_approve_bodies(table: pd.DataFrame) -> list[dict]:
    """The JSON bodies of Prolific's bulk approval (one POST each) that approve every APPROVE
    row of the table: one by submission id for the rows with a SESSION_ID, then one per
    STUDY_ID by participant id for rows without. A row with neither is left to be approved
    by hand (its reason says so)."""
    approve = table[table["action"] == "APPROVE"]
    bodies = []
    if approve["submission_id"].notna().any():
        bodies.append({"submission_ids": approve["submission_id"].dropna().tolist()})
    rest = approve[approve["submission_id"].isna() & approve["study_id"].notna()]
    for study_id, group in rest.groupby("study_id", sort=True):
        bodies.append({"study_id": study_id, "participant_ids": group["participant_id"].tolist()})
    return bodies


def write_approvals(participants: pd.DataFrame, folder: Path) -> None:
    """Write ``prolific_approvals.csv`` and ``prolific_bulk_approve.json`` (the list of
    :func:`bulk_approve_bodies`) into ``folder``."""
    table = approvals(participants)
    folder = Path(folder)
    csv = neutralise_formulas(table).to_csv(index=False, lineterminator="\n")
    atomic_write_text(folder / APPROVALS_CSV, csv)
    bodies = bulk_approve_bodies(table)
    atomic_write_text(folder / BULK_APPROVE_JSON, json.dumps(bodies, indent=2) + "\n")
