"""The model record: a JSON sidecar that makes every model hprune writes self-describing.

It lives at ``<model>/transformer/hprune_record.json`` and says which
architecture family the transformer is, how many blocks the original model
had, which original blocks are kept (in order), which blocks and
subcomponents were removed and by which plan, and what every later stage
(distillation, quantisation) did, in ``history``.

Indices in the record are always the *original* model's global block
indices, so a model pruned twice, or distilled after pruning, can still be
compared block by block with its original. ``kept_blocks[j]`` is the original
index of the current model's block ``j``.

Read, write and append only through this module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from hprune.errors import UserError
from hprune.fileio import atomic_write_text

RECORD_NAME = "hprune_record.json"
RECORD_FORMAT = "hprune-model-record"
RECORD_VERSION = 1


@dataclasses.dataclass
class ModelRecord:
    family: str  # "sd3" (SD3 and SD3.5) or "flux"
    original_block_counts: dict[
        str, int
    ]  # e.g. {"transformer_blocks": 19, "single_transformer_blocks": 38}
    original_parameters: int  # transformer parameters of the original model
    kept_blocks: list[int]  # original global index of each current block, in order
    removed_blocks: list[int] = dataclasses.field(default_factory=list)
    removed_subcomponents: list[dict[str, Any]] = dataclasses.field(
        default_factory=list
    )  # {"block", "component"}
    pruning: dict[str, Any] | None = None  # {"method", "budget", "plan", ...} of the last pruning
    parent_fingerprint: str | None = None
    quantization: dict[str, Any] | None = None  # set by the quantisation stage; None: not quantised
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def original_num_blocks(self) -> int:
        return sum(self.original_block_counts.values())

    def current_index(self, original: int) -> int:
        """The current position of original block ``original`` (ValueError if it was removed)."""
        return self.kept_blocks.index(original)

    def removed_parts_current(self) -> list[tuple[int, str]]:
        """Removed subcomponents as ``(current block index, component)``."""
        return [
            (self.current_index(entry["block"]), entry["component"])
            for entry in self.removed_subcomponents
        ]

    def with_history(self, stage: str, **details: Any) -> ModelRecord:
        """A copy with one more ``history`` entry (``stage`` plus a UTC timestamp and ``details``)."""
        entry = {"stage": stage, "at": utc_now(), **details}
        return dataclasses.replace(self, history=[*self.history, entry])

    def to_json(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "version": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Any, *, source: str = "model record") -> ModelRecord:
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise UserError(f"{source} is not an hprune model record")
        if data.get("version") != RECORD_VERSION:
            raise UserError(
                f"{source} has record version {data.get('version')}, expected {RECORD_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise UserError(f"{source} is incomplete: {exc}") from None
        record.validate(source)
        return record

    def validate(self, source: str = "model record") -> None:
        total = self.original_num_blocks
        kept = self.kept_blocks
        if (
            not all(isinstance(i, int) and 0 <= i < total for i in kept)
            or sorted(set(kept)) != kept
        ):
            raise UserError(f"{source}: kept_blocks must be increasing indices below {total}")
        if sorted(set(kept) | set(self.removed_blocks)) != list(range(total)):
            raise UserError(
                f"{source}: kept_blocks and removed_blocks must cover every original block once"
            )
        for entry in self.removed_subcomponents:
            if (
                not isinstance(entry, dict)
                or entry.get("block") not in kept
                or not entry.get("component")
            ):
                raise UserError(f"{source}: bad removed subcomponent entry {entry!r}")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def record_path(model: str | Path) -> Path:
    """Where the record of a pipeline directory or a transformer directory lives."""
    model = Path(model)
    if (model / "model_index.json").is_file() or (model / "transformer").is_dir():
        return model / "transformer" / RECORD_NAME
    return model / RECORD_NAME


def read_record(model: str | Path) -> ModelRecord | None:
    """The record of a model directory, or None if it has none (a model hprune did not write)."""
    path = record_path(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read model record {path}: {exc}") from None
    return ModelRecord.from_json(data, source=str(path))


def write_record(model: str | Path, record: ModelRecord) -> Path:
    """Write ``record`` into a model directory (atomically); return its path."""
    record.validate()
    path = record_path(model)
    atomic_write_text(path, json.dumps(record.to_json(), indent=2) + "\n")
    return path


def append_history(model: str | Path, stage: str, **details: Any) -> ModelRecord:
    """Add one ``history`` entry to the record of ``model`` (creating none: the record must exist)."""
    record = read_record(model)
    if record is None:
        raise UserError(f"{model} has no hprune model record ({RECORD_NAME})")
    record = record.with_history(stage, **details)
    write_record(model, record)
    return record
