"""Toy pipelines: complete, offline, loadable with plain diffusers, deterministic renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from generation.store.tokenizers import build_clip_tokenizer, build_t5_tokenizer, clip_bpe_tables
from hprune.cli import main

WORDS = ["red", "green", "blue", "bluegreen", "circle", "circles", "triangle", "tri", "a", "of"]


def test_every_word_is_one_token_in_both_tokenizers() -> None:
    clip = build_clip_tokenizer(WORDS)
    t5 = build_t5_tokenizer(WORDS)
    for word in WORDS:
        assert clip.tokenize(word) == [word + "</w>"]
        assert t5.tokenize(word) == ["▁" + word]


def test_unknown_words_still_tokenize_without_unk() -> None:
    clip = build_clip_tokenizer(WORDS)
    t5 = build_t5_tokenizer(WORDS)
    text = "Zebra 42, purple!"
    assert clip.unk_token_id not in clip(text).input_ids[1:-1]
    assert t5.unk_token_id not in t5(text).input_ids
    assert (
        clip.decode(clip(text).input_ids, skip_special_tokens=True).replace(" ", "")
        == "zebra42,purple!"
    )


def test_bpe_tables_are_deterministic_and_tuples() -> None:
    vocab, merges = clip_bpe_tables(WORDS)
    assert (vocab, merges) == clip_bpe_tables(list(WORDS))
    assert all(isinstance(m, tuple) and len(m) == 2 for m in merges)
    assert len(set(vocab.values())) == len(vocab)


@pytest.mark.parametrize("arch", ["sd3", "sd35", "flux"])
def test_toy_pipeline_loads_with_plain_diffusers_and_renders_64px_in_2_steps(arch, toy_model_dir):
    from diffusers import DiffusionPipeline

    from generation.store.toy_models import build_toy_pipeline

    pipe = DiffusionPipeline.from_pretrained(toy_model_dir(arch))
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    out = pipe("a photo of a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
    image = out.images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0
    again = pipe("a photo of a red circle", generator=torch.Generator().manual_seed(3), **kwargs)
    np.testing.assert_array_equal(again.images[0], image)
    fresh = build_toy_pipeline(arch)  # the same seed gives the same weights on every machine
    assert all(not m.training for m in fresh.components.values() if isinstance(m, torch.nn.Module))
    for name, module in fresh.components.items():
        if isinstance(module, torch.nn.Module):
            stored = getattr(pipe, name).state_dict()
            for key, value in module.state_dict().items():
                assert torch.equal(stored[key], value), (name, key)


def test_toy_architectures_have_the_documented_layout(toy_model_dir) -> None:
    from generation.adapters import get_adapter
    from generation.store.loading import load_transformer

    sd3 = get_adapter(load_transformer(toy_model_dir("sd3")))
    sd35 = get_adapter(load_transformer(toy_model_dir("sd35")))
    flux = get_adapter(load_transformer(toy_model_dir("flux")))
    assert sd3.config_counts() == {"transformer_blocks": 8}
    assert tuple(sd35.transformer.config.dual_attention_layers) == (0, 1, 2)
    dual = [sd35.block(i).attn2 is not None for i in range(sd35.num_blocks)]
    assert dual == [True] * 3 + [False] * 5
    assert sd35.component_params(0, "attn") > sd35.component_params(3, "attn")  # attn + attn2
    assert flux.config_counts() == {"transformer_blocks": 4, "single_transformer_blocks": 8}
    assert flux.num_blocks == 12


def test_toy_model_command_writes_a_pipeline_and_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "toy"
    runner = CliRunner()
    result = runner.invoke(main, ["toy-model", "--arch", "flux", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model_index.json").is_file()
    assert (out / "transformer" / "hprune_record.json").is_file()
    before = sorted(p.name for p in out.iterdir())
    again = runner.invoke(main, ["toy-model", "--arch", "flux", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert sorted(p.name for p in out.iterdir()) == before
    bad = runner.invoke(main, ["toy-model", "--arch", "sdxl", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and not (tmp_path / "x").exists()
