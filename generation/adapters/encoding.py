"""What the transformer sees: text embeddings, VAE latents, and one denoising call, for SD3 and FLUX.

Distillation, profiling and the mini teacher's training run the transformers directly rather
than through a pipeline, and rendering encodes prompts once for many calls, so the pipeline's
conventions are restated here, beside the adapters that know the architectures, each in one
small function:

- text: the pipeline's own ``encode_prompt`` (SD3: CLIP-L + CLIP-G + T5; FLUX: CLIP + T5),
  without classifier-free-guidance negatives unless asked (rendering asks; training does not);
- latents: ``(vae.encode(x).latent_dist.mode() − shift_factor) · scaling_factor``, the same
  normalisation the pipelines undo before decoding. The distribution's mode, not a sample,
  so a cached latent and a freshly encoded one are identical;
- the call: SD3 takes latents (B, C, H, W) and ``timestep`` = σ·1000; FLUX takes 2×2 patches
  packed into tokens (B, HW/4, 4C), position ids, ``timestep`` = σ, and a guidance value when
  the model embeds one (FLUX-dev). Both predict the velocity ε − x0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from generation.adapters import get_adapter
from generation.flow_matching import timesteps_from_sigmas

TEXT_KEYS = ("prompt_embeds", "pooled_prompt_embeds")


@torch.no_grad()
def encode_text(
    pipe, captions: Sequence[str], *, max_sequence_length: int, negatives: bool = False
) -> dict[str, torch.Tensor]:
    """Per-caption ``prompt_embeds`` (B, L, D) and ``pooled_prompt_embeds`` (B, P), on the pipeline's device.

    The pipeline's own ``encode_prompt`` makes them, so they are what its ``__call__`` computes
    for the same captions; the keys are the ``__call__`` arguments that take them. With
    ``negatives`` (classifier-free guidance, SD3 only: FLUX embeds its guidance scale) the empty
    negative prompt's ``negative_prompt_embeds`` and ``negative_pooled_prompt_embeds`` too.
    """
    captions = list(captions)
    device = pipe.transformer.device if pipe.transformer is not None else None
    if get_adapter(pipe.transformer).family == "sd3":
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=captions,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=negatives,
            max_sequence_length=max_sequence_length,
        )
        text = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if negatives:
            text["negative_prompt_embeds"] = negative
            text["negative_pooled_prompt_embeds"] = negative_pooled
        return text
    embeds, pooled, _ = pipe.encode_prompt(
        prompt=captions, prompt_2=None, device=device, max_sequence_length=max_sequence_length
    )
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


@torch.no_grad()
def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised latents of images in [-1, 1], shape (B, 3, H, W) -> (B, C, H/8, W/8)."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    latents = vae.encode(pixels).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """FLUX tokens: (B, C, H, W) -> (B, H/2·W/2, 4C), each token one 2×2 patch (channel-major)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pack_latents`` for a latent grid of ``height`` × ``width``."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def latent_image_ids(height: int, width: int, *, device=None, dtype=None) -> torch.Tensor:
    """FLUX image-token position ids (H/2·W/2, 3): (0, row, column) of each 2×2 patch."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = torch.arange(height // 2)[:, None]
    ids[..., 2] = torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def predict_velocity(
    transformer,
    x_t: torch.Tensor,
    sigmas: torch.Tensor,
    text: dict[str, torch.Tensor],
    *,
    guidance: float = 3.5,
) -> torch.Tensor:
    """One transformer call: the velocity for noisy latents ``x_t`` (B, C, H, W), returned in that shape.

    ``guidance`` is used only by FLUX models with guidance embedding (FLUX-dev).
    """
    model = getattr(transformer, "module", transformer)  # the model inside a DDP/DeepSpeed wrapper
    # the first floating parameter: a bitsandbytes-quantised layer stores uint8/int8 weights
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    x_t = x_t.to(dtype)
    embeds = text["prompt_embeds"].to(dtype)
    pooled = text["pooled_prompt_embeds"].to(dtype)
    if get_adapter(model).family == "sd3":
        return transformer(
            hidden_states=x_t,
            timestep=timesteps_from_sigmas(sigmas).to(x_t.device, dtype),
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
    b, _, h, w = x_t.shape
    guidance_vec = None
    if model.config.guidance_embeds:
        guidance_vec = torch.full((b,), guidance, device=x_t.device, dtype=dtype)
    out = transformer(
        hidden_states=pack_latents(x_t),
        timestep=sigmas.to(x_t.device, dtype),
        guidance=guidance_vec,
        pooled_projections=pooled,
        encoder_hidden_states=embeds,
        txt_ids=torch.zeros(embeds.shape[1], 3, device=x_t.device, dtype=dtype),
        img_ids=latent_image_ids(h, w, device=x_t.device, dtype=dtype),
        return_dict=False,
    )[0]
    return unpack_latents(out, h, w)
