"""``hprune contrib``: the score drop for removing each block and each subcomponent."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import overwrite_option, prompt_options, seeds_option


@click.command()
@click.option("--model", required=True, help="Pipeline directory or hub id.")
@prompt_options
@click.option(
    "--scorer",
    default="fidelity",
    show_default=True,
    help="Scorer name; fidelity compares with the unablated model's image (see --scorer-option).",
)
@click.option(
    "--scorer-option",
    "scorer_options",
    multiple=True,
    help="KEY=VALUE option of the scorer, e.g. metric=psnr, metric=latent-mse (final latents, "
    "no VAE decode) or weights=DIR; repeatable.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="contrib.json to write."
)
@seeds_option
@click.option("--steps", default=4, show_default=True, help="Denoising steps per image.")
@click.option("--guidance", default=0.0, show_default=True, help="Guidance scale.")
@click.option("--height", type=int, default=None, help="Image height (default: the pipeline's).")
@click.option("--width", type=int, default=None, help="Image width (default: the pipeline's).")
@click.option(
    "--max-sequence-length", type=int, default=None, help="T5 tokens (default: the pipeline's)."
)
@click.option(
    "--parts",
    type=click.Choice(["all", "blocks", "subcomponents"]),
    default="all",
    show_default=True,
    help="Whole blocks, subcomponents, or both.",
)
@click.option("--batch-size", default=4, show_default=True, help="Images per pipeline call.")
@click.option("--dtype", default=None, help="float32, bf16 or fp16 (default: as stored).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@overwrite_option
@click.option(
    "--restart", is_flag=True, help="Ignore the journal of an interrupted run and start over."
)
def contrib(
    model: str,
    prompts_file: Path,
    scorer: str,
    scorer_options: tuple[str, ...],
    out: Path,
    seeds: str,
    per_category: int | None,
    sample_seed: int,
    steps: int,
    guidance: float,
    height: int | None,
    width: int | None,
    max_sequence_length: int | None,
    parts: str,
    batch_size: int,
    dtype: str | None,
    device: str,
    overwrite: bool,
    restart: bool,
) -> None:
    """Contribution analysis: replace each block, and each subcomponent of each block, by an
    identity; render the prompts at the seeds; record the score and its drop against the
    unablated model in OUT. An interrupted run continues where it stopped."""
    from generation.measurement.contrib import run_contrib
    from generation.measurement.rendering.stimuli import parse_seeds
    from hprune.contracts.prompts import read_prompts
    from hprune.errors import UserError

    options = {}
    for item in scorer_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --scorer-option {item!r}: use KEY=VALUE")
        options[key.strip()] = value
    result = run_contrib(
        model,
        read_prompts(prompts_file, per_category=per_category, seed=sample_seed),
        parse_seeds(seeds),
        out,
        scorer=scorer,
        scorer_options=options,
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        max_sequence_length=max_sequence_length,
        batch_size=batch_size,
        parts=parts,
        dtype=dtype,
        device=device,
        overwrite=overwrite,
        restart=restart,
    )
    worst = sorted(result["entries"], key=lambda e: -e["drop"])[:5]
    click.echo(
        f"wrote {out}: {len(result['entries'])} parts, baseline {result['scorer']['metric']} "
        f"{result['baseline']['score']:.4f}; largest drops: "
        + ", ".join(f"{e['block']}:{e['component']} {e['drop']:.4f}" for e in worst)
    )
