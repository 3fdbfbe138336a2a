"""``hprune prune``: HPP or a baseline at a parameter budget, or an explicit removal list."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import ablation_option, overwrite_option

METHODS = ["hpp", "bk-sdm", "bk-sdm-uniform", "koala"]


@click.command()
@click.option("--model", default=None, help="Pipeline directory (or hub id) to prune.")
@click.option(
    "--arch-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --dry-run instead of --model: plan for a full-size transformer config.json "
    "(e.g. ../shared/data/architectures/*.json), on the meta device, without weights.",
)
@click.option(
    "--plan",
    type=click.Choice(METHODS),
    default=None,
    help="Plan the removal at --budget (same as --method).",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="hpp (needs --contrib), bk-sdm (middle blocks), bk-sdm-uniform (evenly spaced blocks) "
    "or koala (blocks whose output is most like their input; needs --contrib).",
)
@click.option(
    "--budget",
    default=None,
    help="Fraction of the ORIGINAL transformer parameters to keep, 0 < F < 1 (0.8 = 20%% "
    "pruning), or the paper's level: moderate (0.8) or aggressive (0.71).",
)
@click.option(
    "--contrib",
    "contrib_file",
    type=click.Path(path_type=Path),
    default=None,
    help="contrib.json from 'hprune contrib' or 'hprune contrib import'.",
)
@click.option(
    "--remove",
    default=None,
    help="Explicit removal instead of a plan: block indices and inclusive ranges of the input "
    "model (25-28,31-34) and BLOCK:COMPONENT subcomponents (13:ff).",
)
@click.option(
    "--preset",
    type=click.Choice(["default", "sd35-large-turbo-paper"]),
    default="default",
    show_default=True,
    help="HPP rule settings (docs/hpp-rule.md); sd35-large-turbo-paper pins the reference's "
    "subcomponent region 13-18 with attn excluded. The options below override it.",
)
@click.option(
    "--critical-fraction",
    type=float,
    default=None,
    help="HPP: a block is critical (kept whole) when its drop >= this x the largest [0.25].",
)
@click.option(
    "--head-fraction",
    type=float,
    default=None,
    help="HPP: blocks before this fraction of the depth are never removed whole [0.5].",
)
@click.option(
    "--layout-fraction",
    type=float,
    default=None,
    help="HPP: blocks before this fraction of the depth lose no subcomponent [1/3].",
)
@click.option(
    "--block-floor",
    type=float,
    default=None,
    help="HPP: whole blocks go down to max(budget, this); subcomponents beyond [0.8].",
)
@click.option(
    "--sub-blocks",
    default=None,
    metavar="FIRST-LAST",
    help="HPP: blocks whose subcomponents may go, e.g. 13-18 [derived from the fractions].",
)
@click.option(
    "--exclude",
    default=None,
    help="HPP: subcomponents never removed, comma-separated, or 'none' [attn].",
)
@click.option(
    "--weighting",
    type=click.Choice(["paper", "exp-decay", "none"]),
    default=None,
    help="HPP position weighting of the whole-block order [paper: exp((i-|B|)/|B|)].",
)
@ablation_option
@click.option(
    "--ignore-fingerprint",
    is_flag=True,
    help="Accept a contrib.json measured on (or imported for) a different model of the same layout.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing (no weights).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output pipeline directory."
)
@overwrite_option
def prune(
    model: str | None,
    arch_config: Path | None,
    plan: str | None,
    method: str | None,
    budget: str | None,
    contrib_file: Path | None,
    remove: str | None,
    preset: str,
    critical_fraction: float | None,
    head_fraction: float | None,
    layout_fraction: float | None,
    block_floor: float | None,
    sub_blocks: str | None,
    exclude: str | None,
    weighting: str | None,
    ablation: str | None,
    ignore_fingerprint: bool,
    dry_run: bool,
    out: Path | None,
    overwrite: bool,
) -> None:
    """Prune MODEL's transformer and write a self-describing pipeline to OUT.

    The output reloads with plain DiffusionPipeline.from_pretrained: the config has the pruned
    block counts and, where subcomponents were removed, names them (a Pruned* class of
    generation.transforms.pruned_classes; import it first). The plan is printed and kept in
    OUT/transformer/hprune_record.json. With --dry-run only the plan is printed, computed on
    the meta device from MODEL's config or from --arch-config.
    """
    from generation.planning import bk_sdm_plan, hpp_plan, koala_plan
    from generation.planning.hpp import parse_budget
    from generation.recipes.prune import dry_run_plan, prune_model
    from generation.transforms.plan import explicit_plan
    from hprune.errors import UserError

    if plan and method and plan != method:
        raise UserError(f"--plan {plan} and --method {method} disagree; give one of them")
    name = plan or method
    if (name is None) == (remove is None):
        raise UserError("give either --plan/--method with --budget, or --remove")
    if arch_config is not None and not dry_run:
        raise UserError("--arch-config plans without weights: add --dry-run")
    if (model is None) == (arch_config is None):
        raise UserError("give --model (or, with --dry-run, --arch-config)")
    if out is None and not dry_run:
        raise UserError("give --out (or --dry-run to only print the plan)")
    if remove is not None:
        if budget is not None or contrib_file is not None:
            raise UserError("--remove takes no --budget or --contrib")

        def make_plan(adapter, original):
            return explicit_plan(adapter, remove, original_parameters=original)

    else:
        if budget is None:
            raise UserError(f"--plan {name} needs --budget")
        fraction = parse_budget(budget)
        rule = _rule(preset, critical_fraction, head_fraction, layout_fraction, block_floor,
                     sub_blocks, exclude, weighting)  # fmt: skip
        contribution = None
        if name in ("hpp", "koala"):
            if contrib_file is None:
                raise UserError(f"--plan {name} needs --contrib contrib.json")
            contribution = _checked_contribution(contrib_file, model, ignore_fingerprint)
            if name == "hpp" and ablation is None:
                ablation = contribution.ablation  # remove parts as they were measured

        def make_plan(adapter, original):
            if name == "hpp":
                return hpp_plan(
                    adapter, contribution, fraction, original_parameters=original, rule=rule
                )
            if name == "koala":
                return koala_plan(adapter, contribution, fraction, original_parameters=original)
            layout = "uniform" if name == "bk-sdm-uniform" else "middle"
            return bk_sdm_plan(adapter, fraction, original_parameters=original, layout=layout)

    if dry_run:
        result = dry_run_plan(make_plan, model=model, arch_config=arch_config, ablation=ablation)
        click.echo(result.describe())
        click.echo("dry run: nothing written")
        return
    result, _ = prune_model(model, out, make_plan, ablation=ablation, overwrite=overwrite)
    click.echo(result.describe())
    click.echo(f"wrote pruned model to {out}")


def _rule(preset, critical, head, layout, floor, sub_blocks, exclude, weighting):
    """The preset's HPP rule with the options given on the command line."""
    import dataclasses

    from generation.planning.hpp import PRESETS
    from generation.transforms.plan import parse_removal
    from hprune.errors import UserError

    changes = {
        key: value
        for key, value in (
            ("critical_fraction", critical),
            ("head_fraction", head),
            ("layout_fraction", layout),
            ("block_floor", floor),
            ("weighting", weighting),
        )
        if value is not None
    }
    if sub_blocks is not None:
        blocks, parts = parse_removal(sub_blocks)
        if parts or blocks != list(range(blocks[0], blocks[-1] + 1)):
            raise UserError(f"--sub-blocks {sub_blocks!r}: give one range FIRST-LAST, e.g. 13-18")
        changes["sub_blocks"] = (blocks[0], blocks[-1])
    if exclude is not None:
        names = [] if exclude.strip().lower() == "none" else exclude.split(",")
        changes["exclude"] = tuple(n.strip() for n in names if n.strip())
    return dataclasses.replace(PRESETS[preset], **changes)


def _checked_contribution(path: Path, model: str | None, ignore_fingerprint: bool):
    """The contrib.json, checked against the model it will prune (fingerprint, or architecture
    for imported scores)."""
    from generation.measurement.contrib import read_contrib
    from generation.store.fingerprints import model_fingerprint
    from generation.store.loading import read_transformer_config, resolve_model_dir, transformer_dir
    from hprune.errors import UserError

    contribution = read_contrib(path)
    if model is None or ignore_fingerprint:
        return contribution
    if contribution.model_fingerprint is None:
        config = read_transformer_config(
            transformer_dir(resolve_model_dir(model, transformer_only=True))
        )
        differ = contribution.architecture_mismatch(config)
        if differ:
            raise UserError(
                f"{path} was imported for another architecture (it differs in {', '.join(differ)}); "
                "pass --ignore-fingerprint to use it anyway"
            )
        return contribution
    if contribution.model_fingerprint != model_fingerprint(model):
        raise UserError(
            f"{path} was measured on another model (fingerprint "
            f"{contribution.model_fingerprint}, this model {model_fingerprint(model)}); "
            "pass --ignore-fingerprint to use it anyway"
        )
    return contribution
