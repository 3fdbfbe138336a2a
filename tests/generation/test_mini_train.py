"""Training the mini teacher: the pipeline is a real SD3 pipeline, and a few steps reduce the loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from generation.mini import teacher
from generation.mini.train import (
    CaptionTable,
    TrainConfig,
    encode_dataset,
    train_transformer,
    train_vae,
    validation_loss,
)
from hprune.cli import main

# The teacher's architecture at a size a test can train in seconds.
SMALL = dataclasses.replace(
    teacher.TEACHER_SPEC, num_layers=2, vae_channels=(8, 8, 8), t5_layers=1, clip_layers=1
)


@pytest.fixture(scope="module")
def small_pipe():
    torch.set_num_threads(1)
    return teacher.build_teacher(SMALL, seed=0)


def test_teacher_is_a_genuine_sd3_pipeline() -> None:
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    pipe = teacher.build_teacher(seed=0)
    assert isinstance(pipe, StableDiffusion3Pipeline)
    assert isinstance(pipe.transformer, SD3Transformer2DModel)
    assert len(pipe.transformer.transformer_blocks) >= 12
    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(pipe.text_encoder_3, T5EncoderModel)
    # every caption word is one token, and the longest caption fits the text length
    ids = pipe.tokenizer("a photo of a purple triangle left of an orange circle").input_ids
    assert len(ids) == 11 + 2 <= teacher.TEXT_LENGTH
    assert pipe.tokenizer_max_length == teacher.TEXT_LENGTH


def test_a_few_training_steps_reduce_the_loss(small_pipe) -> None:
    config = TrainConfig(
        threads=1,
        vae_steps=3,
        vae_batch=4,
        num_samples=96,
        steps=40,
        batch_size=16,
        lr=2e-3,
        warmup=5,
        eval_every=0,
        log_every=10,
    )
    rows = []
    train_vae(small_pipe.vae, config, lambda **row: rows.append(row))
    assert small_pipe.vae.config.scaling_factor > 0
    latents, captions = encode_dataset(small_pipe.vae, config)
    assert latents.shape == (96, 4, 16, 16) and len(captions) == 96
    assert abs(float(latents.mean())) < 0.5  # normalised by the fitted shift and scale
    table = CaptionTable(small_pipe, captions)
    assert table.captions[0] == "" and set(captions) <= set(table.captions)
    before = validation_loss(small_pipe.transformer, latents, captions, table)
    frozen = [p.detach().clone() for p in small_pipe.text_encoder_3.parameters()]
    train_transformer(small_pipe, latents, captions, config, lambda **row: rows.append(row))
    after = validation_loss(small_pipe.transformer, latents, captions, table)
    assert after < 0.9 * before, (before, after)
    # the text encoders stay at their seeded initialisation
    assert all(
        torch.equal(a, b)
        for a, b in zip(frozen, small_pipe.text_encoder_3.parameters(), strict=True)
    )
    assert [r["step"] for r in rows if r.get("stage") == "mmdit"] == [10, 20, 30, 40]


def test_train_command_refuses_bad_numbers_and_existing_output(tmp_path) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["mini", "train", "--out", str(tmp_path / "t"), "--steps", "0"])
    assert bad.exit_code == 2 and "--steps must be positive" in bad.output
    (tmp_path / "exists").mkdir()
    taken = runner.invoke(main, ["mini", "train", "--out", str(tmp_path / "exists")])
    assert taken.exit_code == 2 and "already exists" in taken.output
