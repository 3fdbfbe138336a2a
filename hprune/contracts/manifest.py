"""stimuli/manifest.csv: one row per rendered image, the contract every later stage reads.

Columns, in this order (design.md): ``image_id, file, sha256, variant, prompt_id, prompt,
category, seed, width, height, steps, guidance, model_fingerprint, created_at``.
``file`` is relative to the stimuli folder. :func:`verify_manifest` checks that the rows
and the image files agree: every listed file exists with its hash, no file or image id
is listed twice, no (variant, prompt, seed) appears twice, and no image sits in the
folder unlisted.

Beside the manifest, ``hprune render`` keeps ``render.json`` (the variants' definitions and
model fingerprints, the reference variant, the seeds) and ``prompts.jsonl`` (the prompts
with their metadata), which ``hprune score`` reads.

Images are PNG with every text, time and EXIF chunk stripped, so that nothing written into
one (a prompt, a model name, a render date) travels with the stimuli. :func:`check_image`
enforces that, with the sha256, before an image is imported; the study serves re-encoded
copies of the pixels alone (``study.media``), which match no sha256 listed here.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hprune.contracts.prompts import Prompt
from hprune.errors import UserError
from hprune.fileio import atomic_write_text

MANIFEST_NAME = "manifest.csv"
RENDER_INFO_NAME = "render.json"
PROMPTS_NAME = "prompts.jsonl"
IMAGE_DIR = "images"
COLUMNS = (
    "image_id",
    "file",
    "sha256",
    "variant",
    "prompt_id",
    "prompt",
    "category",
    "seed",
    "width",
    "height",
    "steps",
    "guidance",
    "model_fingerprint",
    "created_at",
)
_INT_COLUMNS = ("seed", "width", "height", "steps")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that can carry text, dates or other metadata; rendered stimuli must have none.
METADATA_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}


@dataclass(frozen=True)
class ManifestRow:
    """One image of a stimulus set."""

    image_id: str
    file: str
    sha256: str
    variant: str
    prompt_id: str
    prompt: str
    category: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    model_fingerprint: str
    created_at: str

    @property
    def item(self) -> tuple[str, str, int]:
        """What the image shows: (variant, prompt_id, seed), unique within a set."""
        return (self.variant, self.prompt_id, self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict, *, where: str = "") -> ManifestRow:
        """A row from string or typed values; UserError if a column is missing or malformed."""
        missing = [c for c in COLUMNS if record.get(c) is None]
        if missing:
            raise UserError(f"{where}: missing column(s) {', '.join(missing)}")
        values = {c: record[c] for c in COLUMNS}
        try:
            for column in _INT_COLUMNS:
                values[column] = int(values[column])
            values["guidance"] = float(values["guidance"])
        except ValueError:
            raise UserError(f"{where}: seed/width/height/steps/guidance must be numbers") from None
        for column in COLUMNS:
            if column not in _INT_COLUMNS and column != "guidance":
                values[column] = str(values[column])
        if not values["image_id"] or not values["file"] or not values["variant"]:
            raise UserError(f"{where}: empty image_id, file or variant")
        return cls(**values)


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(rows: Iterable[ManifestRow]) -> str:
    """The CSV text of ``rows`` (header included)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.to_dict())
    return buffer.getvalue()


def write_manifest(stimuli_dir: str | Path, rows: Iterable[ManifestRow]) -> Path:
    """Write ``stimuli_dir/manifest.csv`` atomically."""
    path = Path(stimuli_dir) / MANIFEST_NAME
    atomic_write_text(path, manifest_text(rows))
    return path


def read_manifest(stimuli_dir: str | Path) -> list[ManifestRow]:
    """The rows of ``stimuli_dir/manifest.csv``; UserError if it is missing or malformed."""
    path = Path(stimuli_dir) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{stimuli_dir} has no {MANIFEST_NAME} (render it with 'hprune render')")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
        return [
            ManifestRow.from_dict(record, where=f"{path}:{reader.line_num}") for record in reader
        ]


def check_unique(rows: Iterable[ManifestRow], *, where: str) -> None:
    """No image id, file or (variant, prompt, seed) twice."""
    seen: dict[str, set] = {"image_id": set(), "file": set(), "item": set()}
    for row in rows:
        for key, value in (("image_id", row.image_id), ("file", row.file), ("item", row.item)):
            if value in seen[key]:
                raise UserError(f"{where}: {key} {value!r} is listed twice")
            seen[key].add(value)


def check_files(
    stimuli_dir: str | Path, rows: Iterable[ManifestRow], *, check_hashes: bool = True
) -> None:
    """Every row's file exists inside the folder (with its sha256); UserError on the first that does not."""
    stimuli_dir = Path(stimuli_dir)
    where = str(stimuli_dir / MANIFEST_NAME)
    root = stimuli_dir.resolve()
    for row in rows:
        path = (stimuli_dir / row.file).resolve()
        if not path.is_relative_to(root):
            raise UserError(f"{where}: image {row.image_id} points outside the folder ({row.file})")
        if not path.is_file():
            raise UserError(f"{where} disagrees with the files: {row.file} is missing")
        if check_hashes and sha256_file(path) != row.sha256:
            raise UserError(f"{where} disagrees with the files: {row.file} has a different sha256")


def unlisted_images(stimuli_dir: str | Path, rows: Iterable[ManifestRow]) -> list[Path]:
    """The PNG files in the image folder that no row lists."""
    stimuli_dir = Path(stimuli_dir)
    listed = {(stimuli_dir / row.file).resolve() for row in rows}
    return sorted(p for p in (stimuli_dir / IMAGE_DIR).glob("*.png") if p.resolve() not in listed)


def verify_manifest(stimuli_dir: str | Path, *, check_hashes: bool = True) -> list[ManifestRow]:
    """Read the manifest and check it against the folder; UserError on the first disagreement."""
    stimuli_dir = Path(stimuli_dir)
    rows = read_manifest(stimuli_dir)
    where = str(stimuli_dir / MANIFEST_NAME)
    check_unique(rows, where=where)
    check_files(stimuli_dir, rows, check_hashes=check_hashes)
    unlisted = unlisted_images(stimuli_dir, rows)
    if unlisted:
        raise UserError(
            f"{where} disagrees with the files: {len(unlisted)} image(s) not listed, e.g. {IMAGE_DIR}/{unlisted[0].name}"
        )
    return rows


def read_render_info(stimuli_dir: str | Path) -> dict:
    """``render.json``: the variants (definitions, fingerprints), reference and seeds of a set ({} if absent)."""
    path = Path(stimuli_dir) / RENDER_INFO_NAME
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("variants"), list):
        raise UserError(f"{path} is not a render record written by 'hprune render'")
    return info


def reference_name(stimuli_dir: str | Path) -> str | None:
    """The reference variant of a stimulus set, as variants.yaml marked it."""
    return read_render_info(stimuli_dir).get("reference")


def read_stimulus_prompts(stimuli_dir: str | Path) -> dict[str, Prompt]:
    """The prompts a set was rendered from (``prompts.jsonl``), by prompt id, metadata included."""
    path = Path(stimuli_dir) / PROMPTS_NAME
    if not path.is_file():
        return {}
    prompts = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
                prompt = Prompt(
                    record["prompt_id"], record["text"], record["category"], record["metadata"]
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{line_no}: not a prompt record") from None
            prompts[prompt.prompt_id] = prompt
    return prompts


def prompts_jsonl(prompts: Iterable[Prompt]) -> str:
    """The text of ``prompts.jsonl`` for ``prompts``."""
    return "".join(json.dumps(dataclasses.asdict(p), sort_keys=True) + "\n" for p in prompts)


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
