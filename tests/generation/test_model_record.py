"""The model record: round trip, original-index mapping, history, and rejected bad records."""

from __future__ import annotations

import json

import pytest

from generation.model_record import (
    ModelRecord,
    append_history,
    read_record,
    record_path,
    write_record,
)
from hprune.errors import UserError


def pruned_record() -> ModelRecord:
    return ModelRecord(
        family="flux",
        original_block_counts={"transformer_blocks": 4, "single_transformer_blocks": 8},
        original_parameters=1000,
        kept_blocks=[0, 2, 3, 4, 5, 9, 10, 11],
        removed_blocks=[1, 6, 7, 8],
        removed_subcomponents=[{"block": 9, "component": "mlp"}],
        pruning={"method": "hpp", "budget": 0.8},
    )


def test_round_trip_and_current_indices(tmp_path) -> None:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    record = pruned_record()
    path = write_record(tmp_path, record)
    assert path == tmp_path / "transformer" / "hprune_record.json" == record_path(tmp_path)
    loaded = read_record(tmp_path)
    assert loaded == record
    assert loaded.original_num_blocks == 12
    assert loaded.current_index(9) == 5
    assert loaded.removed_parts_current() == [(5, "mlp")]
    assert read_record(tmp_path / "transformer") == record


def test_history_is_appended_not_replaced(tmp_path) -> None:
    write_record(tmp_path, pruned_record())
    append_history(tmp_path, "distill", steps=10)
    record = append_history(tmp_path, "quantize", scheme="nf4")
    assert [h["stage"] for h in record.history] == ["distill", "quantize"]
    assert record.history[0]["steps"] == 10 and "at" in record.history[0]
    assert read_record(tmp_path) == record


def test_models_without_a_record(tmp_path) -> None:
    assert read_record(tmp_path) is None
    with pytest.raises(UserError, match="no hprune model record"):
        append_history(tmp_path, "distill")


@pytest.mark.parametrize(
    "change",
    [
        {"format": "something-else"},
        {"version": 99},
        {"kept_blocks": [0, 2, 2]},
        {"kept_blocks": [0, 12]},
        {"removed_blocks": [1]},
        {"removed_subcomponents": [{"block": 1, "component": "ff"}]},
        {"family": None, "kept_blocks": "x"},
    ],
)
def test_bad_records_are_user_errors(tmp_path, change) -> None:
    write_record(tmp_path, pruned_record())
    path = record_path(tmp_path)
    data = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(data))
    with pytest.raises(UserError):
        read_record(tmp_path)


def test_unreadable_record(tmp_path) -> None:
    record_path(tmp_path).write_text("{")
    with pytest.raises(UserError, match="cannot read model record"):
        read_record(tmp_path)
