"""``hprune analyze``: the statistics of a human study and its report."""

from __future__ import annotations

import time
from pathlib import Path

import click

#: From this many responses on, the stages of the analysis print progress lines on stdout
#: (below it the whole analysis takes seconds).
PROGRESS_FROM = 20_000


def read_responses(source: str | Path, *, study: str | None = None):
    """Responses from an export file or folder, a pwcmp data set, or a study database URL.

    The analysis reads files; a database is read through the study package's exporter
    (which refuses a bad URL, a missing SQLite file or an unreachable server with a
    one-line error), and its table is checked by the same contract as a file.
    """
    from analysis.data import is_database_url
    from analysis.data import read_responses as read_responses_files
    from hprune.contracts.responses import validate_responses
    from hprune.errors import UserError

    if not is_database_url(str(source)):
        return read_responses_files(source, study=study)
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from study.export import export_responses  # Flask-free part of the study package
    except ImportError as exc:
        raise UserError(
            "reading a study database needs the study package's exporter "
            f"(study.export.export_responses): {exc}. Export the responses with "
            "'hprune study export' and pass the file instead."
        ) from exc
    try:
        frame = export_responses(str(source), study=study)
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the study database: {first}") from exc
    return validate_responses(frame, study=study)


def _csv_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _study_database_url() -> str:
    """The study database as 'hprune study' finds it (study.instance)."""
    from hprune.errors import UserError

    try:
        from study.instance import database_url, instance_folder
    except ImportError as exc:  # an install without the study extra
        raise UserError(
            f"--study-db needs the study package (pip install 'hprune[study]'): {exc}"
        ) from None
    return database_url(instance_folder())


@click.command("analyze")
@click.option(
    "--responses",
    "source",
    help="The responses export: responses.csv/.parquet, the export folder, a pwcmp CSV, or a "
    "study database URL (sqlite:///study.db, postgresql+psycopg://...).",
)
@click.option(
    "--study-db",
    is_flag=True,
    help="Read the responses from the study database that 'hprune study' uses (DATABASE_URL, "
    "else the SQLite file in the instance folder: HPRUNE_INSTANCE or its default).",
)
@click.option(
    "--metrics",
    "metrics_files",
    multiple=True,
    type=click.Path(),
    help="metrics.csv from 'hprune score' or an importer (repeat for several files).",
)
@click.option(
    "--stimuli",
    type=click.Path(),
    default=None,
    help="The stimulus folder (manifest.csv): checks that images and variants match, gives "
    "prompt categories (per-category fits) and the default reference variant.",
)
@click.option("--out", required=True, type=click.Path(), help="Report folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report folder.")
@click.option("--study", default=None, help="Which study, when the source holds several.")
@click.option(
    "--reference",
    default=None,
    help="Reference variant (e.g. the original): scores relative to it, MOS and metric "
    "degradation against it. Default: the stimuli's reference, else sum-zero scores.",
)
@click.option("--variants", default=None, help="Comma list of known variants; others are an error.")
@click.option(
    "--ties",
    type=click.Choice(["auto", "davidson", "half", "drop"]),
    default="auto",
    show_default=True,
    help="Ties: Davidson's model when present (auto), split half and half, or dropped.",
)
@click.option(
    "--position/--no-position",
    default=None,
    help="Left/right covariate. Default: fitted when the data record sides and the design "
    "identifies it (else left out with a warning naming the pairs); --position refuses "
    "instead.",
)
@click.option(
    "--prior",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="L2 prior precision on the Bradley-Terry scores only (0 = maximum likelihood); the "
    "report shows the fit without it beside.",
)
@click.option(
    "--bias-reduction",
    is_flag=True,
    help="Firth's bias-reduced Bradley-Terry (R BradleyTerry2 br = TRUE): finite, less biased "
    "scores for small samples; two-outcome data (--ties half or drop).",
)
@click.option(
    "--jod-prior",
    type=click.Choice(["none", "gaussian"]),
    default="none",
    show_default=True,
    help="Thurstone JOD scaling: maximum likelihood, or pwcmp's Gaussian distance prior.",
)
@click.option(
    "--scenes",
    type=click.Choice(["prompt", "category"]),
    default=None,
    help="Also scale JOD per scene (prompt, or category from --stimuli), and scale scenes "
    "separately in the outlier analysis, as pwcmp does.",
)
@click.option(
    "--spec",
    type=click.Path(),
    default=None,
    help="The study.yaml: its attention.max_failures sets how many failed gold trials are "
    "tolerated (default: the export's attention_max_failures column, else 0).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Cluster-bootstrap rounds (0 = Hessian intervals only).",
)
@click.option("--bootstrap-prompts", is_flag=True, help="Resample prompts as well as participants.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Bootstrap processes [default: all available cores].",
)
@click.option(
    "--level",
    type=click.FloatRange(0.5, 0.999),
    default=0.95,
    show_default=True,
    help="Interval level.",
)
@click.option(
    "--correction",
    type=click.Choice(["holm", "bh", "bonferroni", "none"]),
    default="holm",
    show_default=True,
    help="Multiplicity correction of the pairwise tests.",
)
@click.option(
    "--mixed-models/--no-mixed-models",
    default=True,
    show_default=True,
    help="Fit the mixed logit and the MOS mixed model (slowest part on large studies).",
)
@click.option(
    "--exclusions/--no-exclusions",
    default=True,
    show_default=True,
    help="Exclude participants who fail quality control (the report shows both versions).",
)
@click.option(
    "--min-rt-ms",
    type=float,
    default=400.0,
    show_default=True,
    help="Answers faster than this are too fast.",
)
@click.option(
    "--max-fast-fraction",
    type=float,
    default=0.25,
    show_default=True,
    help="Exclude above this share of too-fast answers.",
)
@click.option(
    "--max-attention-failures",
    type=click.IntRange(min=0),
    default=None,
    help="Exclude above this many failed gold trials [default: the study's own policy].",
)
@click.option(
    "--outlier-rule",
    type=click.Choice(["calibrated", "pwcmp"]),
    default="calibrated",
    show_default=True,
    help="Leave-one-out likelihood outliers: calibrated (p < --outlier-alpha against the "
    "others' scaling) or pwcmp's dist_L > --outlier-distance.",
)
@click.option(
    "--outlier-alpha",
    type=click.FloatRange(0, 1),
    default=0.005,
    show_default=True,
    help="Per-participant false-alarm rate of the calibrated outlier rule.",
)
@click.option(
    "--outlier-distance",
    type=click.FloatRange(min=0),
    default=1.5,
    show_default=True,
    help="pwcmp's threshold on dist_L (interquartile ranges below the first quartile).",
)
@click.option(
    "--min-trials",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Fewer pair trials (or screened ratings): the participant is not assessed.",
)
@click.option(
    "--bt500/--no-bt500",
    default=True,
    show_default=True,
    help="Exclude rating observers that ITU-R BT.500's screening rejects.",
)
@click.option(
    "--exclude-position-bias", is_flag=True, help="Also exclude significant position bias."
)
@click.option(
    "--max-circular-fraction",
    type=float,
    default=None,
    help="Also exclude above this share of circular triads.",
)
@click.option(
    "--min-consistency",
    type=float,
    default=None,
    help="Also exclude below this repeated-pair consistency.",
)
@click.option("--title", default="Human study analysis", show_default=True, help="Report title.")
def analyze(source, study_db, metrics_files, stimuli, out, overwrite, study, reference, variants,
            ties, position, prior, bias_reduction, jod_prior, scenes, spec, rounds,
            bootstrap_prompts, seed, workers, level, correction, mixed_models, exclusions,
            min_rt_ms, max_fast_fraction, max_attention_failures, outlier_rule, outlier_alpha,
            outlier_distance, min_trials, bt500, exclude_position_bias, max_circular_fraction,
            min_consistency, title) -> None:  # fmt: skip
    """Fit Bradley-Terry, Thurstone and MOS models with honest uncertainty, check quality,
    set humans against metrics, and write report/ (HTML, PNG, CSV, Parquet)."""
    from analysis.metrics_agreement import load_metrics
    from analysis.pipeline import AnalysisOptions, run_analysis
    from analysis.progress import Progress
    from analysis.provenance import check_against_stimuli, inputs_table
    from analysis.qc import QCOptions
    from analysis.report import write_report
    from hprune.errors import UserError

    if (source is None) == (not study_db):
        raise UserError("give the responses with either --responses or --study-db")
    if study_db:
        source = _study_database_url()
    if Path(out).exists() and not overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    if spec is not None and max_attention_failures is None:
        from study.spec import load_spec

        max_attention_failures = load_spec(spec).attention.max_failures
    started = time.perf_counter()
    responses = read_responses(source, study=study)
    progress = len(responses) >= PROGRESS_FROM
    if progress:
        click.echo(
            f"analyze: read {len(responses):,} responses in {time.perf_counter() - started:.1f} s"
        )
    metrics = load_metrics(metrics_files) if metrics_files else None
    categories, known = None, _csv_list(variants)
    if stimuli is not None:
        categories, stimulus_variants, stimulus_reference = check_against_stimuli(
            responses, stimuli
        )
        known = known or stimulus_variants
        reference = reference or stimulus_reference
    options = AnalysisOptions(
        reference=reference,
        ties=ties,
        position=position,
        prior=prior,
        bias_reduction=bias_reduction,
        jod_prior=jod_prior,
        scenes=scenes,
        rounds=rounds,
        bootstrap_prompts=bootstrap_prompts,
        seed=seed,
        workers=workers,
        level=level,
        correction=correction,
        mixed_models=mixed_models,
        exclusions=exclusions,
        qc=QCOptions(
            min_rt_ms=min_rt_ms,
            max_fast_fraction=max_fast_fraction,
            max_attention_failures=max_attention_failures,
            outlier_rule=outlier_rule,
            outlier_alpha=outlier_alpha,
            outlier_distance=outlier_distance,
            min_trials=min_trials,
            bt500=bt500,
            exclude_position_bias=exclude_position_bias,
            max_circular_fraction=max_circular_fraction,
            min_consistency=min_consistency,
        ),
        known_variants=known,
        progress=progress,
    )
    result = run_analysis(
        responses,
        options,
        metrics=metrics,
        categories=categories,
        provenance=inputs_table(source, metrics_files, stimuli),
    )
    with Progress(progress).stage("writing the report"):
        path = write_report(result, out, overwrite=overwrite, title=title)
    for criterion, part in result.primary.pairs.items():
        ranking = ", ".join(
            f"{row.variant} {row.bt_score:+.2f}" for row in part.scores.itertuples(index=False)
        )
        click.echo(f"{criterion}: {ranking}")
        if part.prior_note:
            click.echo(f"{criterion}: {part.prior_note}")
    if result.primary.degradation is not None:
        for row in result.primary.degradation.itertuples(index=False):
            click.echo(
                f"{row.criterion}: perceived degradation of {row.variant} {100 * row.degradation:.1f}%"
            )
    click.echo(f"excluded {len(result.qc.excluded)} of {len(result.qc.participants)} participants")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {path}")
