"""Automatic metrics per image: run scorers over a rendered stimulus folder.

:func:`score_stimuli` runs registered scorers (``generation.measurement.scorers``) over a
verified stimulus folder and returns tidy rows and metric descriptions, which the caller
writes with :func:`hprune.contracts.metrics.write_metrics` (the metrics.csv contract lives
there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from generation.measurement.scorers import get_scorer
from hprune.contracts.manifest import read_stimulus_prompts, reference_name, verify_manifest
from hprune.contracts.metrics import MetricInfo, metric_rows
from hprune.contracts.prompts import Prompt
from hprune.errors import UserError


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
