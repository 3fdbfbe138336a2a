"""Served copies (study.media): padding to one length, re-padding when a re-import brings a
larger image, and re-encoding the byte-for-byte copies an earlier hprune stored."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from hprune.contracts.manifest import read_manifest
from study import media
from study.importer import import_study
from study.models import Stimulus, Study
from study.spec import parse_spec
from tests.study.conftest import make_stimuli


def _png(size: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_padding_gives_the_length_asked_and_decodes_to_the_same_pixels():
    copy = media.perturbed_png(_png(16, 0), key=7)
    assert copy == media.perturbed_png(_png(16, 0), key=7)  # the key decides the mask
    assert copy != media.perturbed_png(_png(16, 0), key=8)
    length = media.padded_length([len(copy)]) + 100
    padded = media.pad(copy, length)
    assert len(padded) == length and media.strip_padding(padded) == copy
    assert (
        media.pad(padded, length + 1) != padded and len(media.pad(padded, length + 1)) == length + 1
    )
    with Image.open(io.BytesIO(padded)) as image:
        image.load()
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(copy))))
    with pytest.raises(ValueError, match="cannot be padded"):
        media.pad(copy, len(copy))


def _copies(app, key: str) -> list[Stimulus]:
    with app.extensions["hprune_db"].read() as s:
        return s.scalars(
            select(Stimulus).join(Study, Study.id == Stimulus.study_id)
            .where(Study.public_key == key)
        ).all()  # fmt: skip


def _lengths(app, key: str) -> set[int]:
    root = Path(app.config["MEDIA_DIR"])
    return {
        (root / p).stat().st_size
        for s in _copies(app, key)
        for p in (s.media_path, s.check_media_path)
    }


def test_a_larger_image_in_a_reimport_repads_every_copy(app, participant, tmp_path):
    p, study = participant()
    body = p.start(pid="PID-repad")
    url = body["trial"]["images"]["left"]
    (length,) = _lengths(app, study.key)
    root = Path(app.config["MEDIA_DIR"])
    old_files = {q for s in _copies(app, study.key) for q in (s.media_path, s.check_media_path)}
    bigger = make_stimuli(tmp_path / "big", size=96)  # larger than every copy so far
    result = import_study(
        app.extensions["hprune_db"], bigger, parse_spec(study.spec), str(root), progress=False
    )
    assert result.changed and result.version == 2
    (grown,) = _lengths(app, study.key)
    assert grown > length
    assert not any((root / q).exists() for q in old_files)  # replaced after the commit
    response = p.client.get(url)  # a participant of version 1 still sees their images
    assert response.status_code == 200 and len(response.data) == grown


def test_reimport_reencodes_copies_an_earlier_hprune_stored_byte_for_byte(
    app, make_study, stimuli_dir
):
    study = make_study()
    root = Path(app.config["MEDIA_DIR"])
    rows = {r.image_id: r for r in read_manifest(stimuli_dir)}
    with app.extensions["hprune_db"].write() as s:  # as hprune stored it before study.media
        legacy = s.scalars(
            select(Stimulus).join(Study, Study.id == Stimulus.study_id)
            .where(Study.public_key == study.key, Stimulus.role == "stimulus")
        ).all()  # fmt: skip
        for stim in legacy:
            original = (stimuli_dir / rows[stim.image_id].file).read_bytes()
            stim.media_path = f"{study.key}/legacy-{stim.token}.png"
            (root / stim.media_path).write_bytes(original)
            stim.check_media_path = None
    again = import_study(
        app.extensions["hprune_db"], stimuli_dir, parse_spec(study.spec), str(root), progress=False
    )
    assert not again.changed  # the same spec and manifest: no new version ...
    hashes = {r.sha256 for r in rows.values()}
    for stim in _copies(app, study.key):  # ... but no copy is the rendered file any more
        assert stim.check_media_path is not None
        data = (root / stim.media_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() not in hashes
    assert len(_lengths(app, study.key)) == 1
    assert not list(root.glob(f"{study.key}/legacy-*.png"))
