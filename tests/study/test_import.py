"""Importing stimuli and specs: what is refused, what makes a new version, what never changes."""

from __future__ import annotations

import hashlib
import io
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from hprune.contracts.manifest import png_chunk_types, read_manifest, sha256_file, write_manifest
from hprune.errors import UserError
from study.importer import import_study
from study.models import Answer, Stimulus, Study, StudyVersion, Trial
from study.spec import parse_spec
from tests.study.conftest import BASE_SPEC, attentive, make_stimuli, run_cli, run_through


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "triad"}, "'kind' must be one of"),
        ({"tie": "yes"}, "'tie' must be true or false"),
        ({"trials_per_criterion": 0}, "'trials_per_criterion'"),
        ({"color": "red"}, "unknown field(s) color"),
        ({"compare": "reference"}, "needs 'reference"),
        ({"criteria": [{"name": "q"}, {"name": "q"}]}, "same name"),
        ({"completion_url": "ftp://x"}, "http(s) URL"),
        ({"attention": {"broken": -1}}, "'broken'"),
        ({"kind": "rating", "tie": True}, "kind: pair only"),
        ({"scale_labels": {1: "a"}}, "each of 1, 2, 3, 4, 5"),
    ],
)
def test_bad_specs_are_one_line_errors(change, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec({**BASE_SPEC, "name": "x", **change})


def _copy(stimuli_dir, tmp_path):
    target = tmp_path / "stim"
    shutil.copytree(stimuli_dir, target)
    return target


def _with_text_chunk(data: bytes) -> bytes:
    body = b"Comment\x00model=original"
    chunk = len(body).to_bytes(4, "big") + b"tEXt" + body
    chunk += zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    return data[:33] + chunk + data[33:]  # after the IHDR chunk


def test_images_with_metadata_or_wrong_hash_are_refused(app, stimuli_dir, tmp_path):
    db, media = app.extensions["hprune_db"], app.config["MEDIA_DIR"]
    spec = parse_spec({**BASE_SPEC, "name": "refused"})
    folder = _copy(stimuli_dir, tmp_path)
    rows = read_manifest(folder)
    path = folder / rows[0].file
    path.write_bytes(_with_text_chunk(path.read_bytes()))
    with pytest.raises(UserError, match="sha256 does not match"):
        import_study(db, folder, spec, media, progress=False)
    rows[0] = rows[0].__class__(**{**rows[0].to_dict(), "sha256": sha256_file(path)})
    write_manifest(folder, rows)
    with pytest.raises(UserError, match="metadata chunk"):
        import_study(db, folder, spec, media, progress=False)
    with pytest.raises(UserError, match="lacks"):
        import_study(
            db,
            stimuli_dir,
            parse_spec({**BASE_SPEC, "name": "v", "variants": ["sd9"]}),
            media,
            progress=False,
        )


def test_reimport_makes_a_new_version_and_never_touches_answers(app, stimuli_dir, participant):
    db, media = app.extensions["hprune_db"], app.config["MEDIA_DIR"]
    p, study = participant()
    body = p.start(pid="PID-versions")
    pick = attentive(app)  # the study ends at the first failed gold trial
    for _ in range(3):
        body = p.answer(body["trial"]["id"], **pick(body["trial"])).get_json()

    def snapshot():
        with db.read() as s:
            return sorted(
                (a.trial_id, a.choice, a.rating, a.rt_ms, t.left_id, t.right_id)
                for a, t in s.execute(
                    select(Answer, Trial).join(Trial, Trial.id == Answer.trial_id)
                )
            )

    before = snapshot()
    same = import_study(db, stimuli_dir, parse_spec(study.spec), media, progress=False)
    assert (same.changed, same.version) == (False, 1)
    changed = import_study(
        db, stimuli_dir, parse_spec({**study.spec, "title": "New title"}), media, progress=False
    )
    assert (changed.changed, changed.version, changed.public_key) == (True, 2, study.key)
    assert snapshot() == before
    # the started participant keeps version 1 and finishes; a new one gets version 2
    assert run_through(p, p.trial(), pick=pick)["phase"] == "end"
    q, _ = participant(study.key)
    q.start(pid="PID-v2")
    assert "New title" in q.client.get(f"/s/{study.key}/trials").get_data(as_text=True)
    with db.read() as s:
        numbers = s.scalars(
            select(StudyVersion.number).join(Study).where(Study.name == study.name)
        ).all()
    assert sorted(numbers) == [1, 2]


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=int)


def test_served_copies_match_no_manifest_hash_and_show_the_same_picture(
    app, make_study, stimuli_dir
):
    study = make_study(attention={"broken": 2, "repeat": 1, "max_failures": 0})
    media = Path(app.config["MEDIA_DIR"])
    rows = {r.image_id: r for r in read_manifest(stimuli_dir)}
    hashes = {r.sha256 for r in rows.values()}
    with app.extensions["hprune_db"].read() as s:
        stimuli = s.scalars(
            select(Stimulus)
            .join(Study, Study.id == Stimulus.study_id)
            .where(Study.public_key == study.key)
        ).all()
    lengths, checked = set(), 0
    for stim in stimuli:
        copies = [(media / p).read_bytes() for p in (stim.media_path, stim.check_media_path)]
        for data in copies:
            lengths.add(len(data))
            assert hashlib.sha256(data).hexdigest() not in hashes
            assert png_chunk_types(data) == [b"IHDR", b"IDAT", b"paDd", b"IEND"]
        if stim.role == "broken":
            assert stim.media_path == stim.check_media_path  # shown in gold trials only
            continue
        original = _pixels((stimuli_dir / rows[stim.image_id].file).read_bytes())
        main, check = (_pixels(data) for data in copies)
        for served in (main, check):  # the same picture, to within one grey level
            difference = np.abs(served - original)
            assert difference.max() == 1 and 0.02 < (difference > 0).mean() < 0.12
        assert copies[0] != copies[1] and (main != check).any()  # independent masks
        checked += 1
    assert checked == 24 and sum(s.role == "broken" for s in stimuli) == 4
    assert len(lengths) == 1  # every served copy of the study, broken ones too


def test_cli_import_reports_bad_input_in_one_line(tmp_path):
    folder = make_stimuli(tmp_path / "stim", prompts=["a", "b"])
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli\nkind: pair\ntrials_per_criterion: 2\n")
    base = ["study", "--instance", str(tmp_path / "inst"), "--db", f"sqlite:///{tmp_path / 'db'}"]
    result = run_cli(*base, "import", "--manifest", str(folder), "--spec", str(spec))
    assert result.exit_code == 2 and "hprune study init" in result.output
    assert not (tmp_path / "db").exists()  # no empty database left behind
    assert run_cli(*base, "init").exit_code == 0
    spec.write_text("name: cli\nkind: pair\ntrials_per_criterion: [\n")
    result = run_cli(*base, "import", "--manifest", str(folder), "--spec", str(spec))
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert len(result.output.strip().splitlines()) == 1
