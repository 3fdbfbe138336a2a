"""Bring metrics computed elsewhere into the tidy metrics.csv format.

Two sources:

- GenEval's ``results.jsonl`` (github.com/djghosh13/geneval, ``evaluation/evaluate_images.py``):
  one line per image with ``filename``, ``tag``, ``correct``, ... The image is found from its
  path, ``.../[<variant>/]<prompt index, 5 digits>/samples/<seed>.png``: the prompt index is
  GenEval's line number, which :mod:`hprune.contracts.prompts` turns into ``geneval-NNNNN``.
  Each image gets metric ``geneval`` = 1.0 if correct, else 0.0. :func:`geneval_summary`
  gives GenEval's own summary: the score is the unweighted mean of the task (tag) means.
- Per-image score tables (CSV or JSONL) from any other tool, keyed by ``image_id`` or by
  ``prompt_id`` + ``seed`` + ``variant``, with either tidy ``metric``/``value`` columns or
  one value column named on the command line.

Every imported image must be in the stimuli manifest; the manifest gives its image id.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import pandas as pd

from hprune.contracts.manifest import ManifestRow
from hprune.contracts.metrics import MetricInfo, metric_rows
from hprune.errors import UserError

GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
GENEVAL_METRIC = MetricInfo(
    name="geneval",
    higher_is_better=True,
    version="GenEval (Ghosh et al. 2023), results.jsonl",
    scale="per image: 1 correct, 0 incorrect; summary = mean of the six task means",
    source="imported",
)
_SAMPLE_PATH = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class GenEvalSummary:
    """GenEval's summary of a set of per-image results (evaluation/summary_scores.py)."""

    overall: float  # unweighted mean of the task means: the "GenEval score"
    tasks: dict[str, float] = field(default_factory=dict)  # mean correctness per tag
    images_correct: float = 0.0  # fraction of all images that are correct
    prompts_correct: float = 0.0  # fraction of prompts with at least one correct image
    n_images: int = 0


def geneval_summary(records: Iterable[Mapping]) -> GenEvalSummary:
    """Summarise per-image results: each record has ``tag``, ``correct`` and a prompt key.

    The prompt key is ``metadata`` (as in results.jsonl), else ``prompt_id``, else ``prompt``.
    Task means are over images; the overall score averages the task means without weights,
    so a task with fewer prompts counts as much as the others.
    """
    by_tag: dict[str, list[float]] = defaultdict(list)
    by_prompt: dict[object, bool] = {}
    for record in records:
        correct = bool(record["correct"])
        by_tag[str(record["tag"])].append(float(correct))
        key = next((record[k] for k in ("metadata", "prompt_id", "prompt") if k in record), None)
        key = json.dumps(key, sort_keys=True) if isinstance(key, dict | list) else key
        by_prompt[key] = by_prompt.get(key, False) or correct
    if not by_tag:
        raise ValueError("no GenEval results to summarise")
    tasks = {tag: sum(values) / len(values) for tag, values in sorted(by_tag.items())}
    n_images = sum(len(values) for values in by_tag.values())
    return GenEvalSummary(
        overall=sum(tasks.values()) / len(tasks),
        tasks=tasks,
        images_correct=sum(sum(values) for values in by_tag.values()) / n_images,
        prompts_correct=sum(by_prompt.values()) / len(by_prompt),
        n_images=n_images,
    )


def read_geneval_results(path: str | Path) -> list[dict]:
    """The records of a GenEval ``results.jsonl``; UserError on a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"GenEval results file {path} does not exist")
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{line_no}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or not {"filename", "tag", "correct"} <= set(record):
            raise UserError(f"{path}:{line_no}: a GenEval result needs filename, tag and correct")
        if not isinstance(record["correct"], bool | int):
            raise UserError(f"{path}:{line_no}: 'correct' must be true or false")
        record["line"] = line_no
        records.append(record)
    if not records:
        raise UserError(f"{path}: no results in the file")
    return records


def geneval_image_key(
    filename: str, *, variants: set[str], variant: str | None
) -> tuple[str, str, int]:
    """(variant, prompt_id, seed) of a GenEval result's image path."""
    parts = PurePath(filename.replace("\\", "/")).parts
    if len(parts) < 3 or parts[-2] != "samples" or not _SAMPLE_PATH.match(parts[-3]):
        raise UserError(
            f"GenEval image path {filename!r} is not .../<prompt index>/samples/<seed>.png"
        )
    stem = PurePath(parts[-1]).stem
    if not stem.isdigit():
        raise UserError(f"GenEval image name {parts[-1]!r} is not <seed>.png")
    if variant is None:
        candidate = parts[-4] if len(parts) >= 4 else None
        if candidate not in variants:
            raise UserError(
                f"cannot tell the variant of {filename!r} from its path: pass --variant"
            )
        variant = candidate
    return variant, f"geneval-{int(parts[-3]):05d}", int(stem)


def import_geneval(
    results_path: str | Path, manifest: Sequence[ManifestRow], *, variant: str | None = None
) -> tuple[list[dict], list[MetricInfo], dict[str, GenEvalSummary]]:
    """Tidy ``geneval`` rows for every image of a results.jsonl, plus a summary per variant."""
    records = read_geneval_results(results_path)
    index = {row.item: row for row in manifest}
    variants = {row.variant for row in manifest}
    if variant is not None and variant not in variants:
        raise UserError(f"variant {variant!r} is not in the stimuli manifest")
    matched: list[ManifestRow] = []
    values: list[float] = []
    per_variant: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        key = geneval_image_key(record["filename"], variants=variants, variant=variant)
        row = _lookup(index, key, f"{results_path}:{record['line']}")
        matched.append(row)
        values.append(float(bool(record["correct"])))
        per_variant[row.variant].append({**record, "prompt_id": row.prompt_id})
    _refuse_duplicates(matched, "geneval", results_path)
    summaries = {name: geneval_summary(rows) for name, rows in sorted(per_variant.items())}
    return metric_rows(matched, values, GENEVAL_METRIC), [GENEVAL_METRIC], summaries


def import_scores(
    path: str | Path,
    manifest: Sequence[ManifestRow],
    *,
    metric: str | None = None,
    value_column: str | None = None,
    variant: str | None = None,
    higher_is_better: bool = True,
    version: str = "",
    scale: str = "",
) -> tuple[list[dict], list[MetricInfo]]:
    """Tidy rows from a per-image score CSV or JSONL.

    Images are keyed by ``image_id`` if the table has it, else by ``prompt_id``, ``seed``
    and ``variant`` (``variant`` may come from the option instead). Values come from tidy
    ``metric``/``value`` columns, or from ``value_column`` under the name ``metric``.
    """
    path = Path(path)
    table = _read_table(path)
    tidy = "metric" in table.columns and metric is None
    if not tidy:
        if metric is None:
            raise UserError(f"{path}: no 'metric' column; name the metric with --metric")
        value_column = value_column or next(
            (c for c in ("value", "score") if c in table.columns), None
        )
        if value_column is None or value_column not in table.columns:
            raise UserError(
                f"{path}: no value column {value_column or 'value/score'!r} (use --value-column)"
            )
        table = table.assign(metric=metric, value=table[value_column])
    elif "value" not in table.columns:
        raise UserError(f"{path}: a tidy score table needs a 'value' column")
    values = pd.to_numeric(table["value"], errors="coerce")
    if values.isna().any():
        raise UserError(f"{path}:{_line(table, values.isna())}: value is missing or not a number")
    by_id = {row.image_id: row for row in manifest}
    by_item = {row.item: row for row in manifest}
    rows: list[dict] = []
    infos = []
    for name, group in table.groupby("metric", sort=True):
        info = MetricInfo(
            str(name), higher_is_better, version, scale, source=f"imported from {path.name}"
        )
        matched = [
            _match_row(
                record, by_id, by_item, variant, f"{path}:{index + table.attrs['first_line']}"
            )
            for index, record in zip(group.index, group.to_dict("records"), strict=True)
        ]
        _refuse_duplicates(matched, info.name, path)
        rows += metric_rows(matched, values[group.index].tolist(), info)
        infos.append(info)
    return rows, infos


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"score file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson"):
            table = pd.read_json(path, lines=True, dtype=False)
        else:
            raise UserError(f"unknown score file format {path.name!r}: expected .csv or .jsonl")
    except (ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"{path}: not a readable table ({str(exc).splitlines()[0]})") from None
    if table.empty:
        raise UserError(f"{path}: no scores in the file")
    table.attrs["first_line"] = 2 if suffix == ".csv" else 1
    return table


def _match_row(
    record: dict, by_id: dict, by_item: dict, variant: str | None, where: str
) -> ManifestRow:
    if "image_id" in record and str(record["image_id"]).strip():
        image_id = str(record["image_id"]).strip()
        if image_id not in by_id:
            raise UserError(f"{where}: image {image_id!r} is not in the stimuli manifest")
        return by_id[image_id]
    name = variant if variant is not None else record.get("variant")
    if name is None or "prompt_id" not in record or "seed" not in record:
        raise UserError(f"{where}: a score row needs image_id, or prompt_id + seed + variant")
    try:
        seed = int(record["seed"])
    except (TypeError, ValueError):
        raise UserError(f"{where}: seed {record['seed']!r} is not an integer") from None
    return _lookup(by_item, (str(name), str(record["prompt_id"]), seed), where)


def _lookup(index: dict, key: tuple[str, str, int], where: str) -> ManifestRow:
    if key not in index:
        variant, prompt_id, seed = key
        raise UserError(
            f"{where}: no image of variant {variant!r}, prompt {prompt_id!r}, seed {seed} in the stimuli manifest"
        )
    return index[key]


def _refuse_duplicates(rows: Sequence[ManifestRow], metric: str, path: str | Path) -> None:
    seen: set[str] = set()
    for row in rows:
        if row.image_id in seen:
            raise UserError(
                f"{path}: {metric} is given twice for image {row.image_id} ({row.item})"
            )
        seen.add(row.image_id)


def _line(table: pd.DataFrame, mask: pd.Series) -> int:
    return int(table.index[mask][0]) + table.attrs["first_line"]
