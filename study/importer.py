"""``hprune study import``: a study version from a stimuli manifest and a spec.

Each image is checked (sha256, no metadata chunks), then stored in the media folder as two
served copies (``study.media``): the same picture to within one grey level, bytes that no
manifest hash and no re-encoding of the render can match, and the same length as every other
served copy of the study. Neither a copy's name (random) nor its modification time (fixed)
says anything about the variant. Re-importing a changed spec or manifest adds a new version;
participants keep the version they started with, and answered trials are never touched. A
re-import also re-encodes the copies of images that an earlier hprune stored byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from hprune.contracts.manifest import ManifestRow, check_image, read_stimuli
from hprune.errors import UserError
from hprune.fileio import atomic_write_bytes
from study import media
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


def broken_png(data: bytes) -> bytes:
    """An obviously broken version of an image: a coarse mosaic of it, colours inverted.

    No per-pixel noise: a noisy image compresses worse than any render, and would stand out
    by its size if the served copies were not padded to a common length (``study.media``).
    """
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    small = image.resize((max(2, w // 12), max(2, h // 12)), Image.Resampling.BOX)
    pixels = np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(255 - pixels).save(out, format="PNG")  # no text chunks are written
    return out.getvalue()


@dataclass
class ServedCopies:
    """The served copies an import writes, all the same length (``study.media``).

    New copies are written unpadded while the stimuli are stored (their rows are not yet
    committed, so nobody serves them), then :meth:`equalise` pads them to the study's common
    length, re-padding the study's earlier copies into new files when that length grows.
    Files replaced are removed after the commit (:meth:`remove_replaced`); after a failed
    import, the new files are (:meth:`remove_new`).
    """

    media_dir: Path
    study_key: str
    new: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def write(self, data: bytes) -> str:
        relative = f"{self.study_key}/{secrets.token_urlsafe(16)}.png"
        target = self.media_dir / relative
        atomic_write_bytes(target, data)
        os.utime(target, (FIXED_MTIME, FIXED_MTIME))
        self.new.append(relative)
        return relative

    def store(self, data: bytes) -> tuple[str, str]:
        """(main copy, attention-trial copy) of a rendered image, unpadded for now."""
        return self.write(media.perturbed_png(data)), self.write(media.perturbed_png(data))

    def present(self, stimulus: Stimulus) -> bool:
        """Whether the stimulus has both served copies (images an earlier hprune stored
        byte for byte have none for attention trials, and are stored again)."""
        paths = (stimulus.media_path, stimulus.check_media_path)
        return all(p and (self.media_dir / p).is_file() for p in paths)

    def equalise(self, session: Session, study: Study) -> None:
        """Pad every served copy of the study to one length."""
        rows = session.scalars(
            select(Stimulus).where(
                Stimulus.study_id == study.id, Stimulus.check_media_path.is_not(None)
            )
        ).all()
        fresh = set(self.new)
        old = {p for s in rows for p in (s.media_path, s.check_media_path) if p not in fresh}
        unpadded = [(self.media_dir / p).stat().st_size for p in fresh]
        current = max(((self.media_dir / p).stat().st_size for p in old), default=0)
        length = max(current, media.padded_length(unpadded) if unpadded else 0)
        for path in self.new:
            target = self.media_dir / path
            atomic_write_bytes(target, media.pad(target.read_bytes(), length))
            os.utime(target, (FIXED_MTIME, FIXED_MTIME))
        if length == current:
            return
        repadded = {}
        for path in sorted(old):  # a copy's file never changes under a committed row
            repadded[path] = self.write(media.pad((self.media_dir / path).read_bytes(), length))
        for stimulus in rows:
            stimulus.media_path = repadded.get(stimulus.media_path, stimulus.media_path)
            stimulus.check_media_path = repadded.get(
                stimulus.check_media_path, stimulus.check_media_path
            )
        self.replaced += sorted(old)

    def remove_replaced(self) -> None:
        self._remove(self.replaced)

    def remove_new(self) -> None:
        self._remove(self.new)

    def _remove(self, paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                (self.media_dir / path).unlink()


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

    copies = None
    try:
        with db.write() as session:
            study = session.scalar(
                select(Study).where(Study.name == spec.name).with_for_update(key_share=True)
            )
            if study is None:
                study = Study(name=spec.name, public_key=secrets.token_urlsafe(8), status="open")
                session.add(study)
                session.flush()
            copies = ServedCopies(media_dir, study.public_key)
            latest = session.scalar(
                select(StudyVersion)
                .where(StudyVersion.study_id == study.id)
                .order_by(StudyVersion.number.desc())
                .limit(1)
            )
            stimuli = [
                _stimulus(session, study, r, payloads[r.image_id], copies)
                for r in tqdm(rows, desc="storing images", unit="img", disable=not progress)
            ]
            stimuli += _broken_stimuli(session, study, spec, rows, payloads, copies)
            copies.equalise(session, study)
            unchanged = latest is not None and latest.fingerprint == print_
            if not unchanged:
                latest = StudyVersion(
                    study_id=study.id,
                    number=(latest.number + 1) if latest else 1,
                    fingerprint=print_,
                    spec_json=spec.to_json(),
                )
                session.add(latest)
                session.flush()
                session.add_all(
                    VersionStimulus(version_id=latest.id, stimulus_id=s.id) for s in stimuli
                )
            result = ImportResult(
                spec.name, study.public_key, latest.number, not unchanged, len(rows), len(items),
                tuple(variants),
            )  # fmt: skip
    except BaseException:
        if copies is not None:
            copies.remove_new()
        raise
    copies.remove_replaced()
    return result


def _stimulus(
    session: Session, study: Study, row: ManifestRow, data: bytes, copies: ServedCopies, **extra
) -> Stimulus:
    existing = session.scalar(
        select(Stimulus).where(
            Stimulus.study_id == study.id,
            Stimulus.image_id == row.image_id,
            Stimulus.sha256 == row.sha256,
        )
    )
    if existing is not None and copies.present(existing):
        return existing
    if extra.get("role") == "broken":  # shown in gold trials only: one copy serves both
        media_path = check_media_path = copies.write(media.perturbed_png(data))
    else:
        media_path, check_media_path = copies.store(data)
    if existing is not None:  # the media folder lost a copy, or an earlier hprune made none
        copies.replaced += [p for p in (existing.media_path, existing.check_media_path) if p]
        existing.media_path, existing.check_media_path = media_path, check_media_path
        return existing
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    stimulus = Stimulus(
        study_id=study.id,
        token=secrets.token_urlsafe(16),  # an internal name: images are served per trial
        image_id=row.image_id,
        sha256=row.sha256,
        media_path=media_path,
        check_media_path=check_media_path,
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
    copies: ServedCopies,
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
        source = _stimulus(session, study, source_row, payloads[source_row.image_id], copies)
        data = broken_png(payloads[source_row.image_id])
        row = dataclasses.replace(
            source_row,
            image_id=f"broken-{source_row.image_id}",
            sha256=hashlib.sha256(data).hexdigest(),
            variant=BROKEN_VARIANT,
        )
        out.append(_stimulus(session, study, row, data, copies, role="broken", source_id=source.id))
    return out
