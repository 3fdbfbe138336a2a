"""``hprune study import``: a study version from a stimuli manifest and a spec.

Each image is checked (sha256, no metadata chunks) and copied byte for byte into the media
folder under a random token, which is its only public name; the copy's modification time
is fixed, so not even a proxy's ``Last-Modified`` tells when a variant was rendered.
Re-importing a changed spec or manifest adds a new version; participants keep the version
they started with, and answered trials are never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from hprune.contracts.manifest import ManifestRow, check_image, read_stimuli
from hprune.errors import UserError
from hprune.fileio import atomic_write_bytes
from study.db import Database
from study.models import Stimulus, Study, StudyVersion, VersionStimulus
from study.spec import StudySpec

FIXED_MTIME = 946684800  # 2000-01-01: served copies carry no render time
BROKEN_VARIANT = "attention-broken"


def item(row: ManifestRow) -> tuple[str, int]:
    """What an image shows, whichever variant rendered it: (prompt_id, seed)."""
    return (row.prompt_id, row.seed)


@dataclass(frozen=True)
class ImportResult:
    study_name: str
    public_key: str
    version: int
    changed: bool  # False: the spec and manifest equal the newest version's
    n_stimuli: int
    n_items: int
    variants: tuple[str, ...]


def select_rows(rows: list[ManifestRow], spec: StudySpec) -> tuple[list[ManifestRow], list[str]]:
    """The manifest rows the study uses: the spec's variants, on items every variant has."""
    present = sorted({r.variant for r in rows})
    variants = list(spec.variants) if spec.variants else present
    unknown = [v for v in variants if v not in present]
    if unknown:
        raise UserError(
            f"spec names variant(s) {', '.join(unknown)} that the manifest lacks "
            f"(it has {', '.join(present)})"
        )
    if spec.compare == "reference" and spec.reference not in variants:
        raise UserError(f"reference variant {spec.reference!r} is not among the study's variants")
    if spec.kind == "pair" and len(variants) < 2:
        raise UserError("a pairwise study needs at least two variants")
    by_variant: dict[str, set] = {v: set() for v in variants}
    for r in rows:
        if r.variant in by_variant:
            by_variant[r.variant].add(item(r))
    common = set.intersection(*by_variant.values())
    if not common:
        raise UserError("no (prompt_id, seed) has an image for every variant of the study")
    kept = [r for r in rows if r.variant in by_variant and item(r) in common]
    return kept, variants


def fingerprint(spec: StudySpec, rows: list[ManifestRow]) -> str:
    h = hashlib.sha256(spec.to_json().encode())
    for r in sorted(rows, key=lambda r: r.image_id):
        h.update(f"\n{r.image_id}\t{r.sha256}\t{r.variant}\t{r.prompt_id}\t{r.seed}".encode())
    return h.hexdigest()


def broken_png(data: bytes, seed: int) -> bytes:
    """An obviously broken version of an image: coarse blocks, strong noise, colours inverted."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    small = image.resize((max(2, w // 12), max(2, h // 12)), Image.Resampling.NEAREST)
    pixels = np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-90, 90, size=pixels.shape)
    broken = np.clip(255 - pixels + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(broken).save(out, format="PNG")  # no text chunks are written
    return out.getvalue()


def _store(media_dir: Path, study_key: str, token: str, data: bytes) -> str:
    relative = f"{study_key}/{token}.png"
    target = media_dir / relative
    atomic_write_bytes(target, data)
    os.utime(target, (FIXED_MTIME, FIXED_MTIME))
    return relative


def import_study(
    db: Database,
    manifest: str | Path,
    spec: StudySpec,
    media_dir: str | Path,
    *,
    progress: bool = True,
) -> ImportResult:
    """Create the study (or a new version of it) from ``manifest`` and ``spec``."""
    media_dir = Path(media_dir)
    root, all_rows = read_stimuli(manifest)
    rows, variants = select_rows(all_rows, spec)
    payloads = {
        r.image_id: check_image(root, r)
        for r in tqdm(rows, desc="checking images", unit="img", disable=not progress)
    }
    print_ = fingerprint(spec, rows)
    items = sorted({item(r) for r in rows})

    with db.write() as session:
        study = session.scalar(
            select(Study).where(Study.name == spec.name).with_for_update(key_share=True)
        )
        if study is None:
            study = Study(name=spec.name, public_key=secrets.token_urlsafe(8), status="open")
            session.add(study)
            session.flush()
        latest = session.scalar(
            select(StudyVersion)
            .where(StudyVersion.study_id == study.id)
            .order_by(StudyVersion.number.desc())
            .limit(1)
        )
        if latest is not None and latest.fingerprint == print_:
            return ImportResult(
                spec.name, study.public_key, latest.number, False, len(rows), len(items),
                tuple(variants),
            )  # fmt: skip
        stimuli = [
            _stimulus(session, study, r, payloads[r.image_id], media_dir)
            for r in tqdm(rows, desc="storing images", unit="img", disable=not progress)
        ]
        stimuli += _broken_stimuli(session, study, spec, rows, payloads, media_dir)
        version = StudyVersion(
            study_id=study.id,
            number=(latest.number + 1) if latest else 1,
            fingerprint=print_,
            spec_json=spec.to_json(),
        )
        session.add(version)
        session.flush()
        session.add_all(VersionStimulus(version_id=version.id, stimulus_id=s.id) for s in stimuli)
        return ImportResult(
            spec.name, study.public_key, version.number, True, len(rows), len(items),
            tuple(variants),
        )  # fmt: skip


def _stimulus(
    session: Session, study: Study, row: ManifestRow, data: bytes, media_dir: Path, **extra
) -> Stimulus:
    existing = session.scalar(
        select(Stimulus).where(
            Stimulus.study_id == study.id,
            Stimulus.image_id == row.image_id,
            Stimulus.sha256 == row.sha256,
        )
    )
    if existing is not None and (media_dir / existing.media_path).is_file():
        return existing
    token = secrets.token_urlsafe(16)
    media_path = _store(media_dir, study.public_key, token, data)
    if existing is not None:  # the media folder lost its copy: store it again
        existing.media_path = media_path
        return existing
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    stimulus = Stimulus(
        study_id=study.id,
        token=token,
        image_id=row.image_id,
        sha256=row.sha256,
        media_path=media_path,
        variant=row.variant,
        prompt_id=row.prompt_id,
        prompt=row.prompt,
        category=row.category,
        seed=row.seed,
        width=width,
        height=height,
        **extra,
    )
    session.add(stimulus)
    session.flush()
    return stimulus


def _broken_stimuli(
    session: Session,
    study: Study,
    spec: StudySpec,
    rows: list[ManifestRow],
    payloads: dict[str, bytes],
    media_dir: Path,
) -> list[Stimulus]:
    """Broken copies of a few images (one per item used), for the gold attention trials."""
    if spec.attention.broken == 0:
        return []
    rng = np.random.default_rng(spec.seed)
    by_item: dict[tuple[str, int], list[ManifestRow]] = {}
    for r in sorted(rows, key=lambda r: r.image_id):
        by_item.setdefault(item(r), []).append(r)
    keys = sorted(by_item)
    n = min(len(keys), max(4, 2 * spec.attention.broken))
    chosen = [keys[i] for i in rng.choice(len(keys), size=n, replace=False)]
    out = []
    for key in chosen:
        source_row = by_item[key][int(rng.integers(len(by_item[key])))]
        source = _stimulus(session, study, source_row, payloads[source_row.image_id], media_dir)
        data = broken_png(payloads[source_row.image_id], seed=spec.seed)
        row = dataclasses.replace(
            source_row,
            image_id=f"broken-{source_row.image_id}",
            sha256=hashlib.sha256(data).hexdigest(),
            variant=BROKEN_VARIANT,
        )
        out.append(
            _stimulus(session, study, row, data, media_dir, role="broken", source_id=source.id)
        )
    return out
