"""Latents and text embeddings are encoded once, reused by key, and match live encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from generation.recipes.distill import cache as dc
from generation.recipes.distill.data import ImagePolicy, dataset_fingerprint, read_captioned_images
from hprune.errors import UserError


@pytest.fixture(scope="module")
def sd3_pipe(toy_model_dir):
    from generation.store.loading import load_pipeline

    return load_pipeline(toy_model_dir("sd3"))


def _data(folder: Path, n: int = 5) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (40, 32), (40 * i, 120, 200 - 30 * i)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"{i} blue circle")
    return folder


def test_cache_matches_live_encoding_and_is_reused(sd3_pipe, toy_model_dir, tmp_path) -> None:
    pairs = read_captioned_images(_data(tmp_path / "data"))
    policy = ImagePolicy(32)
    model = toy_model_dir("sd3")
    key = dc.cache_key(sd3_pipe, model, dataset_fingerprint(pairs), policy, max_sequence_length=8)
    cache = dc.build_cache(
        sd3_pipe,
        pairs,
        policy,
        tmp_path / "cache",
        key,
        batch_size=2,
        shard_size=4,
        show_progress=False,
    )
    assert len(cache) == 5 and cache.meta["shards"] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    live = dc.LiveEncoder(sd3_pipe, pairs, policy, max_sequence_length=8)
    cached, fresh = cache.batch([4, 1]), live.batch([4, 1])
    assert cached["latents"].shape == (2, 4, 4, 4)
    for name in dc.SAMPLE_KEYS:
        assert torch.allclose(cached[name], fresh[name], atol=1e-5), name

    # the same key opens the existing cache without encoding anything
    encoders_gone = type("NoEncoders", (), {"vae": None, "encode_prompt": None})()
    again = dc.build_cache(
        encoders_gone, pairs, policy, tmp_path / "cache", key, show_progress=False
    )
    assert torch.equal(again.batch([2])["latents"], cache.batch([2])["latents"])

    # anything the encodings depend on changes the key
    other_size = dc.cache_key(
        sd3_pipe, model, dataset_fingerprint(pairs), ImagePolicy(64), max_sequence_length=8
    )
    longer = dc.cache_key(
        sd3_pipe, model, dataset_fingerprint(pairs), policy, max_sequence_length=16
    )
    (pairs[0].path.with_suffix(".txt")).write_text("a green triangle")
    recaptioned = read_captioned_images(tmp_path / "data")
    new_data = dc.cache_key(
        sd3_pipe, model, dataset_fingerprint(recaptioned), policy, max_sequence_length=8
    )
    assert len({key.digest(), other_size.digest(), longer.digest(), new_data.digest()}) == 4


def test_unreadable_image_leaves_no_cache(sd3_pipe, toy_model_dir, tmp_path) -> None:
    data = _data(tmp_path / "data", 3)
    (data / "1.png").write_bytes(b"\x89PNG broken")
    pairs = read_captioned_images(data)
    policy = ImagePolicy(32)
    key = dc.cache_key(
        sd3_pipe, toy_model_dir("sd3"), dataset_fingerprint(pairs), policy, max_sequence_length=8
    )
    with pytest.raises(UserError, match=r"1\.png cannot be read"):
        dc.build_cache(sd3_pipe, pairs, policy, tmp_path / "cache", key, show_progress=False)
    assert not (tmp_path / "cache" / key.digest()).exists()
    assert not [p for p in (tmp_path / "cache").iterdir()]
