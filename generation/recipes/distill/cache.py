"""Text embeddings and VAE latents, computed once per dataset and reused by every run.

Distillation runs only the two transformers; the text encoders (T5-XXL alone is 4.7B
parameters) and the VAE would otherwise re-encode the same captions and images every step.
``build_cache`` encodes each pair once and writes safetensors shards; ``LatentCache`` reads
one sample at a time through memory-mapped slices.

The cache folder's name is a hash of everything the encodings depend on (``CacheKey``):
the listing (keys, captions, file sizes and times), the image policy, the fingerprints of
the text encoders, tokenizers and the VAE (their files' hashes), the maximum text length, the family and the stored dtype.
Change any of them and a new cache is built; the old one is never overwritten. A cache is
written through ``atomic_output_dir``, so an interrupted build leaves nothing behind.

``LiveEncoder`` has the same interface and encodes on the fly (``--no-cache``), for data that
is used once or does not fit on disk. Both give the same tensors up to the rounding of batched
arithmetic (the VAE's mode is used, not a sample), so a run does not depend on which one fed it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from generation.adapters import get_adapter
from generation.adapters.encoding import encode_pixels, encode_text
from generation.recipes.distill.data import CaptionedImage, ImagePolicy, load_image
from generation.store.fingerprints import model_fingerprint
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir, atomic_write_text

CACHE_FORMAT = 1
SAMPLE_KEYS = ("latents", "prompt_embeds", "pooled_prompt_embeds")


@dataclass(frozen=True)
class CacheKey:
    """Everything a cached encoding depends on."""

    dataset: str
    image_policy: dict
    text_encoders: str
    vae: str
    max_sequence_length: int
    family: str
    dtype: str
    format: int = CACHE_FORMAT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


def component_fingerprint(model_dir: str | Path, names: Sequence[str]) -> str:
    """A hash of the named sub-folders of a pipeline folder (``generation.store.fingerprints.model_fingerprint`` each)."""
    h = hashlib.sha256()
    for name in names:
        folder = Path(model_dir) / name
        if folder.is_dir():
            h.update(f"{name}:{model_fingerprint(folder)}\n".encode())
    return h.hexdigest()[:16]


TEXT_COMPONENTS = (
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
    "tokenizer",
    "tokenizer_2",
    "tokenizer_3",
)


def encode_batch(
    pipe, pairs: Sequence[CaptionedImage], policy: ImagePolicy, *, max_sequence_length: int
) -> dict[str, torch.Tensor]:
    """Latents and text embeddings of ``pairs``, stacked (B, ...), on the pipeline's device."""
    pixels = torch.from_numpy(np.stack([load_image(p.path, policy) for p in pairs]))
    batch = {"latents": encode_pixels(pipe.vae, pixels)}
    batch.update(
        encode_text(pipe, [p.caption for p in pairs], max_sequence_length=max_sequence_length)
    )
    return batch


class LiveEncoder:
    """Encodes the requested samples on every call (no cache)."""

    def __init__(
        self,
        pipe,
        pairs: Sequence[CaptionedImage],
        policy: ImagePolicy,
        *,
        max_sequence_length: int,
    ):
        self.pipe, self.pairs, self.policy = pipe, list(pairs), policy
        self.max_sequence_length = max_sequence_length

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        chosen = [self.pairs[i] for i in indices]
        return encode_batch(
            self.pipe, chosen, self.policy, max_sequence_length=self.max_sequence_length
        )


class LatentCache:
    """A built cache folder: ``meta.json`` plus shards ``shard-NNNNN.safetensors`` of stacked tensors."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"latent cache {self.directory} is unreadable ({exc})") from None
        self.shard_size = int(self.meta["shard_size"])
        self.count = int(self.meta["count"])
        self._files = [
            safe_open(str(self.directory / name), framework="pt") for name in self.meta["shards"]
        ]

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        shard, row = divmod(index, self.shard_size)
        f = self._files[shard]
        return {k: f.get_slice(k)[row : row + 1] for k in SAMPLE_KEYS}

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        samples = [self.sample(i) for i in indices]
        return {k: torch.cat([s[k] for s in samples]) for k in SAMPLE_KEYS}


def build_cache(
    pipe,
    pairs: Sequence[CaptionedImage],
    policy: ImagePolicy,
    root: str | Path,
    key: CacheKey,
    *,
    batch_size: int = 8,
    shard_size: int = 1024,
    show_progress: bool = True,
) -> LatentCache:
    """Open the cache for ``key`` under ``root``, encoding every pair first if it does not exist yet."""
    directory = cache_path(root, key)
    if is_built(root, key):
        return LatentCache(directory)
    shard_size = max(shard_size, batch_size)
    shard_size -= shard_size % batch_size  # a batch never straddles two shards
    with atomic_output_dir(directory) as tmp:
        shards = []
        bar = tqdm(
            total=len(pairs),
            desc="encoding captions and images",
            unit="img",
            disable=not show_progress,
        )
        for start in range(0, len(pairs), shard_size):
            chunk = pairs[start : start + shard_size]
            parts = []
            for i in range(0, len(chunk), batch_size):
                batch = chunk[i : i + batch_size]
                parts.append(
                    encode_batch(pipe, batch, policy, max_sequence_length=key.max_sequence_length)
                )
                bar.update(len(batch))
            tensors = {
                k: torch.cat([p[k] for p in parts]).to("cpu").contiguous() for k in SAMPLE_KEYS
            }
            name = f"shard-{len(shards):05d}.safetensors"
            save_file(tensors, str(tmp / name))
            shards.append(name)
        bar.close()
        meta = {
            "key": asdict(key),
            "count": len(pairs),
            "shard_size": shard_size,
            "shards": shards,
            "keys": [p.key for p in pairs],
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
    return LatentCache(directory)


def cache_path(root: str | Path, key: CacheKey) -> Path:
    return Path(root) / key.digest()


def is_built(root: str | Path, key: CacheKey) -> bool:
    """The cache for ``key`` exists under ``root`` (``meta.json`` is written last)."""
    return (cache_path(root, key) / "meta.json").is_file()


def cache_key(
    pipe, model_dir: str | Path, dataset: str, policy: ImagePolicy, *, max_sequence_length: int
) -> CacheKey:
    """The key for encoding ``dataset`` with ``pipe``, loaded from the pipeline folder ``model_dir``."""
    return CacheKey(
        dataset=dataset,
        image_policy=policy.describe(),
        text_encoders=component_fingerprint(model_dir, TEXT_COMPONENTS),
        vae=component_fingerprint(model_dir, ["vae"]),
        max_sequence_length=max_sequence_length,
        family=get_adapter(pipe.transformer).family,
        # the pipeline loads in one dtype: the encoders', known before they are loaded
        dtype=str(pipe.transformer.dtype).removeprefix("torch."),
    )
