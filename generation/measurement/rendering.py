"""Render matched stimulus sets: every variant draws every (prompt, seed) from the same noise.

The heart of a fair comparison is that two images of the same prompt and seed differ
only by the model. So the initial latents are made here, on the CPU, from the seed
alone (``torch.Generator("cpu").manual_seed(seed)``, in float32, shaped and packed by the
pipeline's own ``prepare_latents``) and passed to the pipeline as ``latents=``: the
noise is then the same for every variant of a latent shape, on every device and in
every batch composition.

A stimuli folder::

    stimuli/
      manifest.csv     one row per finished image (hprune.contracts.manifest)
      render.json      the variants (definition, hash, model fingerprint), the reference, seeds
      prompts.jsonl    the prompts with their metadata (the scorers read it)
      images/<16 hex>.png   opaque random names, no text or metadata chunks
      .journal/*.jsonl      rows of images rendered since the manifest was last merged

Resuming: a run first merges the manifest and the journals (images whose journal line
was never written are removed), then renders only what is missing. A variant whose
definition or model fingerprint changed, or a prompt id whose text changed, is refused,
or with ``force=True`` its images are deleted and rendered again: never mixed.

Sharding: under ``accelerate launch`` every process takes a contiguous share of the
missing images (``PartialState.split_between_processes``), writes its own journal, and the
main process merges them into the manifest at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gc
import io
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from generation.adapters.encoding import encode_text
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_pipeline
from generation.transforms.quantization import is_quantized, quantize_transformer
from hprune.contracts.manifest import (
    IMAGE_DIR,
    MANIFEST_NAME,
    PROMPTS_NAME,
    RENDER_INFO_NAME,
    ManifestRow,
    check_files,
    check_unique,
    prompts_jsonl,
    read_manifest,
    read_render_info,
    read_stimulus_prompts,
    sha256_file,
    unlisted_images,
    write_manifest,
)
from hprune.contracts.prompts import Prompt
from hprune.contracts.variants import Variant, local_model_dir, reference_variant
from hprune.errors import UserError
from hprune.fileio import atomic_write_bytes, atomic_write_text

JOURNAL_DIR = ".journal"
LOCK_NAME = ".render.lock"
RENDER_FORMAT = 1
_IMAGE_NAME = re.compile(r"^[0-9a-f]{16}\.png$")


@dataclass(frozen=True)
class Job:
    """One image to render."""

    variant: Variant
    prompt: Prompt
    seed: int

    @property
    def item(self) -> tuple[str, str, int]:
        return (self.variant.name, self.prompt.prompt_id, self.seed)


@dataclass(frozen=True)
class RenderSummary:
    """What a run did (counts over all processes; timing of this process)."""

    total: int  # images the request asks for
    already_done: int  # of those, rendered by an earlier run
    rendered: int  # rendered by this process in this run
    seconds: float
    complete: bool

    @property
    def images_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def parse_seeds(spec: str) -> list[int]:
    """``"0-3"`` -> [0, 1, 2, 3]; ``"0,5,7-8"`` -> [0, 5, 7, 8]. Sorted, without repeats."""
    seeds: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise UserError(
                f"bad seed spec {spec!r}: use non-negative integers and ranges like 0-3"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise UserError(f"bad seed range {part!r}: it runs backwards (write {last}-{first})")
        if last >= 2**63:
            raise UserError(f"seed {last} is too large for a torch generator")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def initial_latents(pipe, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """The starting noise for ``seeds``, one seed per row, made on the CPU in float32.

    The pipeline's own ``prepare_latents`` gives the shape (and FLUX's 2x2 packing); each
    row comes from its own generator, so a row does not depend on the rest of the batch.
    """
    channels = pipe.transformer.config.in_channels
    if _is_flux(pipe):
        channels //= 4  # FLUX packs 2x2 latent patches into the transformer's channels
    rows = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        latents = pipe.prepare_latents(1, channels, height, width, torch.float32, "cpu", generator)
        rows.append(latents[0] if isinstance(latents, tuple) else latents)
    return torch.cat(rows)


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG with no text, time or other metadata chunks (only IHDR, IDAT, IEND)."""
    clean = Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return buffer.getvalue()


def render_stimuli(
    variants: Sequence[Variant],
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    out: str | Path,
    *,
    force: bool = False,
    batch_size: int = 1,
    device: str | None = None,
    progress: bool = True,
) -> RenderSummary:
    """Render every (variant, prompt, seed) not yet in ``out``; see the module docstring."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if not variants or not prompts or not seeds:
        raise UserError("nothing to render: no variants, prompts or seeds")
    state = PartialState(cpu=_use_cpu(device))
    out = Path(out)
    start = time.perf_counter()
    with _main_process_lock(out, enabled=state.is_main_process):
        outcome: list = [None]
        if state.is_main_process:
            try:
                outcome[0] = ("ok", _prepare(out, variants, prompts, seeds, force=force))
            except UserError as exc:
                outcome[0] = ("error", exc.message)
        if state.num_processes > 1:
            broadcast_object_list(outcome, from_process=0)
        status, payload = outcome[0]
        if status == "error":
            raise UserError(payload)
        fingerprints: dict[str, str] = payload

        done = {row.item for row in read_manifest(out)}
        wanted = [Job(v, p, s) for v in variants for p in prompts for s in seeds]
        todo = [job for job in wanted if job.item not in done]
        rendered = 0
        try:
            with state.split_between_processes(todo) as mine:
                rendered = _render_share(
                    mine,
                    out,
                    fingerprints,
                    batch_size=batch_size,
                    device=device or str(state.device),
                    progress=progress and state.is_local_main_process,
                    process_index=state.process_index,
                )
        finally:
            # One process merges even after an error or Ctrl-C, so the manifest shows what is
            # done. Several merge only after all finished; a failed launch is merged next run.
            if state.num_processes == 1:
                complete = _finish(out, variants, fingerprints, seeds, wanted)
        if state.num_processes > 1:
            state.wait_for_everyone()
            complete = (
                _finish(out, variants, fingerprints, seeds, wanted)
                if state.is_main_process
                else False
            )
    return RenderSummary(
        total=len(wanted),
        already_done=len(wanted) - len(todo),
        rendered=rendered,
        seconds=time.perf_counter() - start,
        complete=complete,
    )


def _use_cpu(device: str | None) -> bool:
    """Run the processes on the CPU (gloo) when asked, or when there is no accelerator."""
    if device is not None:
        return torch.device(device).type == "cpu"
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not (
        torch.accelerator.is_available()
    )


def _finish(out, variants, fingerprints, seeds, wanted: Sequence[Job]) -> bool:
    """Merge the journals into the manifest and record whether every wanted image is there."""
    rows = _consolidate(out)
    complete = {job.item for job in wanted} <= {row.item for row in rows}
    _write_render_info(out, variants, fingerprints, seeds, complete=complete)
    return complete


# --- the main process's bookkeeping ------------------------------------------------------


@contextlib.contextmanager
def _main_process_lock(out: Path, *, enabled: bool) -> Iterator[None]:
    """Refuse a second render writing into the same folder at the same time.

    A folder this call creates is removed again if the run fails before recording anything.
    """
    if not enabled:
        yield
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and not (out / RENDER_INFO_NAME).is_file() and not _is_empty_stimuli(out):
        raise UserError(
            f"{out} is not empty and is not a stimuli folder written by 'hprune render'"
        )
    created = not out.exists()
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    try:
        with open(out / LOCK_NAME, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another 'hprune render' is writing to {out}") from None
            yield
    except BaseException:
        if created and not (out / RENDER_INFO_NAME).is_file():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _is_empty_stimuli(out: Path) -> bool:
    """Nothing in ``out`` but what a failed first start leaves: the lock and empty folders."""
    for entry in out.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.name in (IMAGE_DIR, JOURNAL_DIR) and entry.is_dir() and not any(entry.iterdir()):
            continue
        return False
    return True


def _prepare(
    out: Path,
    variants: Sequence[Variant],
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    *,
    force: bool,
) -> dict[str, str]:
    """Check the request against what ``out`` holds, clean up, record the request; the fingerprints."""
    _check_schedulers(variants)
    fingerprints = {v.name: model_fingerprint(local_model_dir(v.model)) for v in variants}
    rows = _consolidate(out)
    stored = {entry["name"]: entry for entry in read_render_info(out).get("variants", [])}
    current = {v.name: v for v in variants}
    stale: set[str] = set()
    for name in {row.variant for row in rows}:
        reason = _why_stale(stored.get(name), current.get(name), fingerprints.get(name))
        if reason and not force:
            raise UserError(
                f"{out}: variant {name!r} {reason} since its images were rendered; "
                "pass --force to delete and re-render them, or render into a new folder"
            )
        if reason:
            stale.add(name)
    texts = {p.prompt_id: p.text for p in prompts}
    changed = [r for r in rows if r.prompt_id in texts and texts[r.prompt_id] != r.prompt]
    if changed and not force:
        raise UserError(
            f"{out}: prompt {changed[0].prompt_id!r} has a different text than its rendered images; "
            "pass --force to re-render them, or render into a new folder"
        )
    changed_ids = {r.image_id for r in changed}
    drop = [r for r in rows if r.variant in stale or r.image_id in changed_ids]
    if drop:
        dropped = {r.image_id for r in drop}
        write_manifest(out, [r for r in rows if r.image_id not in dropped])
        for row in drop:
            (out / row.file).unlink(missing_ok=True)
    stored_prompts = read_stimulus_prompts(out)
    merged = {**stored_prompts, **{p.prompt_id: p for p in prompts}}
    atomic_write_text(out / PROMPTS_NAME, prompts_jsonl(merged.values()))
    _write_render_info(out, variants, fingerprints, seeds, complete=False)
    return fingerprints


def _why_stale(stored: dict | None, variant: Variant | None, fingerprint: str | None) -> str | None:
    if variant is None:
        return "is no longer in variants.yaml"
    if stored is None:
        return "has no recorded definition"
    if stored.get("definition_hash") != variant.definition_hash():
        return "changed in variants.yaml"
    if stored.get("model_fingerprint") != fingerprint:
        return "has different model weights"
    return None


def _check_schedulers(variants: Sequence[Variant]) -> None:
    import diffusers

    for variant in variants:
        name = variant.pipeline.scheduler
        if name is None:
            continue
        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            raise UserError(
                f"variant {variant.name!r}: {name!r} is not a diffusers scheduler class"
            )


def _consolidate(out: Path) -> list[ManifestRow]:
    """Merge the journals into manifest.csv and delete images no row lists; the merged rows.

    The manifest must agree with its files (else UserError, nothing touched). A journal
    line is written after its image, so a journal row whose image is missing or different
    was never finished and is dropped; an image without a row (a crash between the two
    writes) is deleted, as are temporary files of interrupted writes.
    """
    rows = read_manifest(out) if (out / MANIFEST_NAME).is_file() else []
    check_files(out, rows)
    check_unique(rows, where=str(out / MANIFEST_NAME))
    items = {row.item for row in rows}
    journals = sorted((out / JOURNAL_DIR).glob("*.jsonl"))
    for journal in journals:
        for row in _read_journal(journal):
            path = out / row.file
            if row.item in items or not path.is_file() or sha256_file(path) != row.sha256:
                continue
            rows.append(row)
            items.add(row.item)
    for path in unlisted_images(out, rows):
        if _IMAGE_NAME.match(path.name):
            path.unlink()
    for path in (out / IMAGE_DIR).glob(".*.tmp-*"):
        path.unlink()
    rows = _sorted_rows(out, rows)
    write_manifest(out, rows)
    for journal in journals:
        journal.unlink()
    with contextlib.suppress(OSError):  # another process's journal may still be open there
        (out / JOURNAL_DIR).rmdir()
    return rows


def _read_journal(path: Path) -> Iterator[ManifestRow]:
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield ManifestRow.from_dict(json.loads(line), where=str(path))
        except (json.JSONDecodeError, UserError):
            continue  # a line cut short by a crash: its image is treated as unfinished


def _sorted_rows(out: Path, rows: list[ManifestRow]) -> list[ManifestRow]:
    variant_order = {e["name"]: i for i, e in enumerate(read_render_info(out).get("variants", []))}
    prompt_order = {pid: i for i, pid in enumerate(read_stimulus_prompts(out))}
    return sorted(
        rows,
        key=lambda r: (
            variant_order.get(r.variant, len(variant_order)),
            r.variant,
            prompt_order.get(r.prompt_id, len(prompt_order)),
            r.prompt_id,
            r.seed,
        ),
    )


def _write_render_info(
    out: Path,
    variants: Sequence[Variant],
    fingerprints: dict[str, str],
    seeds: Sequence[int],
    *,
    complete: bool,
) -> None:
    reference = reference_variant(list(variants))
    info = {
        "format": RENDER_FORMAT,
        "reference": reference.name if reference else None,
        "variants": [
            {
                "name": v.name,
                "definition": v.definition(),
                "definition_hash": v.definition_hash(),
                "model_fingerprint": fingerprints[v.name],
            }
            for v in variants
        ],
        "seeds": sorted(set(seeds) | set(read_render_info(out).get("seeds", []))),
        "complete": complete,
        "updated_at": _now(),
    }
    atomic_write_text(out / RENDER_INFO_NAME, json.dumps(info, indent=2) + "\n")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- every process: render its share -----------------------------------------------------


def _render_share(
    jobs: Sequence[Job],
    out: Path,
    fingerprints: dict[str, str],
    *,
    batch_size: int,
    device: str,
    progress: bool,
    process_index: int,
) -> int:
    """Render ``jobs`` (grouped by variant, in batches), journalling each finished image."""
    (out / JOURNAL_DIR).mkdir(exist_ok=True)
    journal_path = out / JOURNAL_DIR / f"{socket.gethostname()}-{os.getpid()}-{process_index}.jsonl"
    rendered = 0
    with (
        open(journal_path, "a", encoding="utf-8") as journal,
        tqdm(total=len(jobs), unit="img", desc="rendering", disable=not progress) as bar,
    ):
        for variant, group in _by_variant(jobs):
            bar.set_postfix_str(variant.name)
            pipe = load_variant_pipeline(variant, device=device)
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                images = render_batch(pipe, variant, [(job.prompt.text, job.seed) for job in batch])
                for job, image in zip(batch, images, strict=True):
                    row = _save_image(out, job, image, fingerprints[variant.name])
                    _append_journal(journal, row)
                    rendered += 1
                    bar.update(1)
            del pipe
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rendered


def _by_variant(jobs: Sequence[Job]) -> Iterator[tuple[Variant, list[Job]]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.variant.name, []).append(job)
    for group in groups.values():
        yield group[0].variant, group


def load_variant_pipeline(variant: Variant, *, device: str = "cpu"):
    """The variant's pipeline on ``device``: its dtype, scheduler and quantisation applied."""
    dtype = getattr(torch, variant.dtype)
    pipe = load_pipeline(local_model_dir(variant.model), dtype=dtype, device=device)
    options = variant.pipeline
    if options.scheduler is not None:
        import diffusers

        cls = getattr(diffusers, options.scheduler)
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **options.scheduler_options)
    if variant.quantization is not None:
        _quantize(pipe, variant, dtype=dtype, device=device)
    multiple = pipe.vae_scale_factor * (2 if _is_flux(pipe) else getattr(pipe, "patch_size", 1))
    if options.height % multiple or options.width % multiple:
        raise UserError(
            f"variant {variant.name!r}: resolution {options.height}x{options.width} must be a "
            f"multiple of {multiple} for this model"
        )
    return pipe


def _quantize(pipe, variant: Variant, *, dtype: torch.dtype, device: str) -> None:
    transformer = pipe.transformer
    if is_quantized(transformer):
        spec = getattr(transformer, "hprune_quantization", None)
        if spec is not None and spec.scheme != variant.quantization:
            raise UserError(
                f"variant {variant.name!r}: the model is already quantised to {spec.scheme}, "
                f"not {variant.quantization}"
            )
        return
    quantize_transformer(
        transformer, variant.quantization, dtype=dtype, device=device, progress=False
    )


def render_batch(
    pipe,
    variant: Variant,
    items: Sequence[tuple[str, int]],
    *,
    inputs: BatchInputs | None = None,
    output_type: str = "pil",
) -> list:
    """Images for ``items`` = [(prompt text, seed), ...] with the variant's options.

    ``inputs`` (from :func:`prepare_batch` for the same items) gives the text conditioning
    and the starting noise ready-made, so the text encoders do not run again; the images are
    those of the plain call. ``output_type="latent"`` returns the final latents (one float32
    CPU tensor per item, before the VAE; FLUX's packed) instead of PIL images.
    """
    options = variant.pipeline
    seeds = [seed for _, seed in items]
    kwargs = {}
    if inputs is None:
        kwargs["prompt"] = [text for text, _ in items]
        latents = initial_latents(pipe, seeds, options.height, options.width)
    else:
        if list(inputs.seeds) != seeds:
            raise ValueError("the prepared inputs belong to other items")
        device = pipe._execution_device
        kwargs.update({name: t.to(device) for name, t in inputs.conditioning.items()})
        latents = inputs.latents.clone()  # a scheduler may update its sample in place
    if options.max_sequence_length is not None:
        kwargs["max_sequence_length"] = options.max_sequence_length
    with torch.inference_mode():
        result = pipe(
            num_inference_steps=options.steps,
            guidance_scale=options.guidance,
            height=options.height,
            width=options.width,
            latents=latents,
            # for schedulers that draw noise during sampling: also from the seed, on the CPU
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            output_type=output_type,
            **kwargs,
        )
    if output_type == "latent":
        return [latent.float().cpu() for latent in result.images]
    return list(result.images)


@dataclass(frozen=True)
class BatchInputs:
    """What one pipeline call takes besides the transformer's work, computed once, on the CPU.

    ``conditioning`` is what the text encoders make of the prompts, as the keyword
    arguments the pipeline accepts instead of ``prompt`` (``prompt_embeds``,
    ``pooled_prompt_embeds``, and under classifier-free guidance the ``negative_*`` pair);
    ``latents`` the starting noise of the seeds. Analyses that render the same items many
    times with the transformer changed (``hprune contrib``) reuse them.
    """

    seeds: tuple[int, ...]
    conditioning: dict[str, torch.Tensor]
    latents: torch.Tensor


def prepare_batch(pipe, variant: Variant, items: Sequence[tuple[str, int]]) -> BatchInputs:
    """The conditioning and starting noise of ``render_batch(pipe, variant, items)``.

    The prompts are encoded by the pipeline's own ``encode_prompt``, with the arguments and
    the batch its ``__call__`` would use, so the embeddings are exactly the plain call's.
    """
    options = variant.pipeline
    seeds = [seed for _, seed in items]
    length = options.max_sequence_length or _call_default(pipe, "max_sequence_length")
    conditioning = encode_text(
        pipe,
        [text for text, _ in items],
        max_sequence_length=length,
        negatives=options.guidance > 1,  # classifier-free guidance, as the pipeline decides
    )
    return BatchInputs(
        seeds=tuple(seeds),
        conditioning={name: t.to("cpu") for name, t in conditioning.items()},
        latents=initial_latents(pipe, seeds, options.height, options.width),
    )


def prepare_batches(
    pipe, variant: Variant, batches: Sequence[Sequence[tuple[str, int]]]
) -> list[BatchInputs]:
    """:func:`prepare_batch` for each batch; equal tensors (the empty negative prompt's rows,
    the same in every batch of a size) are kept once."""
    kept: list[torch.Tensor] = []

    def once(tensor: torch.Tensor) -> torch.Tensor:
        for other in kept:
            if other.shape == tensor.shape and torch.equal(other, tensor):
                return other
        kept.append(tensor)
        return tensor

    prepared = []
    for batch in batches:
        inputs = prepare_batch(pipe, variant, batch)
        conditioning = {
            name: once(t) if name.startswith("negative_") else t
            for name, t in inputs.conditioning.items()
        }
        prepared.append(replace(inputs, conditioning=conditioning))
    return prepared


def _call_default(pipe, name: str):
    """The default of one of the pipeline's ``__call__`` arguments."""
    import inspect

    return inspect.signature(type(pipe).__call__).parameters[name].default


def _save_image(out: Path, job: Job, image: Image.Image, fingerprint: str) -> ManifestRow:
    data = png_bytes(image)
    image_id = secrets.token_hex(8)
    file = f"{IMAGE_DIR}/{image_id}.png"
    atomic_write_bytes(out / file, data)
    options = job.variant.pipeline
    return ManifestRow(
        image_id=image_id,
        file=file,
        sha256=_sha256(data),
        variant=job.variant.name,
        prompt_id=job.prompt.prompt_id,
        prompt=job.prompt.text,
        category=job.prompt.category,
        seed=job.seed,
        width=image.width,
        height=image.height,
        steps=options.steps,
        guidance=options.guidance,
        model_fingerprint=fingerprint,
        created_at=_now(),
    )


def _append_journal(journal, row: ManifestRow) -> None:
    journal.write(json.dumps(row.to_dict()) + "\n")
    journal.flush()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _is_flux(pipe) -> bool:
    return hasattr(pipe, "_pack_latents")
