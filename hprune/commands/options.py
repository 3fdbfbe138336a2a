"""Click options that several commands share, each spelled and explained once.

Only light imports here: ``hprune --help`` imports no command module, and a command's
module is imported without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from hprune.contracts.variants import QUANTIZATION_SCHEMES
from hprune.errors import UserError


def stacked(*decorators: Callable) -> Callable:
    """Several click options as one decorator, listed in ``--help`` in the order given."""

    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def prompt_file_options(*, required: bool = True) -> Callable:
    """--prompts FILE [--per-category N --sample-seed S]: read with
    hprune.contracts.prompts.read_prompts (``required=False`` for a group whose subcommands
    take no prompts; the group then checks it)."""
    return stacked(
        click.option(
            "--prompts",
            "prompts_file",
            type=click.Path(path_type=Path),
            required=required,
            help="Prompt file: GenEval .jsonl, PartiPrompts .tsv, HPSv2 .json, .txt or .csv.",
        ),
        click.option(
            "--per-category",
            type=int,
            default=None,
            help="Keep a seeded sample of N prompts per category.",
        ),
        click.option(
            "--sample-seed", default=0, show_default=True, help="Seed of the --per-category sample."
        ),
    )


prompt_options = prompt_file_options()

ablation_option = click.option(
    "--ablation",
    type=click.Choice(["identity", "zero"]),
    default=None,
    help="What a removed attention or feed-forward computes: identity (returns its input, as "
    "HierarchicalPrune's reference does; the default) or zero (adds nothing).",
)

seeds_option = click.option(
    "--seeds", default="0", show_default=True, help="Seeds, e.g. 0-3 or 0,5,7-9."
)

overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")


def scheme_option(help: str, *, required: bool = False) -> Callable:
    """--scheme nf4|fp4|int8 (checked by generation.transforms.quantization, with a one-line error)."""
    return click.option(
        "--scheme",
        required=required,
        default=None,
        metavar="|".join(QUANTIZATION_SCHEMES),
        help=help,
    )


def metrics_out_options(redone: str) -> Callable:
    """--out metrics.csv, --overwrite, --merge (``redone``: how a replaced metric came again)."""
    return stacked(
        click.option(
            "--out", type=click.Path(path_type=Path), required=True, help="metrics.csv to write."
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing metrics file."),
        click.option(
            "--merge",
            is_flag=True,
            help=f"Add to an existing metrics file ({redone} metrics are replaced).",
        ),
    )


def metrics_write_mode(overwrite: bool, merge: bool) -> str:
    """The ``hprune.contracts.metrics.write_metrics`` mode of --overwrite / --merge."""
    if overwrite and merge:
        raise UserError("--overwrite and --merge exclude each other")
    return "overwrite" if overwrite else "merge" if merge else "error"
