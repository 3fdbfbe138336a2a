"""manifest.csv: round trip, and every way the rows and the files can disagree."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from hprune.contracts.manifest import (
    COLUMNS,
    ManifestRow,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from hprune.errors import UserError


def make_set(root: Path, n: int = 3) -> list[ManifestRow]:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(buffer, format="PNG")
        path = root / "images" / f"{i:016x}.png"
        path.write_bytes(buffer.getvalue())
        rows.append(
            ManifestRow(
                image_id=f"{i:016x}",
                file=f"images/{path.name}",
                sha256=sha256_file(path),
                variant="original" if i % 2 else "pruned",
                prompt_id=f"p{i}",
                prompt=f'a "quoted", prompt {i}',
                category="c",
                seed=i,
                width=8,
                height=8,
                steps=2,
                guidance=3.5,
                model_fingerprint="abc",
                created_at="2025-01-01T00:00:00+00:00",
            )
        )
    write_manifest(root, rows)
    return rows


def test_round_trip_keeps_columns_order_and_types(tmp_path):
    rows = make_set(tmp_path)
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == COLUMNS
    assert read_manifest(tmp_path) == rows
    assert verify_manifest(tmp_path) == rows


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "images" / f"{1:016x}.png").unlink(), "is missing"),
        (
            lambda root: (root / "images" / f"{1:016x}.png").write_bytes(b"not the same"),
            "different sha256",
        ),
        (lambda root: (root / "images" / "ffff.png").write_bytes(b"x"), "not listed"),
        (
            lambda root: (root / "manifest.csv").write_text(
                (root / "manifest.csv").read_text()
                + (root / "manifest.csv").read_text().splitlines()[1]
                + "\n"
            ),
            "listed twice",
        ),
        (
            lambda root: (root / "manifest.csv").write_text("image_id,file\nx,y\n"),
            "missing column",
        ),
        (
            lambda root: (root / "manifest.csv").write_text(
                (root / "manifest.csv").read_text().replace(",2,3.5,", ",two,3.5,")
            ),
            "must be numbers",
        ),
        (lambda root: (root / "manifest.csv").unlink(), "has no manifest.csv"),
    ],
)
def test_disagreements_are_one_line_errors(tmp_path, damage, message):
    make_set(tmp_path)
    damage(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        verify_manifest(tmp_path)
    assert "\n" not in info.value.message


def test_row_pointing_outside_the_folder_is_refused(tmp_path):
    rows = make_set(tmp_path / "set")
    (tmp_path / "outside.png").write_bytes(b"x")
    bad = [*rows[:-1], ManifestRow(**{**rows[-1].to_dict(), "file": "../outside.png"})]
    write_manifest(tmp_path / "set", bad)
    (tmp_path / "set" / rows[-1].file).unlink()
    with pytest.raises(UserError, match="outside the folder"):
        verify_manifest(tmp_path / "set")
