"""The stimuli folder: what it holds, how a run resumes, and how finished images are recorded.

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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from generation.store.fingerprints import model_fingerprint
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


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG with no text, time or other metadata chunks (only IHDR, IDAT, IEND)."""
    clean = Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def main_process_lock(out: Path, *, enabled: bool) -> Iterator[None]:
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


def prepare_folder(
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
    rows = consolidate(out)
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
    write_render_info(out, variants, fingerprints, seeds, complete=False)
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


def consolidate(out: Path) -> list[ManifestRow]:
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


def write_render_info(
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
        "updated_at": now(),
    }
    atomic_write_text(out / RENDER_INFO_NAME, json.dumps(info, indent=2) + "\n")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def save_image(out: Path, job: Job, image: Image.Image, fingerprint: str) -> ManifestRow:
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
        created_at=now(),
    )


def append_journal(journal, row: ManifestRow) -> None:
    journal.write(json.dumps(row.to_dict()) + "\n")
    journal.flush()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
