"""``hprune power``: participants needed to separate given score gaps, by simulation."""

from __future__ import annotations

import click


def _scores(scores: str | None, variants: int | None, gap: float | None):
    from hprune.errors import UserError

    if scores:
        names, values = [], []
        for item in scores.split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--scores wants name=score pairs, got {item!r}")
            try:
                values.append(float(value))
            except ValueError:
                raise UserError(f"--scores: {value!r} is not a number") from None
            names.append(name.strip())
        if len(set(names)) != len(names):
            raise UserError("--scores names a variant twice")
        return tuple(names), tuple(values)
    if variants is None or gap is None:
        raise UserError("give --scores name=score,... or both --variants K and --gap G")
    if variants < 2:
        raise UserError("a study needs at least two variants")
    return tuple(f"v{i}" for i in range(variants)), tuple(-gap * i for i in range(variants))


@click.command("power")
@click.option(
    "--scores",
    default=None,
    help="True scores, first = reference: 'original=0,hpp=-0.2,bk-sdm=-0.8'.",
)
@click.option("--variants", type=click.IntRange(min=2), default=None, help="Or: K variants ...")
@click.option("--gap", type=float, default=None, help="... evenly spaced by this gap.")
@click.option(
    "--scale",
    type=click.Choice(["logit", "jod"]),
    default="logit",
    show_default=True,
    help="Scores in Bradley-Terry logits or Thurstone JOD (1 JOD = 75% preference).",
)
@click.option(
    "--participants",
    default="10,20,40,80,160",
    show_default=True,
    help="Candidate numbers of participants.",
)
@click.option(
    "--trials", type=click.IntRange(min=1), required=True, help="Pair trials per participant."
)
@click.option("--prompts", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--pairs",
    type=click.Choice(["all", "reference"]),
    default="all",
    show_default=True,
    help="Which pairs the study shows.",
)
@click.option(
    "--targets",
    type=click.Choice(["reference", "all", "adjacent"]),
    default="reference",
    show_default=True,
    help="Which differences must be detected.",
)
@click.option(
    "--participant-sd",
    type=click.FloatRange(min=0),
    default=0.3,
    show_default=True,
    help="SD of each participant's own scores around the truth.",
)
@click.option("--lapse", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--position", type=float, default=0.0, show_default=True, help="Left bias (logit).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bh", "bonferroni", "none"]),
    default="holm",
    show_default=True,
)
@click.option("--power", "target", type=click.FloatRange(0, 1), default=0.8, show_default=True)
@click.option("--simulations", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Write the power table as CSV.")
def power(scores, variants, gap, scale, participants, trials, prompts, pairs, targets,
          participant_sd, lapse, position, alpha, correction, target, simulations, seed,
          out) -> None:  # fmt: skip
    """Simulate a planned pairwise study and report the power to detect the score gaps."""
    from analysis.power import COVERAGE_NOTE, PowerPlan, participants_needed, power_curve
    from hprune.errors import UserError
    from hprune.fileio import atomic_write_text

    names, values = _scores(scores, variants, gap)
    try:
        counts = sorted({int(n) for n in participants.split(",") if n.strip()})
    except ValueError:
        raise UserError(
            f"--participants wants a comma list of integers, got {participants!r}"
        ) from None
    if not counts or counts[0] < 2:
        raise UserError("--participants: every number must be at least 2")
    plan = PowerPlan(
        variants=names,
        scores=values,
        trials_per_participant=trials,
        n_prompts=prompts,
        pairs=pairs,
        targets=targets,
        scale=scale,
        participant_sd=participant_sd,
        lapse=lapse,
        position=position,
        alpha=alpha,
        correction=correction,
    )
    if pairs == "reference" and targets != "reference":
        raise UserError("with --pairs reference only differences to the reference are estimable")
    curve = power_curve(plan, counts, simulations=simulations, seed=seed, progress=True)
    shown = curve.drop(columns=["simulations"]).to_string(index=False, float_format="%.3f")
    click.echo(shown)
    click.echo(COVERAGE_NOTE)
    needed = participants_needed(curve, target)
    if needed is None:
        click.echo(f"none of {participants} participants reaches power {target:g} for every target")
    else:
        click.echo(f"participants needed for power {target:g} on every target difference: {needed}")
    if out:
        atomic_write_text(out, curve.to_csv(index=False))
