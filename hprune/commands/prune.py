"""``hprune prune``: HPP or a baseline at a parameter budget, or an explicit removal list."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import overwrite_option


@click.command()
@click.option("--model", required=True, help="Pipeline directory (or hub id) to prune.")
@click.option(
    "--plan",
    type=click.Choice(["hpp", "bk-sdm", "bk-sdm-uniform", "koala"]),
    default=None,
    help="Plan the removal at --budget (same as --method).",
)
@click.option(
    "--method",
    type=click.Choice(["hpp", "bk-sdm", "bk-sdm-uniform", "koala"]),
    default=None,
    help="hpp (needs --contrib), bk-sdm (middle blocks), bk-sdm-uniform (evenly spaced blocks) "
    "or koala (blocks whose output is most like their input; needs --contrib).",
)
@click.option(
    "--budget",
    type=float,
    default=None,
    help="Fraction of the ORIGINAL transformer parameters to keep, 0 < F < 1 (0.8 = 20%% pruning).",
)
@click.option(
    "--contrib",
    "contrib_file",
    type=click.Path(path_type=Path),
    default=None,
    help="contrib.json from 'hprune contrib'.",
)
@click.option(
    "--remove",
    default=None,
    help="Explicit removal instead of a plan: block indices and inclusive ranges of the input "
    "model (25-28,31-34) and BLOCK:COMPONENT subcomponents (13:ff).",
)
@click.option(
    "--weighting",
    default="exp-decay",
    show_default=True,
    help="HPP position weighting: exp-decay or none.",
)
@click.option(
    "--ignore-fingerprint",
    is_flag=True,
    help="Accept a contrib.json measured on a different model of the same layout.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output pipeline directory."
)
@overwrite_option
def prune(
    model: str,
    plan: str | None,
    method: str | None,
    budget: float | None,
    contrib_file: Path | None,
    remove: str | None,
    weighting: str,
    ignore_fingerprint: bool,
    out: Path,
    overwrite: bool,
) -> None:
    """Prune MODEL's transformer and write a self-describing pipeline to OUT.

    The output reloads with plain DiffusionPipeline.from_pretrained (config counts updated,
    removed subcomponents stored as neutral weights) and with hprune's loader, which also
    frees the removed subcomponents. The plan is printed and kept in
    OUT/transformer/hprune_record.json.
    """
    from generation.measurement.contrib import read_contrib
    from generation.planning import bk_sdm_plan, hpp_plan, koala_plan
    from generation.recipes.prune import prune_model
    from generation.store.fingerprints import model_fingerprint
    from generation.transforms.plan import check_budget, explicit_plan
    from hprune.errors import UserError

    if plan and method and plan != method:
        raise UserError(f"--plan {plan} and --method {method} disagree; give one of them")
    name = plan or method
    if (name is None) == (remove is None):
        raise UserError("give either --plan/--method with --budget, or --remove")
    if remove is not None:
        if budget is not None or contrib_file is not None:
            raise UserError("--remove takes no --budget or --contrib")

        def make_plan(adapter, original):
            return explicit_plan(adapter, remove, original_parameters=original)

    else:
        if budget is None:
            raise UserError(f"--plan {name} needs --budget")
        check_budget(budget)
        contribution = None
        if name in ("hpp", "koala"):
            if contrib_file is None:
                raise UserError(f"--plan {name} needs --contrib contrib.json")
            contribution = read_contrib(contrib_file)
            if not ignore_fingerprint and contribution.model_fingerprint != model_fingerprint(
                model
            ):
                raise UserError(
                    f"{contrib_file} was measured on another model (fingerprint "
                    f"{contribution.model_fingerprint}, this model {model_fingerprint(model)}); "
                    "pass --ignore-fingerprint to use it anyway"
                )

        def make_plan(adapter, original):
            if name == "hpp":
                return hpp_plan(
                    adapter, contribution, budget, original_parameters=original, weighting=weighting
                )
            if name == "koala":
                return koala_plan(adapter, contribution, budget, original_parameters=original)
            layout = "uniform" if name == "bk-sdm-uniform" else "middle"
            return bk_sdm_plan(adapter, budget, original_parameters=original, layout=layout)

    result, _ = prune_model(model, out, make_plan, overwrite=overwrite)
    click.echo(result.describe())
    click.echo(f"wrote pruned model to {out}")
