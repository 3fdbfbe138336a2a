"""The stimuli a study imports: ``manifest.csv`` (read by :mod:`generation.manifest`, the
contract's one reader) and the checks an image must pass before participants may see it.

An image is accepted only if it is a PNG whose bytes match the manifest's sha256 and that
carries no text or time chunks: it is served byte for byte, so anything written into it
(a prompt, a model name, a render date) would reach the participant.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from generation.manifest import MANIFEST_NAME, ManifestRow, verify_manifest
from hprune.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that can carry text, dates or other metadata; rendered stimuli must have none.
METADATA_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}


def read_stimuli(manifest: str | Path) -> tuple[Path, list[ManifestRow]]:
    """The stimuli folder and its rows, given the folder or its ``manifest.csv``."""
    manifest = Path(manifest)
    root = manifest if manifest.is_dir() else manifest.parent
    if not manifest.is_dir() and manifest.name != MANIFEST_NAME:
        raise UserError(f"{manifest}: expected a stimuli folder or its {MANIFEST_NAME}")
    if not (root / MANIFEST_NAME).is_file():
        raise UserError(f"manifest {root / MANIFEST_NAME} does not exist")
    rows = verify_manifest(root, check_hashes=False)  # hashes are checked on the bytes read
    if not rows:
        raise UserError(f"manifest {root / MANIFEST_NAME} has no rows")
    return root, rows


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order (ValueError if it is not a whole PNG)."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    types, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        types.append(kind)
        pos += 12 + length
        if kind == b"IEND":
            break
    if not types or types[-1] != b"IEND" or pos > len(data):
        raise ValueError("truncated PNG file")
    return types


def check_image(root: Path, row: ManifestRow) -> bytes:
    """The image's bytes, after checking that it may be served as it is."""
    path = root / row.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"image {row.image_id}: cannot read {path}: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise UserError(f"image {row.image_id}: sha256 does not match the manifest ({path})")
    try:
        chunks = png_chunk_types(data)
    except ValueError as exc:
        raise UserError(f"image {row.image_id}: {exc} ({path})") from None
    found = sorted({c.decode("latin-1") for c in chunks if c in METADATA_CHUNKS})
    if found:
        raise UserError(
            f"image {row.image_id}: carries metadata chunk(s) {', '.join(found)} that would "
            f"reach participants; strip them (as `hprune render` does) and re-hash ({path})"
        )
    return data
