"""The served copies of a study's images: what a participant's browser receives.

A public manifest lists every rendered file's sha256 and variant, and the renders may be
re-encoded by anyone with the same encoder, so a served copy must not be the rendered file,
nor anything computable from it. Each copy is therefore

- **perturbed with a secret mask**: the least significant bit of one 8-bit channel value in
  :data:`FLIP_DENSITY` is flipped, chosen by a fresh random key. No value moves by more than
  one grey level (invisible: well under one just-noticeable difference), but neither the
  file's hash nor its decoded pixels can be matched to the render's without the key;
- **re-encoded** as a plain RGB PNG (IHDR, IDAT, IEND: no text, time or colour chunks);
- **padded to the study's common length** with a private ancillary chunk of random bytes
  (:data:`PADDING_CHUNK`, which decoders skip), so that every served copy of a study has the
  same size: neither the variant (its renders compress better or worse), nor a gold trial's
  broken image, can be told by the length of the response.

Every image gets two copies with independent masks: one for the main and practice trials,
one for the attention trials, so that a repeated trial does not bring back the bytes of the
trial it repeats (``study.importer`` stores them; ``study.blueprints.participant`` serves
them under per-trial tokens).
"""

from __future__ import annotations

import io
import secrets
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ancillary (p), private (a), reserved bit clear (D), safe to copy (d): PNG 1.2, 3.3.
PADDING_CHUNK = b"paDd"
CHUNK_OVERHEAD = 12  # length, type, CRC
FLIP_DENSITY = 1 / 16  # share of channel values whose lowest bit a copy flips


def perturbed_png(data: bytes, key: int | None = None) -> bytes:
    """``data`` (any image Pillow reads) as an RGB PNG with the secret one-grey-level mask
    of ``key`` (a fresh random key by default), unpadded."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    rng = np.random.default_rng(secrets.randbits(128) if key is None else key)
    flips = (rng.random(pixels.shape) < FLIP_DENSITY).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels ^ flips).save(out, format="PNG", compress_level=9)
    return strip_padding(out.getvalue())  # Pillow writes no text chunks; this keeps IHDR..IEND


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += CHUNK_OVERHEAD + length
    if not chunks or chunks[-1][0] != b"IEND":
        raise ValueError("the PNG file is truncated")
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body))


def strip_padding(data: bytes) -> bytes:
    """The PNG without its padding chunk (and without any chunk but IHDR, PLTE, IDAT, IEND)."""
    kept = [(k, b) for k, b in _chunks(data) if k in (b"IHDR", b"PLTE", b"IDAT", b"IEND")]
    return PNG_SIGNATURE + b"".join(_chunk(k, b) for k, b in kept)


def padded_length(unpadded: list[int]) -> int:
    """The common length of copies whose unpadded lengths are ``unpadded``: every copy gets a
    padding chunk, so the layout of the chunks is the same in all of them too."""
    return max(unpadded) + CHUNK_OVERHEAD


def pad(data: bytes, length: int) -> bytes:
    """``data`` (an unpadded PNG) grown to exactly ``length`` bytes by a padding chunk of random
    bytes before IEND."""
    unpadded = strip_padding(data)
    room = length - len(unpadded) - CHUNK_OVERHEAD
    if room < 0:
        raise ValueError(f"a {len(unpadded)}-byte image cannot be padded to {length} bytes")
    iend = len(unpadded) - CHUNK_OVERHEAD
    return unpadded[:iend] + _chunk(PADDING_CHUNK, secrets.token_bytes(room)) + unpadded[iend:]
