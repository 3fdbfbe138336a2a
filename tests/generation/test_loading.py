"""Loading from directories and hub ids, with one-line errors for everything a user can get wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from generation.store.fingerprints import file_sha256, model_fingerprint
from generation.store.loading import is_hub_id, load_pipeline, load_transformer
from hprune.errors import UserError


def test_load_pipeline_and_transformer_from_a_local_directory(sd3_toy_dir) -> None:
    pipe = load_pipeline(sd3_toy_dir)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert all(not m.training for m in pipe.components.values() if isinstance(m, torch.nn.Module))
    from_pipeline_dir = load_transformer(sd3_toy_dir)
    from_transformer_dir = load_transformer(sd3_toy_dir / "transformer", dtype="bf16")
    assert from_transformer_dir.dtype == torch.bfloat16
    for (name, a), (_, b) in zip(
        from_pipeline_dir.state_dict().items(), pipe.transformer.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_loading_and_rendering_are_quiet(sd3_toy_dir, capfd) -> None:
    """No deprecation warning, no library progress bars around hprune's own."""
    import warnings

    from generation.measurement.contrib import render
    from hprune.contracts.variants import PipelineOptions

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_pipeline(sd3_toy_dir, dtype=torch.float32)
        load_transformer(sd3_toy_dir, dtype="bf16")
        options = PipelineOptions(steps=2, guidance=0.0, height=32, width=32)
        render(pipe, [("a red circle", 0)], options, batch_size=1)
    assert not [w for w in caught if "dtype" in str(w.message)]
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err


def test_only_the_two_optional_package_notices_are_dropped() -> None:
    import logging

    from generation.quiet import OPTIONAL_PACKAGE_NOTICES

    for name, text in OPTIONAL_PACKAGE_NOTICES.items():
        logger = logging.getLogger(name)

        def record(message: str, logger=logger) -> logging.LogRecord:
            return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

        assert not logger.filter(record(f"`X` {text}; falling back"))
        assert logger.filter(record("Some weights of the checkpoint were not used"))


def test_hub_ids_are_recognised_and_offline_misses_are_clear(monkeypatch, tmp_path) -> None:
    assert is_hub_id("stabilityai/stable-diffusion-3.5-large-turbo")
    assert not is_hub_id("./models/x") and not is_hub_id("/abs/path") and not is_hub_id("a/b/c")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        UserError, match="HF_HUB_OFFLINE is set and the model is not in the local cache"
    ):
        load_pipeline("hprune-test/no-such-model")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_transformer("hprune-test/no-such-model")


@pytest.fixture()
def toy_copy(sd3_toy_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sd3_toy_dir, target)
    return target


def test_missing_and_non_model_directories(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        load_transformer(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"model_index\.json is missing"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(UserError, match=r"neither model_index\.json"):
        load_transformer(tmp_path / "empty")


def test_corrupt_index_config_and_weights(toy_copy) -> None:
    (toy_copy / "model_index.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt pipeline index"):
        load_pipeline(toy_copy)


def test_unknown_architecture_and_truncated_weights(toy_copy) -> None:
    config_path = toy_copy / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "_class_name": "NoSuchTransformer"}))
    with pytest.raises(UserError, match="unknown model class 'NoSuchTransformer'"):
        load_transformer(toy_copy)
    config_path.write_text(json.dumps(config))
    weights = toy_copy / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot load the transformer"):
        load_pipeline(toy_copy)
    weights.unlink()
    with pytest.raises(UserError, match="cannot load the transformer"):
        load_transformer(toy_copy)


def test_fingerprint_is_stable_ignores_the_record_and_follows_the_weights(toy_copy) -> None:
    first = model_fingerprint(toy_copy)
    assert first == model_fingerprint(toy_copy) and len(first) == 16
    record = toy_copy / "transformer" / "hprune_record.json"
    record.write_text(record.read_text().replace('"history": [', '"history": [{"stage": "x"},'))
    assert model_fingerprint(toy_copy) == first
    weights = toy_copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(toy_copy) != first


def test_unchanged_files_are_not_hashed_again(tmp_path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    stat = path.stat()
    cache = {
        str(path.resolve()): {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": "cached",
        }
    }
    assert file_sha256(path, cache=cache) == "cached"
    path.write_bytes(b"other weights")
    assert file_sha256(path, cache=cache) != "cached"
