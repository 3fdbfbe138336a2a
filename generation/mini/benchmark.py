"""mini-GenEval of a model (rendered here) or of a rendered stimuli folder, with GenEval's summary.

A model is rendered with ``generation.measurement.rendering.batches.render_batch`` (the same
call ``hprune render`` makes), one image per (prompt, seed); each image is judged by
``generation.shapes_world.geneval`` and the results are summarised by
``generation.measurement.metric_importers.geneval_summary`` (the mean of the task means).
``write_geneval_folder`` stores images and results in GenEval's own layout
(``<prompt index>/samples/<seed>.png``, ``results.jsonl``), which ``hprune import-metrics``
reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generation.shapes_world.geneval import evaluate_image, resolve_metadata
from hprune.contracts.prompts import Prompt


@dataclass
class Evaluation:
    """Per-image GenEval result rows (and the images, when rendered here) with their summary."""

    results: list[dict]
    images: list = field(default_factory=list, repr=False)

    @property
    def summary(self):
        from generation.measurement.metric_importers import geneval_summary

        return geneval_summary(self.results)

    def scores(self) -> dict[str, float]:
        """{"overall": ..., <task>: ...} in the order of ``generation.shapes_world.shapes.CATEGORIES``."""
        from generation.shapes_world.shapes import CATEGORIES

        summary = self.summary
        tasks = {t: summary.tasks[t] for t in CATEGORIES if t in summary.tasks}
        return {"overall": summary.overall, **tasks}


def evaluate_pipeline(
    pipe,
    variant,
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    *,
    batch: int = 16,
    progress: bool = False,
) -> Evaluation:
    """Render every (prompt, seed) with ``variant``'s options and judge each image."""
    from tqdm.auto import tqdm

    from generation.measurement.rendering.batches import render_batch

    items = [(index, prompt, seed) for index, prompt in enumerate(prompts) for seed in seeds]
    results, images = [], []
    chunks = range(0, len(items), batch)
    for start in tqdm(chunks, desc="mini-geneval", unit="batch", disable=not progress):
        chunk = items[start : start + batch]
        rendered = render_batch(pipe, variant, [(p.text, s) for _, p, s in chunk])
        for (index, prompt, seed), image in zip(chunk, rendered, strict=True):
            row = evaluate_image(
                image,
                prompt.text,
                resolve_metadata(prompt.text, prompt.metadata),
                filename=f"{index:05d}/samples/{seed:04d}.png",
            )
            results.append({**row, "prompt_id": prompt.prompt_id, "seed": seed})
            images.append(image)
    return Evaluation(results, images)


def evaluate_stimuli(stimuli_dir: str | Path) -> dict[str, Evaluation]:
    """Judge every image of a stimuli folder (``hprune render`` output), grouped by variant."""
    from PIL import Image

    from hprune.contracts.manifest import read_manifest, read_stimulus_prompts

    stimuli_dir = Path(stimuli_dir)
    rows = read_manifest(stimuli_dir)
    prompts = read_stimulus_prompts(stimuli_dir)
    by_variant: dict[str, Evaluation] = {}
    for row in rows:
        prompt = prompts.get(row.prompt_id) or Prompt(row.prompt_id, row.prompt, row.category)
        with Image.open(stimuli_dir / row.file) as image:
            result = evaluate_image(
                image.convert("RGB"),
                prompt.text,
                resolve_metadata(prompt.text, prompt.metadata),
                filename=row.file,
            )
        result.update(prompt_id=row.prompt_id, seed=row.seed, image_id=row.image_id)
        by_variant.setdefault(row.variant, Evaluation([])).results.append(result)
    return by_variant


def write_geneval_folder(
    out: str | Path, evaluation: Evaluation, prompts: Sequence[Prompt]
) -> None:
    """Images in GenEval's layout with each prompt's metadata.jsonl, and results.jsonl beside them."""
    from hprune.fileio import atomic_output_dir

    with atomic_output_dir(out, overwrite=True) as tmp:
        for index, prompt in enumerate(prompts):
            folder = tmp / f"{index:05d}"
            (folder / "samples").mkdir(parents=True)
            metadata = {**resolve_metadata(prompt.text, prompt.metadata), "prompt": prompt.text}
            metadata.pop("geneval_index", None)
            (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n")
        for row, image in zip(evaluation.results, evaluation.images, strict=True):
            image.save(tmp / row["filename"])
        lines = [json.dumps(row) for row in evaluation.results]
        (tmp / "results.jsonl").write_text("".join(line + "\n" for line in lines))


def format_scores(table: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per name, columns overall and the six tasks."""
    from generation.shapes_world.shapes import CATEGORIES

    columns = ["overall", *CATEGORIES]
    width = max(8, *(len(name) for name in table))
    lines = [f"{'':{width}}  " + "  ".join(f"{c:>13}" for c in columns)]
    for name, scores in table.items():
        cells = [f"{scores[c]:13.3f}" if c in scores else f"{'-':>13}" for c in columns]
        lines.append(f"{name:{width}}  " + "  ".join(cells))
    return "\n".join(lines)
