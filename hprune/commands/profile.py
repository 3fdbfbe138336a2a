"""``hprune profile``: weights bytes, parameters, peak memory and latency of a model."""

from __future__ import annotations

import click

from hprune.commands.options import overwrite_option, scheme_option


@click.command("profile")
@click.option("--model", default=None, help="Pipeline directory (or hub id) to profile.")
@click.option(
    "--arch-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="A full-size transformer config.json (e.g. ../shared/data/architectures/*.json): "
    "builds the transformer with random weights instead of loading one.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="profile.json to write."
)
@click.option(
    "--device",
    default=None,
    help="cpu, cuda, cuda:N or auto. With --arch-config also 'meta' (the default there): count "
    "parameters and bytes only, no memory used. Default for --model: auto.",
)
@click.option(
    "--dtype",
    default=None,
    help="Pipeline dtype. Default: as stored (--model), bfloat16 (--arch-config).",
)
@scheme_option(
    "--arch-config only: quantise the random-weight transformer (meta: count its bytes)."
)
@click.option(
    "--double-quant/--no-double-quant",
    default=True,
    show_default=True,
    help="--arch-config with a 4-bit --scheme: quantise the block scales too (bitsandbytes' "
    "default, as the paper's reference keeps it).",
)
@click.option(
    "--remove",
    default=None,
    metavar="BLOCKS",
    help="--arch-config only: delete these blocks first, e.g. 25-28,31-34 (the paper's 20% cut).",
)
@click.option("--steps", type=int, default=None, help="Denoising steps per image [2; arch: 4].")
@click.option("--height", type=int, default=64, show_default=True, help="--model: image height.")
@click.option("--width", type=int, default=64, show_default=True, help="--model: image width.")
@click.option("--guidance", type=float, default=None, help="--model: guidance scale.")
@click.option(
    "--max-sequence-length",
    type=int,
    default=None,
    help="--model: T5 tokens per prompt (default: the pipeline's, 256 for SD3).",
)
@click.option(
    "--latent-size",
    type=int,
    default=128,
    show_default=True,
    help="--arch-config: latent side (128 = a 1024x1024 image).",
)
@click.option(
    "--text-tokens",
    type=int,
    default=None,
    help="--arch-config: text sequence length [SD3: 333 (77 CLIP + 256 T5); FLUX.1-dev: 512; "
    "FLUX.1-schnell (no guidance embedding): 256].",
)
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs (median).")
@overwrite_option
def profile(**options) -> None:
    """Measure a model: weights bytes (stored tensors; packed bytes + quantisation state for
    bitsandbytes), parameters, peak memory and latency of one denoising step and of a whole
    image (median of --repeats runs after --warmup runs), on the CPU or CUDA."""
    from generation.measurement.profiling.command import run_profile, summary_line

    report = run_profile(**options)
    click.echo(summary_line(report))
