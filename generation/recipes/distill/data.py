"""Captioned images for distillation: where they are listed, and how a picture becomes pixels.

Three layouts are accepted (``read_captioned_images``):

- a folder of images with a caption sidecar each: ``cat.png`` + ``cat.txt`` (the caption
  as text) or ``cat.json`` (an object with ``caption``, ``text`` or ``prompt``); sub-folders
  are searched too, hidden files and folders are ignored;
- a folder with a ``metadata.csv``, ``metadata.jsonl`` or ``metadata.parquet`` listing
  (Hugging Face's imagefolder layout);
- a CSV or Parquet file listing the pairs.

A listing has an image column (``file_name``, ``file``, ``image``, ``image_path`` or ``path``,
relative to the listing's folder) and a caption column (``caption``, ``text`` or ``prompt``).

Every problem a user can make is a ``UserError`` naming the file: an empty folder, an image
without a caption, a caption without an image, a listed image that is missing, an image that
does not decode (found when it is first read: the latent cache reads every image before
training starts).

Pixels: ``ImagePolicy`` is explicit and recorded in the run log and the cache key. The
shorter side is resized to ``size`` (bicubic), the centre square is cropped, transparency is
composited on white, and values are scaled to [-1, 1] as the VAEs expect. There is no random
crop or flip: captions may say "left of", and a flip would make them false.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hprune.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".txt", ".json")
LISTING_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
IMAGE_COLUMNS = ("file_name", "file", "image", "image_path", "path")
CAPTION_COLUMNS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class CaptionedImage:
    """One training pair: an image file and its caption; ``key`` is the path relative to the data root."""

    path: Path
    caption: str
    key: str


@dataclass(frozen=True)
class ImagePolicy:
    """How an image file becomes a size×size RGB array: resize shorter side, centre crop, [-1, 1]."""

    size: int
    resize: str = "shorter-side-bicubic"
    crop: str = "center"
    alpha: str = "composite-on-white"
    range: str = "[-1, 1]"

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise UserError(f"image size must be a multiple of 8 and at least 8, got {self.size}")

    def describe(self) -> dict:
        """The policy as recorded in the run log and the cache key."""
        return asdict(self)


def read_captioned_images(source: str | Path) -> list[CaptionedImage]:
    """List the image/caption pairs under ``source`` (a folder or a CSV/Parquet listing), sorted by key."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"data {source} does not exist")
    if source.is_file():
        pairs = _read_listing(source)
    else:
        listings = [source / name for name in LISTING_NAMES if (source / name).is_file()]
        if len(listings) > 1:
            raise UserError(
                f"{source} has more than one listing ({', '.join(p.name for p in listings)})"
            )
        pairs = _read_listing(listings[0]) if listings else _read_sidecars(source)
    if not pairs:
        raise UserError(f"data {source} holds no captioned images")
    return sorted(pairs, key=lambda p: p.key)


def dataset_fingerprint(pairs: list[CaptionedImage]) -> str:
    """A hash of the listing: keys, captions, file sizes and modification times (cheap; no pixels read)."""
    h = hashlib.sha256()
    for pair in pairs:
        stat = pair.path.stat()
        h.update(json.dumps([pair.key, pair.caption, stat.st_size, stat.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


def load_image(path: Path, policy: ImagePolicy) -> np.ndarray:
    """Decode ``path`` and apply ``policy``: a float32 array (3, size, size) in [-1, 1]."""
    try:
        with Image.open(path) as im:
            im.load()
            image = _to_rgb(im)
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read ({exc})") from None
    image = _resize_and_crop(image, policy.size)
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _read_sidecars(root: Path) -> list[CaptionedImage]:
    images: dict[Path, Path] = {}
    captions: dict[Path, list[Path]] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            stem = path.with_suffix("")
            if stem in images:
                raise UserError(
                    f"two images share the name {stem}: {images[stem].name}, {path.name}"
                )
            images[stem] = path
        elif suffix in CAPTION_SUFFIXES:
            captions.setdefault(path.with_suffix(""), []).append(path)
    for stem, files in sorted(captions.items()):
        if stem not in images:
            raise UserError(f"caption file {files[0]} has no image beside it")
        if len(files) > 1:
            raise UserError(
                f"image {images[stem]} has two caption files: {', '.join(f.name for f in files)}"
            )
    pairs = []
    for stem, image in images.items():
        if stem not in captions:
            raise UserError(
                f"image {image} has no caption file ({stem.name}.txt or {stem.name}.json)"
            )
        caption = _read_caption_file(captions[stem][0])
        pairs.append(CaptionedImage(image, caption, image.relative_to(root).as_posix()))
    return pairs


def _read_caption_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"caption file {path} is not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"caption file {path} is not valid JSON ({exc.msg})") from None
        caption = _pick(record, CAPTION_COLUMNS) if isinstance(record, dict) else None
        if not isinstance(caption, str):
            raise UserError(f"caption file {path} has no string 'caption', 'text' or 'prompt'")
        text = caption
    caption = text.strip()
    if not caption:
        raise UserError(f"caption file {path} is empty")
    return caption


def _pick(record: dict, names: tuple[str, ...]):
    for name in names:
        if name in record:
            return record[name]
    return None


def _read_listing(path: Path) -> list[CaptionedImage]:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise UserError(f"data listing {path} must be .csv, .jsonl or .parquet")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(f"data listing {path} cannot be read ({exc})") from None
    image_col = next((c for c in IMAGE_COLUMNS if c in frame.columns), None)
    caption_col = next((c for c in CAPTION_COLUMNS if c in frame.columns), None)
    if image_col is None or caption_col is None:
        raise UserError(
            f"data listing {path} needs an image column ({'/'.join(IMAGE_COLUMNS)}) "
            f"and a caption column ({'/'.join(CAPTION_COLUMNS)}); it has {', '.join(map(str, frame.columns))}"
        )
    root = path.parent
    pairs, seen = [], set()
    for row, (image, caption) in enumerate(zip(frame[image_col], frame[caption_col], strict=True)):
        where = f"{path.name} row {row + 2 if suffix == '.csv' else row + 1}"
        if not isinstance(image, str) or not image.strip():
            raise UserError(f"{where}: empty image path")
        if not isinstance(caption, str) or not caption.strip():
            raise UserError(f"{where}: empty caption for {image}")
        image_path = (root / image).resolve() if not Path(image).is_absolute() else Path(image)
        if not image_path.is_file():
            raise UserError(f"{where}: image {image} does not exist")
        if image in seen:
            raise UserError(f"{where}: image {image} is listed twice")
        seen.add(image)
        pairs.append(CaptionedImage(image_path, caption.strip(), image))
    return pairs
