"""``hprune score``: automatic metrics per image of a stimulus set, into a tidy metrics.csv."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hprune.commands.options import metrics_out_options, metrics_write_mode
from hprune.errors import UserError

WEIGHTS_ENV = "HPRUNE_WEIGHTS_DIR"


@click.command()
@click.option(
    "--stimuli",
    type=click.Path(path_type=Path),
    required=True,
    help="Stimuli folder written by 'hprune render'.",
)
@click.option(
    "--scorer",
    "scorers",
    required=True,
    help="Scorer name(s), comma-separated (see --list).",
)
@click.option(
    "--weights",
    multiple=True,
    help="Local weights of a learned scorer: DIR (one learned scorer) or NAME=DIR; repeatable. "
    f"Default: ${WEIGHTS_ENV}/NAME. Nothing is ever downloaded.",
)
@click.option(
    "--device", default="cpu", show_default=True, help="torch device for learned scorers."
)
@click.option("--batch-size", default=16, show_default=True, help="Images per scorer call.")
@metrics_out_options("re-scored")
def score(
    stimuli: Path,
    scorers: str,
    out: Path,
    weights: tuple[str, ...],
    device: str,
    batch_size: int,
    overwrite: bool,
    merge: bool,
) -> None:
    """Score every image in STIMULI with the named scorers and write OUT (+ OUT's .json description).

    Reference scorers (ssim-vs-original, psnr-vs-original) compare each image with the
    reference variant's image of the same prompt and seed.
    """
    from generation.measurement.scorers import available_scorers
    from generation.measurement.scoring import score_stimuli
    from hprune.contracts.metrics import write_metrics

    mode = metrics_write_mode(overwrite, merge)
    names = [name.strip() for name in scorers.split(",") if name.strip()]
    known = available_scorers()
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        raise UserError(f"unknown scorer {(unknown or [''])[0]!r} (available: {', '.join(known)})")
    if out.exists() and not (overwrite or merge):
        raise UserError(
            f"{out} already exists (pass --overwrite to replace it or --merge to add to it)"
        )
    options = scorer_options(names, weights, device=device)
    rows, infos = score_stimuli(stimuli, names, scorer_options=options, batch_size=batch_size)
    table = write_metrics(out, rows, infos, mode=mode)
    summary = ", ".join(
        f"{info.name} ({sum(1 for r in rows if r['metric'] == info.name)} images)" for info in infos
    )
    click.echo(f"wrote {len(table)} rows to {out}: {summary}")


def scorer_options(names: list[str], weights: tuple[str, ...], *, device: str) -> dict[str, dict]:
    """Per-scorer options: the weights directory of each learned scorer, and the device."""
    from generation.measurement.scorers.learned import LEARNED_SCORERS

    learned = [name for name in names if name in LEARNED_SCORERS]
    given: dict[str, Path] = {}
    for value in weights:
        name, sep, directory = value.partition("=")
        if sep:
            given[name.strip()] = Path(directory)
        elif len(learned) == 1:
            given[learned[0]] = Path(value)
        else:
            raise UserError(
                "--weights DIR needs exactly one learned scorer; use --weights NAME=DIR"
            )
    stray = sorted(set(given) - set(learned))
    if stray:
        raise UserError(
            f"--weights given for {stray[0]!r}, which is not a learned scorer being run"
        )
    options: dict[str, dict] = {}
    for name in learned:
        directory = given.get(name)
        if directory is None and os.environ.get(WEIGHTS_ENV):
            directory = Path(os.environ[WEIGHTS_ENV]) / name
        if directory is None:
            raise UserError(
                f"scorer {name!r} needs local weights: pass --weights DIR or set ${WEIGHTS_ENV} "
                "(hprune never downloads scorer weights)"
            )
        options[name] = {"weights": directory, "device": device}
    return options
