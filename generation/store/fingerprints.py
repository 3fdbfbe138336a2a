"""Model fingerprints: a short hash of everything a loader reads from a model folder.

Every later stage records the fingerprint of the model it started from (a pruned model its
parent's, a rendered image its model's), so results can be traced to exact weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from generation.model_record import RECORD_NAME
from generation.store.loading import resolve_model_dir
from hprune.errors import UserError
from hprune.fileio import atomic_write_text


def _cache_file() -> Path:
    root = os.environ.get("HPRUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hprune"
    )
    return Path(root) / "file-hashes.json"


_memory_cache: dict[str, dict] = {}


def _load_cache() -> dict[str, dict]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: Path, *, cache: dict[str, dict] | None = None) -> str:
    """SHA-256 of a file, taken from ``cache`` when its size and modification time are unchanged."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = _memory_cache if cache is None else cache
    hit = cache.get(key)
    if hit and hit.get("size") == stamp["size"] and hit.get("mtime_ns") == stamp["mtime_ns"]:
        return hit["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    cache[key] = {**stamp, "sha256": digest.hexdigest()}
    return cache[key]["sha256"]


def model_fingerprint(model: str | os.PathLike[str]) -> str:
    """A short hash of everything a loader reads from the model directory (weights, configs, tokenizers).

    The model record is left out (its history grows without changing the model).
    File hashes are cached by path, size and modification time (in memory and in
    ``$HPRUNE_CACHE_DIR`` or ``~/.cache/hprune``), so unchanged files are never re-hashed.
    """
    directory = resolve_model_dir(model)
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.name != RECORD_NAME
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not files:
        raise UserError(f"model directory {directory} is empty")
    cache = {**_load_cache(), **_memory_cache}
    before = dict(cache)
    total = hashlib.sha256()
    for path in files:
        total.update(path.relative_to(directory).as_posix().encode())
        total.update(b"\0" + file_sha256(path, cache=cache).encode() + b"\n")
    _memory_cache.update(cache)
    if cache != before:
        try:
            merged = {**_load_cache(), **cache}
            atomic_write_text(_cache_file(), json.dumps(merged))
        except OSError:
            pass  # a read-only cache directory only costs re-hashing next time
    return total.hexdigest()[:16]
