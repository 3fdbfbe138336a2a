"""``hprune contrib``: the score drop for removing each block and each subcomponent;
``hprune contrib import``: the same file from published scores."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import (
    ablation_option,
    overwrite_option,
    prompt_file_options,
    seeds_option,
)


@click.group(invoke_without_command=True)
@click.option("--model", default=None, help="Pipeline directory or hub id.")
@prompt_file_options(required=False)
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
@click.option("--out", type=click.Path(path_type=Path), default=None, help="contrib.json to write.")
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
@ablation_option
@click.option("--batch-size", default=4, show_default=True, help="Images per pipeline call.")
@click.option("--dtype", default=None, help="float32, bf16 or fp16 (default: as stored).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@overwrite_option
@click.option(
    "--restart", is_flag=True, help="Ignore the journal of an interrupted run and start over."
)
@click.pass_context
def contrib(
    ctx: click.Context,
    model: str | None,
    prompts_file: Path | None,
    scorer: str,
    scorer_options: tuple[str, ...],
    out: Path | None,
    seeds: str,
    per_category: int | None,
    sample_seed: int,
    steps: int,
    guidance: float,
    height: int | None,
    width: int | None,
    max_sequence_length: int | None,
    parts: str,
    ablation: str | None,
    batch_size: int,
    dtype: str | None,
    device: str,
    overwrite: bool,
    restart: bool,
) -> None:
    """Contribution analysis: replace each block, and each subcomponent of each block, by an
    identity; render the prompts at the seeds; record the score and its drop against the
    unablated model in OUT. An interrupted run continues where it stopped.

    Needs --model, --prompts and --out. `hprune contrib import` makes the same file from
    published scores instead."""
    if ctx.invoked_subcommand is not None:
        return
    from generation.measurement.contrib import run_contrib
    from generation.measurement.rendering.stimuli import parse_seeds
    from hprune.contracts.prompts import read_prompts
    from hprune.errors import UserError

    missing = [
        name
        for name, value in (("--model", model), ("--prompts", prompts_file), ("--out", out))
        if value is None
    ]
    if missing:
        raise UserError(f"contribution analysis needs {', '.join(missing)}")
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
        ablation=ablation or "identity",
        dtype=dtype,
        device=device,
        overwrite=overwrite,
        restart=restart,
    )
    worst = sorted(result["entries"], key=lambda e: -e["drop"])[:5]
    click.echo(
        f"wrote {out}: {len(result['entries'])} parts ({result['ablation']} ablation), baseline "
        f"{result['scorer']['metric']} {result['baseline']['score']:.4f}; largest drops: "
        + ", ".join(f"{e['block']}:{e['component']} {e['drop']:.4f}" for e in worst)
    )


@contrib.command("import")
@click.option(
    "--blocks",
    type=click.Path(path_type=Path),
    required=True,
    help="CSV 'block,<metric change>': the score change when each whole block is removed.",
)
@click.option(
    "--components",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON {'<block><tab><part>': score} in the reference implementation's layout "
    "(e.g. ../shared/data/hierarchicalprune/sd35-large-turbo_subcomponent_hpsv2.json).",
)
@click.option(
    "--arch-config",
    type=click.Path(path_type=Path),
    required=True,
    help="The transformer config.json the scores belong to (parameters are counted from it).",
)
@click.option(
    "--baseline",
    type=float,
    default=None,
    help="Score of the unablated model [default: the components file's entry for a part its "
    "block does not have, e.g. SD3's last block's ff_context].",
)
@click.option(
    "--lower-is-better",
    is_flag=True,
    help="The metric is a loss or distance (default: higher is better, as HPSv2).",
)
@ablation_option
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="contrib.json to write."
)
@overwrite_option
def import_scores(
    blocks: Path,
    components: Path | None,
    arch_config: Path,
    baseline: float | None,
    lower_is_better: bool,
    ablation: str | None,
    out: Path,
    overwrite: bool,
) -> None:
    """Make a contrib.json from published contribution scores (no rendering), so that
    `hprune prune --plan hpp` can plan from the authors' measurements."""
    from generation.measurement.contrib_import import import_contributions

    result = import_contributions(
        blocks,
        arch_config,
        out,
        components=components,
        baseline=baseline,
        higher_is_better=not lower_is_better,
        ablation=ablation or "identity",
        overwrite=overwrite,
    )
    parts = sum(e["component"] != "block" for e in result["entries"])
    baseline_text = (
        f", baseline {result['baseline']['score']:.5f}"
        if result["baseline"]["score"] is not None
        else ""
    )
    click.echo(
        f"wrote {out}: {result['num_blocks']} blocks and {parts} subcomponents of a "
        f"{result['family']} model ({result['scorer']['metric']}{baseline_text})"
    )
