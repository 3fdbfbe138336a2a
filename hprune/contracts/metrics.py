"""metrics.csv + metrics.json: automatic metrics per image, in the tidy format the analysis reads.

metrics.csv has one row per (image, metric) with the columns ``image_id, variant,
prompt_id, metric, value, higher_is_better`` (design.md). Beside it, ``metrics.json``
describes each metric once: its version, its scale and where its values came from, so
that a number in the table can always be traced to what produced it.

``generation.measurement.scoring`` runs scorers and ``generation.measurement.metric_importers``
brings in results computed elsewhere; both write through this module, and the analysis reads
through it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from hprune.errors import UserError
from hprune.fileio import atomic_write_text

METRIC_COLUMNS = ("image_id", "variant", "prompt_id", "metric", "value", "higher_is_better")
WRITE_MODES = ("error", "overwrite", "merge")


@dataclass(frozen=True)
class MetricInfo:
    """What one metric of a metrics.csv is: its name (with version), direction and scale."""

    name: str
    higher_is_better: bool
    version: str = ""
    scale: str = ""
    source: str = ""


def metrics_info_path(metrics_path: str | Path) -> Path:
    """The description file beside a metrics table: ``metrics.csv`` -> ``metrics.json``."""
    return Path(metrics_path).with_suffix(".json")


def metric_rows(
    manifest_rows: Sequence, values: Sequence[float], info: MetricInfo
) -> list[dict[str, object]]:
    """Tidy rows for one metric: one per image of ``manifest_rows`` (objects with image_id/variant/prompt_id)."""
    return [
        {
            "image_id": row.image_id,
            "variant": row.variant,
            "prompt_id": row.prompt_id,
            "metric": info.name,
            "value": float(value),
            "higher_is_better": info.higher_is_better,
        }
        for row, value in zip(manifest_rows, values, strict=True)
    ]


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metrics.csv as a DataFrame with typed columns; UserError if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metrics file {path} does not exist")
    try:
        table = pd.read_csv(
            path, dtype={"image_id": str, "variant": str, "prompt_id": str, "metric": str}
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in METRIC_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    table["value"] = pd.to_numeric(table["value"], errors="coerce").astype(float)
    if table["value"].isna().any():
        line = int(table.index[table["value"].isna()][0]) + 2
        raise UserError(f"{path}:{line}: value is not a number")
    table["higher_is_better"] = table["higher_is_better"].map(_parse_bool)
    return table[list(METRIC_COLUMNS)]


def read_metric_infos(metrics_path: str | Path) -> dict[str, MetricInfo]:
    """The metric descriptions beside a metrics.csv (empty if there are none)."""
    path = metrics_info_path(metrics_path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: MetricInfo(**info) for name, info in data.get("metrics", {}).items()}


def write_metrics(
    path: str | Path,
    rows: Iterable[dict] | pd.DataFrame,
    infos: Iterable[MetricInfo],
    *,
    mode: str = "error",
) -> pd.DataFrame:
    """Write metrics.csv (+ metrics.json) atomically; returns the table written.

    ``mode``: ``error`` refuses an existing file, ``overwrite`` replaces it, ``merge`` keeps its
    rows except those of the metrics being written now (so re-scoring one metric replaces it).
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {WRITE_MODES}")
    path = Path(path)
    table = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    table = table.reindex(columns=list(METRIC_COLUMNS))
    infos = {info.name: info for info in infos}
    if set(table["metric"]) - set(infos):
        raise ValueError("every metric written needs a MetricInfo")
    if path.exists() and mode == "error":
        raise UserError(
            f"{path} already exists (pass --overwrite to replace it or --merge to add to it)"
        )
    if path.exists() and mode == "merge":
        old = read_metrics(path)
        old = old[~old["metric"].isin(infos)]
        infos = {**read_metric_infos(path), **infos}
        table = pd.concat([old, table], ignore_index=True)
    duplicated = table.duplicated(subset=["image_id", "metric"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise UserError(f"metric {first['metric']} given twice for image {first['image_id']}")
    if not all(math.isfinite(v) for v in table["value"]):
        raise ValueError("metric values must be finite")
    out = table.copy()
    out["higher_is_better"] = out["higher_is_better"].map(lambda b: "true" if b else "false")
    atomic_write_text(path, out.to_csv(index=False, lineterminator="\n", float_format="%.10g"))
    description = {"metrics": {name: asdict(info) for name, info in sorted(infos.items())}}
    atomic_write_text(metrics_info_path(path), json.dumps(description, indent=2) + "\n")
    return table


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise UserError(f"higher_is_better must be true or false, got {value!r}")
