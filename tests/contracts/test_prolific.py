"""The Prolific approvals made from the participants export: who is approved, rejected or left
for review, and the bodies of Prolific's bulk approval."""

from __future__ import annotations

import json

import pandas as pd

from hprune.contracts.prolific import (
    APPROVALS_CSV,
    BULK_APPROVE_JSON,
    MIN_REJECTION_MESSAGE,
    approvals,
    bulk_approve_bodies,
    write_approvals,
)
from tests.contracts.test_participants import person


def people() -> pd.DataFrame:
    return pd.DataFrame(
        [
            person(participant="p-1", prolific_pid="A", prolific_session_id="SA"),
            person(participant="p-2", prolific_pid="B", prolific_session_id="SB",
                   outcome="failed_attention", attention_failed=2, attention_answered=4,
                   passed_checks=False, completion_code="FAIL456"),
            person(participant="p-3", prolific_pid="C", prolific_session_id="SC",
                   outcome="timed_out"),
            person(participant="p-4", prolific_pid="D", prolific_session_id="SD", outcome=None),
            person(participant="p-5", prolific_pid="E", prolific_session_id=None,
                   prolific_study_id="S2"),
            person(participant="p-6", prolific_pid="F", prolific_session_id=None,
                   prolific_study_id=None),
            person(participant="p-7", source="simulated", simulated=True, prolific_pid=None,
                   prolific_study_id=None, prolific_session_id=None, external_id="sim-1"),
            person(participant="p-8", source="lab", prolific_pid=None, prolific_study_id=None,
                   prolific_session_id=None, external_id="lab-1"),
        ]
    )  # fmt: skip


def test_completed_is_approved_failed_attention_rejected_and_the_rest_reviewed() -> None:
    table = approvals(people()).set_index("participant_id")
    assert list(table.index) == ["A", "B", "C", "D", "E", "F"]  # no simulated, no lab
    assert table["action"].to_dict() == {
        "A": "APPROVE", "B": "REJECT", "C": "REVIEW", "D": "REVIEW", "E": "APPROVE",
        "F": "APPROVE",
    }  # fmt: skip
    assert "2 of 4 check trials (1 allowed)" in table.loc["B", "reason"]
    assert len(table.loc["B", "message"]) >= MIN_REJECTION_MESSAGE
    assert table["message"].drop("B").isna().all()
    assert "request a return" in table.loc["C", "reason"]
    assert "approve by hand" in table.loc["F", "reason"]
    assert table.loc["B", "completion_code"] == "FAIL456"


def test_bulk_approval_by_submission_id_then_by_study_and_participant() -> None:
    bodies = bulk_approve_bodies(approvals(people()))
    assert bodies == [
        {"submission_ids": ["SA"]},
        {"study_id": "S2", "participant_ids": ["E"]},
    ]


def test_the_files_are_written_and_spreadsheet_safe(tmp_path) -> None:
    frame = pd.DataFrame([person(prolific_pid="=cmd|' /C calc'!A0", prolific_session_id="S1")])
    write_approvals(frame, tmp_path)
    assert json.loads((tmp_path / BULK_APPROVE_JSON).read_text()) == [{"submission_ids": ["S1"]}]
    cell = pd.read_csv(tmp_path / APPROVALS_CSV, dtype=str)["participant_id"].iloc[0]
    assert cell == "'=cmd|' /C calc'!A0"
