"""Automatic metrics per image, in the tidy metrics.csv format the analysis reads.

metrics.csv has one row per (image, metric) with the columns ``image_id, variant,
prompt_id, metric, value, higher_is_better`` (design.md). Beside it, ``metrics.json``
describes each metric once: its version, its scale and where its values came from, so
that a number in the table can always be traced to what produced it.

:func:`score_stimuli` runs registered scorers (``generation.scorers``) over a rendered
stimulus folder; ``generation.metric_importers`` brings in results computed elsewhere.
This module imports no torch at load time: the analysis reads metrics through it.
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


def score_stimuli(
    stimuli_dir: str | Path,
    scorer_names: Sequence[str],
    *,
    scorer_options: dict[str, dict] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[dict], list[MetricInfo]]:
    """Score every image of a verified stimulus set with each named scorer; tidy rows and infos.

    A scorer that ``needs_reference`` compares each image with the reference variant's image
    of the same prompt and seed (the reference named in variants.yaml, kept in render.json);
    the reference's own images are not scored by it.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from generation.manifest import reference_name, verify_manifest
    from generation.scorers import get_scorer

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    stimuli_dir = Path(stimuli_dir)
    rows = verify_manifest(stimuli_dir)
    if not rows:
        raise UserError(f"{stimuli_dir}/manifest.csv lists no images")
    prompts = stimulus_prompts(stimuli_dir, rows)
    scorer_options = scorer_options or {}
    out_rows: list[dict] = []
    infos: list[MetricInfo] = []
    for name in scorer_names:
        scorer = get_scorer(name, **scorer_options.get(name, {}))
        if scorer.output_type != "pil":
            raise UserError(
                f"{scorer.name} scores final latents, which a stimulus folder does not keep; "
                "use it with 'hprune contrib'"
            )
        targets, references = rows, None
        if scorer.needs_reference:
            targets, references = _reference_pairs(rows, reference_name(stimuli_dir), scorer.name)
        values: list[float] = []
        with tqdm(
            total=len(targets), desc=f"scoring {scorer.name}", unit="img", disable=not progress
        ) as bar:
            for start in range(0, len(targets), batch_size):
                batch = targets[start : start + batch_size]
                images = [_open_rgb(Image, stimuli_dir / row.file) for row in batch]
                refs = None
                if references is not None:
                    refs = [
                        _open_rgb(Image, stimuli_dir / references[row.image_id].file)
                        for row in batch
                    ]
                scores = scorer.score(images, [prompts[row.prompt_id] for row in batch], refs)
                values.extend(float(v) for v in scores)
                bar.update(len(batch))
        info = MetricInfo(
            name=scorer.name,
            higher_is_better=bool(scorer.higher_is_better),
            version=str(getattr(scorer, "version", "") or ""),
            scale=str(getattr(scorer, "scale", "") or ""),
            source=f"hprune score --scorer {name}",
        )
        out_rows += metric_rows(targets, values, info)
        infos.append(info)
    return out_rows, infos


def stimulus_prompts(stimuli_dir: str | Path, rows: Sequence) -> dict:
    """Prompt objects for every prompt id of ``rows``: from prompts.jsonl, else from the manifest."""
    from generation.manifest import read_stimulus_prompts
    from generation.prompts import Prompt

    stored = read_stimulus_prompts(stimuli_dir)
    return {
        row.prompt_id: stored.get(row.prompt_id)
        or Prompt(row.prompt_id, row.prompt, row.category, {})
        for row in rows
    }


def _reference_pairs(rows: Sequence, reference: str | None, metric: str):
    """The rows to score against the reference, and each one's reference row by image id."""
    if reference is None:
        raise UserError(
            f"{metric} needs a reference variant: mark one with 'reference: true' in variants.yaml "
            "and render again (nothing is re-rendered)"
        )
    by_item = {(r.prompt_id, r.seed): r for r in rows if r.variant == reference}
    if not by_item:
        raise UserError(f"the reference variant {reference!r} has no images in this stimulus set")
    targets = [r for r in rows if r.variant != reference]
    missing = [r for r in targets if (r.prompt_id, r.seed) not in by_item]
    if missing:
        raise UserError(
            f"{metric}: the reference {reference!r} has no image for prompt {missing[0].prompt_id!r}, "
            f"seed {missing[0].seed} ({len(missing)} image(s) without a reference)"
        )
    return targets, {r.image_id: by_item[(r.prompt_id, r.seed)] for r in targets}


def _open_rgb(image_module, path: Path):
    with image_module.open(path) as image:
        return image.convert("RGB")


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
