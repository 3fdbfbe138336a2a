"""One batch of images from a pipeline, every variant drawing a (prompt, seed) from the same noise.

The heart of a fair comparison is that two images of the same prompt and seed differ
only by the model. So the initial latents are made here, on the CPU, from the seed
alone (``torch.Generator("cpu").manual_seed(seed)``, in float32, shaped and packed by the
pipeline's own ``prepare_latents``) and passed to the pipeline as ``latents=``: the
noise is then the same for every variant of a latent shape, on every device and in
every batch composition.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from generation.adapters.encoding import encode_text
from generation.store.loading import load_pipeline
from generation.transforms.quantization import is_quantized, quantize_transformer
from hprune.contracts.variants import Variant, local_model_dir
from hprune.errors import UserError


def initial_latents(pipe, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """The starting noise for ``seeds``, one seed per row, made on the CPU in float32.

    The pipeline's own ``prepare_latents`` gives the shape (and FLUX's 2x2 packing); each
    row comes from its own generator, so a row does not depend on the rest of the batch.
    """
    channels = pipe.transformer.config.in_channels
    if _is_flux(pipe):
        channels //= 4  # FLUX packs 2x2 latent patches into the transformer's channels
    rows = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(int(seed))
        latents = pipe.prepare_latents(1, channels, height, width, torch.float32, "cpu", generator)
        rows.append(latents[0] if isinstance(latents, tuple) else latents)
    return torch.cat(rows)


def load_variant_pipeline(variant: Variant, *, device: str = "cpu"):
    """The variant's pipeline on ``device``: its dtype, scheduler and quantisation applied."""
    dtype = getattr(torch, variant.dtype)
    pipe = load_pipeline(local_model_dir(variant.model), dtype=dtype, device=device)
    options = variant.pipeline
    if options.scheduler is not None:
        import diffusers

        cls = getattr(diffusers, options.scheduler)
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **options.scheduler_options)
    if variant.quantization is not None:
        _quantize(pipe, variant, dtype=dtype, device=device)
    multiple = pipe.vae_scale_factor * (2 if _is_flux(pipe) else getattr(pipe, "patch_size", 1))
    if options.height % multiple or options.width % multiple:
        raise UserError(
            f"variant {variant.name!r}: resolution {options.height}x{options.width} must be a "
            f"multiple of {multiple} for this model"
        )
    return pipe


def _quantize(pipe, variant: Variant, *, dtype: torch.dtype, device: str) -> None:
    transformer = pipe.transformer
    if is_quantized(transformer):
        spec = getattr(transformer, "hprune_quantization", None)
        if spec is not None and spec.scheme != variant.quantization:
            raise UserError(
                f"variant {variant.name!r}: the model is already quantised to {spec.scheme}, "
                f"not {variant.quantization}"
            )
        return
    quantize_transformer(
        transformer, variant.quantization, dtype=dtype, device=device, progress=False
    )


def render_batch(
    pipe,
    variant: Variant,
    items: Sequence[tuple[str, int]],
    *,
    inputs: BatchInputs | None = None,
    output_type: str = "pil",
) -> list:
    """Images for ``items`` = [(prompt text, seed), ...] with the variant's options.

    ``inputs`` (from :func:`prepare_batch` for the same items) gives the text conditioning
    and the starting noise ready-made, so the text encoders do not run again; the images are
    those of the plain call. ``output_type="latent"`` returns the final latents (one float32
    CPU tensor per item, before the VAE; FLUX's packed) instead of PIL images.
    """
    options = variant.pipeline
    seeds = [seed for _, seed in items]
    kwargs = {}
    if inputs is None:
        kwargs["prompt"] = [text for text, _ in items]
        latents = initial_latents(pipe, seeds, options.height, options.width)
    else:
        if list(inputs.seeds) != seeds:
            raise ValueError("the prepared inputs belong to other items")
        device = pipe._execution_device
        kwargs.update({name: t.to(device) for name, t in inputs.conditioning.items()})
        latents = inputs.latents.clone()  # a scheduler may update its sample in place
    if options.max_sequence_length is not None:
        kwargs["max_sequence_length"] = options.max_sequence_length
    with torch.inference_mode():
        result = pipe(
            num_inference_steps=options.steps,
            guidance_scale=options.guidance,
            height=options.height,
            width=options.width,
            latents=latents,
            # for schedulers that draw noise during sampling: also from the seed, on the CPU
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            output_type=output_type,
            **kwargs,
        )
    if output_type == "latent":
        return [latent.float().cpu() for latent in result.images]
    return list(result.images)


@dataclass(frozen=True)
class BatchInputs:
    """What one pipeline call takes besides the transformer's work, computed once, on the CPU.

    ``conditioning`` is what the text encoders make of the prompts, as the keyword
    arguments the pipeline accepts instead of ``prompt`` (``prompt_embeds``,
    ``pooled_prompt_embeds``, and under classifier-free guidance the ``negative_*`` pair);
    ``latents`` the starting noise of the seeds. Analyses that render the same items many
    times with the transformer changed (``hprune contrib``) reuse them.
    """

    seeds: tuple[int, ...]
    conditioning: dict[str, torch.Tensor]
    latents: torch.Tensor


def prepare_batch(pipe, variant: Variant, items: Sequence[tuple[str, int]]) -> BatchInputs:
    """The conditioning and starting noise of ``render_batch(pipe, variant, items)``.

    The prompts are encoded by the pipeline's own ``encode_prompt``, with the arguments and
    the batch its ``__call__`` would use, so the embeddings are exactly the plain call's.
    """
    options = variant.pipeline
    seeds = [seed for _, seed in items]
    length = options.max_sequence_length or _call_default(pipe, "max_sequence_length")
    conditioning = encode_text(
        pipe,
        [text for text, _ in items],
        max_sequence_length=length,
        negatives=options.guidance > 1,  # classifier-free guidance, as the pipeline decides
    )
    return BatchInputs(
        seeds=tuple(seeds),
        conditioning={name: t.to("cpu") for name, t in conditioning.items()},
        latents=initial_latents(pipe, seeds, options.height, options.width),
    )


def prepare_batches(
    pipe, variant: Variant, batches: Sequence[Sequence[tuple[str, int]]]
) -> list[BatchInputs]:
    """:func:`prepare_batch` for each batch; equal tensors (the empty negative prompt's rows,
    the same in every batch of a size) are kept once."""
    kept: list[torch.Tensor] = []

    def once(tensor: torch.Tensor) -> torch.Tensor:
        for other in kept:
            if other.shape == tensor.shape and torch.equal(other, tensor):
                return other
        kept.append(tensor)
        return tensor

    prepared = []
    for batch in batches:
        inputs = prepare_batch(pipe, variant, batch)
        conditioning = {
            name: once(t) if name.startswith("negative_") else t
            for name, t in inputs.conditioning.items()
        }
        prepared.append(replace(inputs, conditioning=conditioning))
    return prepared


def _call_default(pipe, name: str):
    """The default of one of the pipeline's ``__call__`` arguments."""
    return inspect.signature(type(pipe).__call__).parameters[name].default


def _is_flux(pipe) -> bool:
    return hasattr(pipe, "_pack_latents")
