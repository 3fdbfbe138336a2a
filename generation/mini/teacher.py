"""The mini teacher: a genuine ``StableDiffusion3Pipeline``, built small for the shapes world.

Every component is the class SD3.5 uses, so every hprune code path runs on it unchanged:

- two CLIP text encoders with projection (``CLIPTextModelWithProjection``, in the roles of
  CLIP-L and CLIP-G) and a T5 encoder (``T5EncoderModel``), with tokenizers built locally
  over the shapes vocabulary by ``generation.store.tokenizers``; every caption word is one token;
- an ``AutoencoderKL`` with 4x downsampling: 64x64 RGB images <-> 4x16x16 latents,
  trained on the shapes (``generation.mini.train``);
- an MMDiT, ``SD3Transformer2DModel`` with ``TEACHER_SPEC.num_layers`` joint blocks, 2x2
  patches, so an image is 64 tokens beside 2 x ``TEXT_LENGTH`` text tokens;
- ``FlowMatchEulerDiscreteScheduler``.

The architecture is T1's toy SD3 pipeline (``generation.store.toy_models``) at the sizes below,
with tokenizers that stop at ``TEXT_LENGTH`` tokens: a caption has at most 13, and text
tokens cost as much compute as image tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from generation.mini import ASSETS
from generation.shapes_world.shapes import IMAGE_SIZE, VOCABULARY
from generation.store.toy_models import ToySpec

TEACHER_DIR = ASSETS / "teacher"
INFO_NAME = (
    "mini_teacher.json"  # sizes, render settings and training summary, beside model_index.json
)
TEXT_LENGTH = 16  # CLIP tokenizer length and T5 max_sequence_length
SCHEDULER_SHIFT = 1.0  # latents are 16x16: no resolution shift (SD3 uses 3.0 at 128x128)

TEACHER_SPEC = ToySpec(
    num_layers=12,
    num_attention_heads=2,
    attention_head_dim=32,
    qk_norm="rms_norm",  # as SD3.5; lets the MMDiT train at a high learning rate
    clip_hidden_size=32,
    clip_projection_dim=32,
    clip_layers=2,
    t5_d_model=64,
    t5_layers=2,
    latent_channels=4,
    vae_channels=(16, 32, 32),
    sample_size=IMAGE_SIZE,
    words=VOCABULARY,
)

# How the teacher renders (variants.yaml ``pipeline`` keys).
RENDER_OPTIONS = {
    "steps": 20,
    "guidance": 4.0,
    "resolution": IMAGE_SIZE,
    "max_sequence_length": TEXT_LENGTH,
}


def build_teacher(spec: ToySpec = TEACHER_SPEC, *, seed: int = 0):
    """The untrained teacher pipeline: random weights from ``seed``, in eval mode."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from generation.store.tokenizers import build_clip_tokenizer
    from generation.store.toy_models import build_toy_pipeline

    pipe = build_toy_pipeline("sd3", seed=seed, spec=spec)
    pipe.register_modules(
        tokenizer=build_clip_tokenizer(spec.words, max_length=TEXT_LENGTH),
        tokenizer_2=build_clip_tokenizer(spec.words, max_length=TEXT_LENGTH),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT),
    )
    pipe.tokenizer_max_length = TEXT_LENGTH
    adaln_zero_(pipe.transformer)
    return pipe


def adaln_zero_(transformer) -> None:
    """DiT's adaLN-Zero initialisation (Peebles & Xie, 2023): every block starts as the identity.

    The modulation layers of each block (``norm1``, ``norm1_context``) and of the output
    (``norm_out``), and the output projection, start at zero: gates are 0, so each block
    passes its input through, and the model predicts 0. Small diffusion transformers train
    markedly faster from here than from diffusers' default initialisation.
    """
    import torch

    layers = [transformer.norm_out.linear, transformer.proj_out]
    for block in transformer.transformer_blocks:
        layers += [block.norm1.linear, block.norm1_context.linear]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()


def teacher_variant(model: str | Path = TEACHER_DIR, name: str = "original", **options):
    """A ``hprune.contracts.variants.Variant`` that renders ``model`` with ``RENDER_OPTIONS`` (overridable)."""
    from hprune.contracts.variants import PipelineOptions, Variant

    options = {**RENDER_OPTIONS, **options}
    pipeline = PipelineOptions(
        steps=options["steps"],
        guidance=options["guidance"],
        height=options["resolution"],
        width=options["resolution"],
        max_sequence_length=options["max_sequence_length"],
    )
    return Variant(name=name, model=str(model), pipeline=pipeline)


def write_info(model_dir: str | Path, info: dict) -> None:
    """Write ``mini_teacher.json`` (spec, render options and whatever ``info`` adds)."""
    from hprune.fileio import atomic_write_text

    record = {"spec": asdict(TEACHER_SPEC), "render": RENDER_OPTIONS, **info}
    atomic_write_text(Path(model_dir) / INFO_NAME, json.dumps(record, indent=2) + "\n")


def read_info(model_dir: str | Path) -> dict:
    """The ``mini_teacher.json`` of a model folder, or {} when it has none (e.g. a pruned copy)."""
    path = Path(model_dir) / INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}
