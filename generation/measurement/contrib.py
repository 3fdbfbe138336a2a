"""Contribution analysis: how much the output changes when one block or subcomponent is removed.

For every whole block and every subcomponent of every block, the part is
replaced by an identity (``ModelAdapter.ablate``, with the chosen ablation semantics:
``identity`` as the reference, or ``zero``; SD3 whole blocks through
diffusers' ``skip_layers``), a fixed prompt set is rendered at fixed seeds,
and the images (or, for a latent scorer such as ``fidelity`` with
``metric=latent-mse``, the final latents) are scored against those of the
unablated model. The prompts are encoded and the noise drawn once for all
parts: removing a part of the transformer changes neither. The *drop*
of a part is how much worse its score is than the baseline (positive =
worse, whatever the metric's direction); HPP pruning ranks parts by it.

While the baseline renders, the cosine similarity of each block's input and
output image tokens is recorded too (the KOALA baseline ranks blocks by it).

The run is resumable: each finished part is appended to a journal beside
the output (``.<out>.journal.jsonl``, one JSON line per part, flushed and
fsynced). A rerun with the same settings skips what the journal holds; the
journal is removed once ``contrib.json`` is written.

``contrib.json`` can also be imported from published scores
(``generation.measurement.contrib_import``); such a file has no model fingerprint but the
architecture it describes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from generation.adapters import BLOCK, DEFAULT_ABLATION, ModelAdapter, Part, get_adapter
from generation.measurement.rendering.batches import prepare_batches, render_batch
from generation.measurement.scorers import get_scorer
from generation.model_record import read_record
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_pipeline
from hprune.contracts.variants import PipelineOptions, Variant
from hprune.errors import UserError
from hprune.fileio import atomic_write_text

CONTRIB_FORMAT = "hprune-contrib"
CONTRIB_VERSION = 1
PART_SETS = ("all", "blocks", "subcomponents")


def render(
    pipe,
    items: Sequence[tuple[str, int]],
    options,
    *,
    batch_size: int,
    inputs: Sequence | None = None,
    output_type: str = "pil",
) -> list:
    """PIL images (or final latents) for ``items`` = [(prompt text, seed), ...], ``batch_size`` at a time.

    Rendering is ``hprune render``'s own (CPU-seeded initial latents per seed), so the
    images of an analysis match the stimuli rendered from the same model and options.
    ``inputs``, from :func:`prepare`, holds each batch's text conditioning and noise ready-made.
    """
    variant = _variant(options)
    images: list = []
    for number, start in enumerate(range(0, len(items), batch_size)):
        images += render_batch(
            pipe,
            variant,
            items[start : start + batch_size],
            inputs=inputs[number] if inputs is not None else None,
            output_type=output_type,
        )
    return images


def prepare(pipe, items: Sequence[tuple[str, int]], options, *, batch_size: int) -> list:
    """The text conditioning and starting noise of every batch :func:`render` makes of ``items``.

    Removing a part of the transformer changes neither, so an analysis encodes its prompts
    once instead of once per part (T5-XXL alone is 4.7B parameters on SD3.5).
    """
    batches = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    return prepare_batches(pipe, _variant(options), batches)


def text_encoders_off_device(pipe) -> None:
    """Move the text encoders to the CPU once the prompts are encoded (T5-XXL alone is 9.5 GB in
    bf16); diffusers keeps computing on the accelerator the other components are on."""
    for name, component in pipe.components.items():
        if name.startswith("text_encoder") and component is not None:
            component.to("cpu")


def _variant(options):
    return Variant(name="contrib", model="", pipeline=options)


def score_drop(score: float, baseline: float, *, higher_is_better: bool) -> float:
    """How much worse ``score`` is than ``baseline``: positive = worse, in the metric's units."""
    return baseline - score if higher_is_better else score - baseline


def select_parts(adapter: ModelAdapter, which: str) -> list[Part]:
    if which not in PART_SETS:
        raise UserError(f"unknown part set {which!r} (choose {', '.join(PART_SETS)})")
    return adapter.parts(blocks=which != "subcomponents", subcomponents=which != "blocks")


# ----- the journal ----------------------------------------------------------------------


def journal_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.journal.jsonl")


def read_journal(path: Path, header: dict) -> dict[Part, list[float]]:
    """Finished parts of an earlier run with the same ``header``; an incomplete last line is ignored."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    done: dict[Part, list[float]] = {}
    for number, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # the interrupted write of the last line
            raise UserError(
                f"{path} is corrupt at line {number + 1}; delete it or pass --restart"
            ) from None
        if number == 0:
            if entry.get("header") != header:
                raise UserError(
                    f"{path} belongs to a contribution run with other settings (model, prompts, "
                    "seeds, scorer or rendering); delete it or pass --restart"
                )
            continue
        done[(int(entry["block"]), str(entry["component"]))] = [float(s) for s in entry["scores"]]
    return done


class Journal:
    """Append-only record of finished parts; each line is on disk before the next part starts."""

    def __init__(self, path: Path, header: dict, *, fresh: bool) -> None:
        self.path = path
        if fresh or not path.is_file():
            atomic_write_text(path, json.dumps({"header": header}) + "\n")
        self.file = path.open("a", encoding="utf-8")

    def append(self, part: Part, scores: Sequence[float]) -> None:
        line = {"block": part[0], "component": part[1], "scores": [float(s) for s in scores]}
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ----- the analysis ---------------------------------------------------------------------


def run_contrib(
    model: str | Path,
    prompts: Sequence,
    seeds: Sequence[int],
    out: str | Path,
    *,
    scorer: str = "fidelity",
    scorer_options: dict | None = None,
    steps: int = 4,
    guidance: float = 0.0,
    height: int | None = None,
    width: int | None = None,
    max_sequence_length: int | None = None,
    batch_size: int = 4,
    parts: str = "all",
    dtype=None,
    device: str = "cpu",
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
    reuse_inputs: bool = True,
    ablation: str = DEFAULT_ABLATION,
) -> dict:
    """Run the analysis for ``model`` and write ``out`` (contrib.json); return its content.

    ``height`` and ``width`` default to the pipeline's own default resolution.
    ``reuse_inputs``: encode the prompts and make the starting noise once for every part
    (the default; the images are the same); False runs the text encoders on every render,
    as separate pipeline calls would (for comparison). ``ablation``: what a removed
    subcomponent computes (``identity``, the reference's, or ``zero``).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    if not prompts:
        raise UserError("no prompts to render")
    if not seeds:
        raise UserError("no seeds to render")
    if steps < 1 or batch_size < 1:
        raise UserError("steps and batch size must be at least 1")
    scorer_options = dict(scorer_options or {})
    metric = get_scorer(scorer, **scorer_options)

    pipe = load_pipeline(model, dtype=dtype, device=device)
    adapter = get_adapter(pipe.transformer, ablation)
    record = read_record(Path(model)) if Path(model).is_dir() else None
    chosen = select_parts(adapter, parts)
    default_side = pipe.default_sample_size * pipe.vae_scale_factor
    options = PipelineOptions(
        steps=steps,
        guidance=float(guidance),
        height=height or default_side,
        width=width or default_side,
        max_sequence_length=max_sequence_length,
    )
    multiple = 2 * pipe.vae_scale_factor  # 2x2 patches (SD3) or packed 2x2 latents (FLUX)
    if options.height % multiple or options.width % multiple:
        raise UserError(f"height and width must be multiples of {multiple} for this model")
    items = [(p.text, int(seed)) for p in prompts for seed in seeds]
    item_prompts = [p for p in prompts for _ in seeds]

    header = {
        "model_fingerprint": model_fingerprint(model),
        "scorer": scorer,
        "scorer_options": scorer_options,
        "prompts": [[p.prompt_id, p.text] for p in prompts],
        "seeds": [int(s) for s in seeds],
        "render": dataclasses.asdict(options),
        "dtype": str(dtype),
        "parts": [list(p) for p in chosen],
        "ablation": adapter.ablation,
    }

    path = journal_path(out)
    done = {} if restart else read_journal(path, header)

    inputs = None
    if reuse_inputs:
        inputs = prepare(pipe, items, options, batch_size=batch_size)
        text_encoders_off_device(pipe)

    def render_all() -> list:
        return render(
            pipe,
            items,
            options,
            batch_size=batch_size,
            inputs=inputs,
            output_type=metric.output_type,  # "latent" for latent-space scorers: no VAE decode
        )

    with adapter.capture_block_similarity() as similarity:
        baseline_images = render_all()

    def score(images) -> np.ndarray:
        references = baseline_images if metric.needs_reference else None
        return metric.score(images, item_prompts, references)

    baseline_scores = score(baseline_images)
    baseline = float(np.mean(baseline_scores))

    journal = Journal(path, header, fresh=restart or not done)
    try:
        with tqdm(
            total=len(chosen),
            initial=len(done),
            desc="contribution",
            unit="part",
            disable=not progress,
        ) as bar:
            for part in chosen:
                if part in done:
                    continue
                with adapter.ablate([part]):
                    scores = score(render_all())
                journal.append(part, scores)
                done[part] = list(scores)
                bar.set_postfix_str(f"block {part[0]} {part[1]}")
                bar.update(1)
    finally:
        journal.close()

    entries = []
    for part in chosen:
        scores = done[part]
        mean = float(np.mean(scores))
        index, component = part
        entries.append(
            {
                "block": index,
                "component": component,
                "kind": adapter.block_kind(index),
                "parameters": adapter.part_params(part),
                "score": mean,
                "drop": score_drop(mean, baseline, higher_is_better=metric.higher_is_better),
                "scores": [float(s) for s in scores],
            }
        )
    result = {
        "format": CONTRIB_FORMAT,
        "version": CONTRIB_VERSION,
        "model": str(model),
        "model_fingerprint": header["model_fingerprint"],
        "family": adapter.family,
        "num_blocks": adapter.num_blocks,
        "ablation": adapter.ablation,
        "original_indices": record.kept_blocks if record else list(range(adapter.num_blocks)),
        "total_parameters": adapter.total_params(),
        "scorer": {
            "name": scorer,
            "metric": metric.name,
            "options": scorer_options,
            "higher_is_better": bool(metric.higher_is_better),
            "needs_reference": bool(metric.needs_reference),
        },
        "prompts": [
            {"prompt_id": p.prompt_id, "text": p.text, "category": p.category} for p in prompts
        ],
        "seeds": [int(s) for s in seeds],
        "render": dataclasses.asdict(options) | {"dtype": str(dtype), "device": str(device)},
        "baseline": {"score": baseline, "scores": [float(s) for s in baseline_scores]},
        "block_similarity": similarity.means(),
        "entries": entries,
    }
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    path.unlink(missing_ok=True)
    return result


# ----- reading contrib.json -------------------------------------------------------------


#: The ablation semantics of a contrib.json that does not name one: hprune measured with
#: zero-branch ablation before it adopted the reference's pass-through.
UNRECORDED_ABLATION = "zero"


@dataclasses.dataclass(frozen=True)
class Contribution:
    """A contrib.json, checked: per part drop, block similarities, and what it was measured on.

    ``model_fingerprint`` is None for scores imported from elsewhere; ``architecture`` is then
    the transformer config they describe.
    """

    model_fingerprint: str | None
    family: str
    num_blocks: int
    original_indices: list[int]
    higher_is_better: bool
    drops: dict[Part, float]
    block_similarity: list[float | None]
    raw: dict
    ablation: str = DEFAULT_ABLATION
    architecture: dict | None = None

    def block_drops(self) -> dict[int, float]:
        return {i: d for (i, c), d in self.drops.items() if c == BLOCK}

    def component_drops(self) -> dict[Part, float]:
        return {p: d for p, d in self.drops.items() if p[1] != BLOCK}

    def check_fits(self, adapter: ModelAdapter) -> None:
        """UserError unless this was measured on a model of ``adapter``'s family and block count."""
        if self.family != adapter.family or self.num_blocks != adapter.num_blocks:
            raise UserError(
                f"the contribution file describes a {self.family} model with {self.num_blocks} "
                f"blocks, but this is a {adapter.family} model with {adapter.num_blocks}"
            )

    def check_ablation(self, adapter: ModelAdapter) -> None:
        """UserError unless subcomponents would be removed as they were when measured."""
        if self.ablation != adapter.ablation:
            raise UserError(
                f"the contributions were measured with {self.ablation!r} ablation but the parts "
                f"would be removed with {adapter.ablation!r}; pass --ablation {self.ablation}"
            )

    def architecture_mismatch(self, config: dict) -> list[str]:
        """The config keys on which an imported file's architecture differs from ``config``."""
        if self.architecture is None:
            return []
        return sorted(
            key
            for key, value in self.architecture.items()
            if not key.startswith("_") and key in config and _plain(config[key]) != _plain(value)
        )


def _plain(value):
    """JSON-comparable form of a config value (tuples from diffusers configs become lists)."""
    return json.loads(json.dumps(value))


def read_json_file(path: Path, what: str):
    """The JSON content of ``path``; a one-line UserError naming ``what`` if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None


def read_contrib(path: str | Path) -> Contribution:
    """Read and check a contrib.json; a one-line UserError if it is missing or malformed."""
    path = Path(path)
    data = read_json_file(path, "contribution file")
    if not isinstance(data, dict) or data.get("format") != CONTRIB_FORMAT:
        raise UserError(f"{path} is not an hprune contrib.json")
    if data.get("version") != CONTRIB_VERSION:
        raise UserError(
            f"{path} has contrib version {data.get('version')}, expected {CONTRIB_VERSION}"
        )
    try:
        num_blocks = int(data["num_blocks"])
        drops: dict[Part, float] = {}
        for entry in data["entries"]:
            part = (int(entry["block"]), str(entry["component"]))
            drop = float(entry["drop"])
            if not 0 <= part[0] < num_blocks or not np.isfinite(drop):
                raise ValueError(f"bad entry {entry!r}")
            drops[part] = drop
        similarity = [None if s is None else float(s) for s in data.get("block_similarity") or []]
        if similarity and len(similarity) != num_blocks:
            raise ValueError("block_similarity must have one value per block")
        fingerprint = data["model_fingerprint"]
        contribution = Contribution(
            model_fingerprint=None if fingerprint is None else str(fingerprint),
            family=str(data["family"]),
            num_blocks=num_blocks,
            original_indices=[int(i) for i in data.get("original_indices") or range(num_blocks)],
            higher_is_better=bool(data["scorer"]["higher_is_better"]),
            drops=drops,
            block_similarity=similarity,
            raw=data,
            ablation=str(data.get("ablation", UNRECORDED_ABLATION)),
            architecture=data.get("architecture"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is malformed: {exc}") from None
    if not drops:
        raise UserError(f"{path} has no entries")
    return contribution
