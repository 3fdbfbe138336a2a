"""participants.csv: written and read back with its types, and a malformed file refused."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from hprune.contracts.participants import (
    CODEBOOK,
    COLUMNS,
    PARTICIPANTS_CODEBOOK,
    PARTICIPANTS_CSV,
    PARTICIPANTS_PARQUET,
    read_participants,
    validate_participants,
    write_participants,
)
from hprune.errors import UserError


def person(**overrides) -> dict:
    row = {
        "study": "s",
        "participant": "p-000000000001",
        "source": "prolific",
        "simulated": False,
        "prolific_pid": "PID1",
        "prolific_study_id": "STUDY1",
        "prolific_session_id": "SESSION1",
        "external_id": None,
        "study_version": 1,
        "outcome": "completed",
        "completion_code": "DONE123",
        "arrived_at": dt.datetime(2025, 1, 2, 3, 4, 5, 678000),
        "consented_at": dt.datetime(2025, 1, 2, 3, 5),
        "finished_at": dt.datetime(2025, 1, 2, 3, 20),
        "last_seen_at": dt.datetime(2025, 1, 2, 3, 4, 5, 678000),
        "trials_answered": 9,
        "attention_answered": 2,
        "attention_failed": 0,
        "attention_max_failures": 1,
        "passed_checks": True,
        "median_rt_ms": 812.5,
        "viewport_width": 1280,
        "viewport_height": 900,
        "device_class": "desktop",
        "order_seed": 2**62 - 1,  # the largest seed a participant gets
        "criterion_order": "quality|alignment",
    }
    return {**row, **overrides}


def idle() -> dict:
    """Arrived, never consented: most columns are empty."""
    empty = dict.fromkeys(["outcome", "completion_code", "consented_at", "finished_at"])
    empty |= dict.fromkeys(["median_rt_ms", "viewport_width", "viewport_height"])
    empty |= dict.fromkeys(["criterion_order"])
    return person(participant="p-000000000002", source="anonymous", prolific_pid=None,
                  prolific_study_id=None, prolific_session_id=None, trials_answered=0,
                  attention_answered=0, device_class=None, **empty)  # fmt: skip


def test_every_column_has_a_meaning() -> None:
    assert list(CODEBOOK) == COLUMNS


def test_round_trip_keeps_values_types_and_empties(tmp_path) -> None:
    written = pd.DataFrame([person(), idle()])
    path = write_participants(written, tmp_path)
    assert path == tmp_path / PARTICIPANTS_CSV
    assert (tmp_path / PARTICIPANTS_PARQUET).is_file()
    codebook = json.loads((tmp_path / PARTICIPANTS_CODEBOOK).read_text())
    assert list(codebook["columns"]) == COLUMNS and codebook["rows"] == 2
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert "2025-01-02T03:04:05.678000Z" in lines[1] and ",DONE123," in lines[1]
    frame = read_participants(path)
    assert frame.equals(read_participants(tmp_path))  # the folder: its Parquet file
    assert list(frame.columns) == COLUMNS
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["prolific_pid"] == "PID1" and bool(first["passed_checks"]) is True
    assert first["arrived_at"] == pd.Timestamp("2025-01-02T03:04:05.678", tz="UTC")
    assert first["median_rt_ms"] == 812.5 and first["trials_answered"] == 9
    assert first["order_seed"] == 2**62 - 1 and first["criterion_order"] == "quality|alignment"
    assert str(frame["trials_answered"].dtype) == "Int64"
    for column in ("outcome", "completion_code", "prolific_pid", "device_class"):
        assert pd.isna(second[column]), column
    assert pd.isna(second["consented_at"]) and pd.isna(second["viewport_width"])
    assert str(frame["passed_checks"].dtype) == "boolean"
    assert frame.equals(read_participants(tmp_path / PARTICIPANTS_PARQUET))
    assert frame.equals(validate_participants(written))


def test_an_export_from_before_the_seed_columns_reads_with_them_empty(tmp_path) -> None:
    path = write_participants(pd.DataFrame([person()]), tmp_path)
    old = pd.read_csv(path, dtype=str).drop(columns=["order_seed", "criterion_order"])
    old.to_csv(tmp_path / "old.csv", index=False)
    frame = read_participants(tmp_path / "old.csv")
    assert list(frame.columns) == COLUMNS
    assert pd.isna(frame.iloc[0]["order_seed"]) and pd.isna(frame.iloc[0]["criterion_order"])


def test_ids_that_look_like_formulas_are_text_in_the_csv_and_verbatim_elsewhere(tmp_path) -> None:
    """A lab id or a manifest field starting with = + - @ would run as a spreadsheet formula."""
    tricky = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "'quoted", "\tTAB", "plain"]
    rows = [
        person(participant=f"p-{i:012d}", source="lab", prolific_pid=None, prolific_study_id=None,
               prolific_session_id=None, external_id=value, completion_code=value)
        for i, value in enumerate(tricky)
    ]  # fmt: skip
    path = write_participants(pd.DataFrame(rows), tmp_path)
    cells = pd.read_csv(path, dtype=str, keep_default_na=False)["external_id"].tolist()
    assert cells == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "''quoted",
                     "'\tTAB", "plain"]  # fmt: skip
    assert read_participants(path)["external_id"].tolist() == tricky
    assert read_participants(tmp_path / PARTICIPANTS_PARQUET)["completion_code"].tolist() == tricky


def test_a_simulated_participant_cannot_pass_for_a_prolific_one(tmp_path) -> None:
    with pytest.raises(UserError, match="simulated must be true exactly where source"):
        write_participants(pd.DataFrame([person(simulated=True)]), tmp_path)
    with pytest.raises(UserError, match="only prolific participants may have Prolific ids"):
        write_participants(pd.DataFrame([person(source="simulated", simulated=True)]), tmp_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([person(), person()], "listed twice"),
        ([person(source="mturk")], "unknown source mturk"),
        ([person(outcome="vanished")], "unknown outcome vanished"),
        ([person(device_class="toaster")], "unknown device_class toaster"),
        ([person(participant=None)], "has no participant"),
    ],
)
def test_writing_refuses_rows_the_contract_does_not_allow(tmp_path, rows, message) -> None:
    with pytest.raises(UserError, match=message):
        write_participants(pd.DataFrame(rows), tmp_path)
    assert not (tmp_path / PARTICIPANTS_CSV).exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda text: text.replace("trials_answered,", "trials,", 1),
            "lack column.*trials_answered",
        ),
        (lambda text: text.replace(",True,", ",perhaps,"), "passed_checks must be true or false"),
        (lambda text: text.replace(",1280,", ",wide,"), "participants.csv"),
    ],
)
def test_reading_a_malformed_file_is_a_one_line_error(tmp_path, edit, message) -> None:
    path = write_participants(pd.DataFrame([person()]), tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(UserError, match=message):
        read_participants(path)


def test_reading_a_missing_file_says_so(tmp_path) -> None:
    with pytest.raises(UserError, match=r"participants\.csv does not exist"):
        read_participants(tmp_path)
