"""``hprune study simulate``: simulated participants over real HTTP, answering from known
preferences by variant name or from the pixels of the images they are shown."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hprune.commands.study import _database_url, _require_current, _safe, where_options
from hprune.errors import UserError


def _parse_scores(text: str | None) -> dict[str, float]:
    scores: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            scores[name.strip()] = float(value)
        except ValueError:
            raise UserError(
                f"--scores wants name=value pairs separated by commas, got {part!r}"
            ) from None
    return scores


@click.command()
@where_options
@click.option("--participants", "-n", required=True, type=click.IntRange(1, 100_000))
@click.option("--url", default="http://127.0.0.1:5000", show_default=True, help="The study server.")
@click.option("--study", "study_name", help="Study name (needed when the database holds several).")
@click.option("--concurrency", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--observer",
    type=click.Choice(["names", "image-aware"]),
    default="names",
    show_default=True,
    help="names: a Bradley-Terry model over the variants' names (--scores); image-aware: judge "
    "the served images' pixels and the prompt shown (mini-GenEval's detector), never the names.",
)
@click.option(
    "--sharpness",
    default=4.0,
    show_default=True,
    type=click.FloatRange(0),
    help="image-aware: log-odds between a perfect image and a worthless one.",
)
@click.option(
    "--scores",
    help="True Bradley-Terry scores, e.g. 'original=0,hpp-20=-0.4' "
    "(default: --spacing apart, in the order of the variants' names).",
)
@click.option("--spacing", default=0.5, show_default=True, type=float)
@click.option(
    "--position-bias",
    default=0.2,
    show_default=True,
    type=float,
    help="Log-odds for the left image.",
)
@click.option("--lapse-rate", default=0.03, show_default=True, type=click.FloatRange(0, 1))
@click.option("--participant-sd", default=0.2, show_default=True, type=click.FloatRange(0))
@click.option(
    "--tie-strength",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Davidson tie parameter (0: never tie).",
)
@click.option(
    "--attention-failure-rate", default=0.02, show_default=True, type=click.FloatRange(0, 1)
)
@click.option("--rating-sd", default=0.7, show_default=True, type=click.FloatRange(0))
@click.option(
    "--think-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Mean pause before each answer.",
)
@click.option(
    "--fetch-images", is_flag=True, help="Download each trial's images, as a browser would."
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--truth-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the true model (JSON) here.",
)
def simulate(
    participants: int,
    url: str,
    study_name: str | None,
    concurrency: int,
    observer: str,
    sharpness: float,
    scores: str | None,
    spacing: float,
    position_bias: float,
    lapse_rate: float,
    participant_sd: float,
    tie_strength: float,
    attention_failure_rate: float,
    rating_sd: float,
    think_ms: float,
    fetch_images: bool,
    seed: int,
    truth_out: Path | None,
) -> None:
    """Drive simulated participants through a running study server.

    With --observer names (the default) their answers come from a known Bradley-Terry model
    (with participant noise, a left-position bias and lapses) and MOS ratings from a latent
    quality per variant. Participants are blind to variants, so the simulator reads which
    variant each image token shows from the study database (--db / DATABASE_URL); nothing a
    participant receives reveals it.

    With --observer image-aware each participant downloads the images of every trial from the
    server and judges their pixels, and the prompt when the trial shows it: mini-GenEval's
    correctness and fidelity to the prompt's objects, and how cleanly the shapes are drawn
    (shapes-world studies only), with the same noise, bias and lapses. It never learns a
    variant's name; the database tells it only which images are attention checks. A pilot
    and power tool: it checks a design and the analysis against what the images show, it
    does not replace people.

    Either way it marks its participants as simulated in the database: the exports never take
    them for Prolific participants.
    """
    import requests

    from hprune.fileio import atomic_write_text
    from study.simulate.driver import run_simulation
    from study.simulate.observer import ImagePreferences
    from study.simulate.oracle import StimulusOracle

    db_url = _database_url()
    _require_current(db_url)
    oracle = StimulusOracle.from_database(db_url, study_name)
    if not oracle.variants:
        raise UserError(f"the study in {_safe(db_url)} has no images")
    given = _parse_scores(scores)
    if observer == "image-aware":
        if given:
            raise UserError("--scores is for --observer names: image-aware observers judge pixels")
        from generation.shapes_world.judge import ShapesJudge

        preferences = ImagePreferences(
            ShapesJudge(),
            sharpness=sharpness,
            position_bias=position_bias,
            lapse_rate=lapse_rate,
            participant_sd=participant_sd,
            tie_strength=tie_strength,
            attention_failure_rate=attention_failure_rate,
            rating_sd=rating_sd,
        )
    else:
        preferences = _name_preferences(
            oracle.variants,
            given,
            spacing,
            position_bias=position_bias,
            lapse_rate=lapse_rate,
            participant_sd=participant_sd,
            tie_strength=tie_strength,
            attention_failure_rate=attention_failure_rate,
            rating_sd=rating_sd,
        )
    try:
        requests.get(url, timeout=10)  # any HTTP answer will do: the server is there
    except requests.RequestException as exc:
        raise UserError(f"cannot reach the study server at {url}: {type(exc).__name__}") from None
    if observer == "names":
        click.echo("true scores: " + ", ".join(f"{v}={s:g}" for v, s in preferences.scores.items()))
    else:
        click.echo(f"image-aware observers judging pixels (sharpness {sharpness:g})")
    report = run_simulation(
        oracle,
        preferences,
        base_url=url,
        participants=participants,
        concurrency=concurrency,
        seed=seed,
        think_ms=think_ms,
        fetch_images=fetch_images,
    )
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes().items()))
    click.echo(f"participants: {outcomes}")
    click.echo(
        f"answers: {report.answers} in {report.wall_seconds:.1f} s "
        f"({report.answers_per_second:.1f}/s); answer latency p50 {report.latency_ms(0.5):.1f} ms, "
        f"p99 {report.latency_ms(0.99):.1f} ms"
    )
    if truth_out is not None:
        atomic_write_text(truth_out, json.dumps(preferences.to_dict(), indent=2) + "\n")
        click.echo(f"true model written to {truth_out}")
    errors = report.errors()
    if errors:
        click.echo(f"{len(errors)} participants stopped on an error, e.g. {errors[0]}", err=True)
        raise SystemExit(1)


def _name_preferences(variants, given: dict[str, float], spacing: float, **options):
    """The name-based observers' truth: --scores, or --spacing apart in the names' order."""
    from study.simulate.observer import Preferences

    unknown = sorted(set(given) - set(variants))
    if unknown:
        raise UserError(
            f"--scores names variants the study does not have: {', '.join(unknown)} "
            f"(it has {', '.join(variants)})"
        )
    missing = sorted(set(variants) - set(given))
    if given and missing:
        raise UserError(f"--scores misses variants: {', '.join(missing)}")
    if given:
        return Preferences(given, **options)
    return Preferences.evenly_spaced(variants, spacing, **options)
