"""``hprune render``: matched image sets from every variant, with identical initial noise."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import prompt_options, seeds_option


@click.command()
@click.option(
    "--variants",
    "variants_file",
    type=click.Path(path_type=Path),
    required=True,
    help="variants.yaml: the models to compare and how each renders.",
)
@prompt_options
@seeds_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Stimuli folder.")
@click.option(
    "--batch-size",
    default="1",
    show_default=True,
    help="Images per pipeline call (one variant), or 'auto': as many as fit in free CUDA "
    "memory, measured on each variant's first image (4 off CUDA).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Delete and re-render images of variants or prompts that changed since they were rendered.",
)
@click.option("--device", default=None, help="torch device (default: accelerate's, e.g. cuda:N).")
def render(
    variants_file: Path,
    prompts_file: Path,
    seeds: str,
    out: Path,
    per_category: int | None,
    sample_seed: int,
    batch_size: str,
    force: bool,
    device: str | None,
) -> None:
    """Render every (variant, prompt, seed) into OUT: images plus manifest.csv.

    Every variant starts each (prompt, seed) from the same initial noise, made on the CPU
    from the seed, so images differ only by the model. An interrupted run resumes where it
    stopped. Shard it over processes or GPUs with

        accelerate launch [--num_processes N] -m hprune.cli render ...
    """
    from accelerate import PartialState

    from generation.measurement.rendering.sizing import parse_batch_size
    from generation.measurement.rendering.stimuli import parse_seeds, render_stimuli
    from hprune.contracts.prompts import read_prompts
    from hprune.contracts.variants import read_variants

    size = parse_batch_size(batch_size)
    seed_list = parse_seeds(seeds)
    variants = read_variants(variants_file)
    prompts = read_prompts(prompts_file, per_category=per_category, seed=sample_seed)
    summary = render_stimuli(
        variants, prompts, seed_list, out, force=force, batch_size=size, device=device
    )
    if PartialState().is_main_process:
        state = "complete" if summary.complete else "INCOMPLETE"
        click.echo(
            f"{out}: {summary.total} images ({len(variants)} variants x {len(prompts)} prompts x "
            f"{len(seed_list)} seeds), {summary.already_done} already there, {summary.rendered} "
            f"rendered here at {summary.images_per_second:.2f} images/s; {state}"
        )
        if size == "auto" and summary.batch_sizes:
            chosen = ", ".join(f"{name} {n}" for name, n in summary.batch_sizes.items())
            click.echo(f"batch size auto: {chosen}")
