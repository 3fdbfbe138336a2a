"""Tiny random-weight but complete diffusers pipelines: SD3, SD3.5 and FLUX.

A toy pipeline has every component of the real one (two CLIP and one T5 text
encoder for SD3, CLIP and T5 for FLUX, locally built tokenizers, a VAE, the
flow-matching scheduler and the MMDiT), so every code path that runs on
SD3.5 Large or FLUX.1 runs on it too, offline, in well under a second per
image on a laptop CPU. The weights are random: the images are noise, but
they are deterministic noise, which is all pruning and rendering tests need.

The dimension rules (design.md, "Tiny SD3 dimensions must line up"):
- SD3: ``joint_attention_dim`` = T5 ``d_model`` >= the sum of the CLIP hidden
  sizes; ``pooled_projection_dim`` = the sum of the CLIP projection sizes;
  ``caption_projection_dim`` = the transformer width.
- FLUX: ``sum(axes_dims_rope)`` = ``attention_head_dim``;
  ``pooled_projection_dim`` = the CLIP hidden size; ``in_channels`` = 4 x the
  VAE latent channels (2x2 patches are packed into channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from generation.adapters import record_for_transformer
from generation.model_record import write_record
from generation.quiet import quiet_progress
from generation.store.tokenizers import CLIP_MAX_LENGTH, build_clip_tokenizer, build_t5_tokenizer
from hprune.fileio import atomic_output_dir

Arch = Literal["sd3", "sd35", "flux"]
ARCHITECTURES: tuple[str, ...] = ("sd3", "sd35", "flux")

# The toy vocabulary: enough everyday words that test prompts and the GenEval
# and Parti reference prompts mostly tokenize as whole words.
TOY_WORDS: tuple[str, ...] = tuple(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "with",
        "on",
        "in",
        "under",
        "above",
        "below",
        "beside",
        "next",
        "to",
        "left",
        "right",
        "top",
        "bottom",
        "front",
        "behind",
        "photo",
        "picture",
        "painting",
        "drawing",
        "image",
        "close",
        "up",
        "view",
        "scene",
        "style",
        "realistic",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "gray",
        "grey",
        "circle",
        "square",
        "triangle",
        "shape",
        "object",
        "small",
        "large",
        "big",
        "tiny",
        "cat",
        "dog",
        "bird",
        "horse",
        "cow",
        "sheep",
        "person",
        "man",
        "woman",
        "child",
        "car",
        "bus",
        "truck",
        "bicycle",
        "boat",
        "train",
        "airplane",
        "tree",
        "flower",
        "house",
        "city",
        "street",
        "mountain",
        "river",
        "sea",
        "sky",
        "sun",
        "moon",
        "cup",
        "bottle",
        "chair",
        "table",
        "bed",
        "book",
        "clock",
        "phone",
        "computer",
        "apple",
        "banana",
        "pizza",
        "cake",
        "is",
        "are",
        "sitting",
        "standing",
        "holding",
        "near",
    ]
)


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """The sizes of a toy pipeline. The defaults keep a 64x64, 2-step render well under a second."""

    num_layers: int = 8  # SD3: joint blocks; FLUX: double-stream blocks
    num_single_layers: int = 8  # FLUX only
    dual_attention_layers: tuple[int, ...] = ()  # SD3.5 (MMDiT-X) only
    qk_norm: str | None = None
    num_attention_heads: int = 2
    attention_head_dim: int = 16
    clip_hidden_size: int = 32
    clip_projection_dim: int = 32
    clip_layers: int = 2
    t5_d_model: int = 64
    t5_layers: int = 2
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (8, 16, 16, 16)  # 4 levels: 8x downsampling, like the real VAEs
    sample_size: int = 64  # default image side in pixels
    words: tuple[str, ...] = TOY_WORDS


def default_spec(arch: Arch) -> ToySpec:
    """The spec ``hprune toy-model`` uses for each architecture."""
    if arch == "sd3":
        return ToySpec(num_layers=8)
    if arch == "sd35":
        # SD3.5-Medium-like: the first blocks are dual-attention (MMDiT-X), RMS q/k norm.
        return ToySpec(num_layers=8, dual_attention_layers=(0, 1, 2), qk_norm="rms_norm")
    if arch == "flux":
        return ToySpec(num_layers=4, num_single_layers=8)
    raise ValueError(f"unknown toy architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def _clip_text_encoder(spec: ToySpec, tokenizer, *, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.clip_hidden_size,
        intermediate_size=spec.clip_hidden_size * 2,
        num_hidden_layers=spec.clip_layers,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=spec.clip_projection_dim,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def _t5_encoder(spec: ToySpec, tokenizer):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=spec.t5_d_model,
        d_kv=16,
        d_ff=spec.t5_d_model * 2,
        num_layers=spec.t5_layers,
        num_heads=spec.t5_d_model // 16,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _vae(spec: ToySpec, *, flux: bool):
    from diffusers import AutoencoderKL

    levels = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=spec.vae_channels,
        layers_per_block=1,
        latent_channels=spec.latent_channels,
        norm_num_groups=min(spec.vae_channels),
        sample_size=spec.sample_size,
        scaling_factor=1.5 if flux else 1.5305,
        shift_factor=0.1159 if flux else 0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _vae_scale(spec: ToySpec) -> int:
    return 2 ** (len(spec.vae_channels) - 1)


def build_sd3_transformer(spec: ToySpec):
    """The toy ``SD3Transformer2DModel`` (SD3 or, with dual-attention layers, SD3.5)."""
    from diffusers import SD3Transformer2DModel

    clip_total = 2 * spec.clip_hidden_size
    if spec.t5_d_model < clip_total:
        raise ValueError("t5_d_model must be at least the sum of the two CLIP hidden sizes")
    latent_side = spec.sample_size // _vae_scale(spec)
    return SD3Transformer2DModel(
        sample_size=latent_side,
        patch_size=2,
        in_channels=spec.latent_channels,
        out_channels=spec.latent_channels,
        num_layers=spec.num_layers,
        attention_head_dim=spec.attention_head_dim,
        num_attention_heads=spec.num_attention_heads,
        joint_attention_dim=spec.t5_d_model,
        caption_projection_dim=spec.num_attention_heads * spec.attention_head_dim,
        pooled_projection_dim=2 * spec.clip_projection_dim,
        pos_embed_max_size=4 * latent_side,
        dual_attention_layers=tuple(spec.dual_attention_layers),
        qk_norm=spec.qk_norm,
    )


def build_flux_transformer(spec: ToySpec):
    """The toy ``FluxTransformer2DModel`` (FLUX.1-schnell-like: no guidance embedding)."""
    from diffusers import FluxTransformer2DModel

    head = spec.attention_head_dim
    if head % 4:
        raise ValueError("attention_head_dim must be a multiple of 4 for the FLUX rotary axes")
    axes = (head // 4, 3 * head // 8, head - head // 4 - 3 * head // 8)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * spec.latent_channels,
        num_layers=spec.num_layers,
        num_single_layers=spec.num_single_layers,
        attention_head_dim=head,
        num_attention_heads=spec.num_attention_heads,
        joint_attention_dim=spec.t5_d_model,
        pooled_projection_dim=spec.clip_hidden_size,
        guidance_embeds=False,
        axes_dims_rope=axes,
    )


def build_toy_pipeline(arch: Arch, *, seed: int = 0, spec: ToySpec | None = None):
    """A complete tiny random-weight pipeline of ``arch`` ("sd3", "sd35" or "flux"), in eval mode.

    The same ``arch``, ``seed`` and ``spec`` give the same weights on every machine.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    spec = spec or default_spec(arch)
    words: Sequence[str] = spec.words
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        clip = build_clip_tokenizer(words)
        t5 = build_t5_tokenizer(words)
        if arch in ("sd3", "sd35"):
            pipe = StableDiffusion3Pipeline(
                transformer=build_sd3_transformer(spec),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                vae=_vae(spec, flux=False),
                text_encoder=_clip_text_encoder(spec, clip, with_projection=True),
                tokenizer=clip,
                text_encoder_2=_clip_text_encoder(spec, clip, with_projection=True),
                tokenizer_2=build_clip_tokenizer(words),
                text_encoder_3=_t5_encoder(spec, t5),
                tokenizer_3=t5,
            )
        elif arch == "flux":
            pipe = FluxPipeline(
                transformer=build_flux_transformer(spec),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                vae=_vae(spec, flux=True),
                text_encoder=_clip_text_encoder(spec, clip, with_projection=False),
                tokenizer=clip,
                text_encoder_2=_t5_encoder(spec, t5),
                tokenizer_2=t5,
            )
        else:
            raise ValueError(
                f"unknown toy architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
    finally:
        torch.random.set_rng_state(generator_state)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_toy_pipeline(arch: Arch, out, *, seed: int = 0, overwrite: bool = False):
    """Build the toy pipeline of ``arch`` and write it (with its model record) to ``out``, atomically."""
    pipe = build_toy_pipeline(arch, seed=seed)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        with quiet_progress():
            pipe.save_pretrained(tmp)
        record = record_for_transformer(pipe.transformer).with_history(
            "toy-model", arch=arch, seed=seed
        )
        write_record(tmp, record)
    return Path(out)
