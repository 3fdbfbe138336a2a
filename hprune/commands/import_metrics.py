"""``hprune import-metrics``: metrics computed by other tools, into the tidy metrics.csv."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.commands.options import metrics_out_options, metrics_write_mode
from hprune.errors import UserError


@click.command("import-metrics")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["geneval", "csv", "jsonl"]),
    required=True,
    help="geneval: GenEval results.jsonl; csv/jsonl: per-image scores.",
)
@click.option(
    "--stimuli",
    type=click.Path(path_type=Path),
    required=True,
    help="The stimuli folder the scores belong to (its manifest gives the image ids).",
)
@click.option(
    "--variant", default=None, help="The variant every row belongs to (if not in the file)."
)
@click.option(
    "--metric", default=None, help="Metric name with its version, e.g. hpsv2.1 (csv/jsonl)."
)
@click.option(
    "--value-column", default=None, help="Column holding the values (default: value or score)."
)
@click.option("--lower-is-better", is_flag=True, help="Smaller values are better (csv/jsonl).")
@click.option("--version", "version", default="", help="Version of the metric's model or code.")
@click.option("--scale", default="", help="What the numbers mean, e.g. '0-1' or 'x100 cosine'.")
@metrics_out_options("re-imported")
def import_metrics(
    source: Path,
    fmt: str,
    stimuli: Path,
    out: Path,
    variant: str | None,
    metric: str | None,
    value_column: str | None,
    lower_is_better: bool,
    version: str,
    scale: str,
    overwrite: bool,
    merge: bool,
) -> None:
    """Convert SOURCE (GenEval results.jsonl or a per-image score table) into OUT.

    Per-image tables are keyed by image_id, or by prompt_id + seed + variant. GenEval image
    paths are read as .../[VARIANT/]<prompt index>/samples/<seed>.png.
    """
    from generation.measurement.metric_importers import import_geneval, import_scores
    from hprune.contracts.manifest import verify_manifest
    from hprune.contracts.metrics import write_metrics

    mode = metrics_write_mode(overwrite, merge)
    manifest = verify_manifest(stimuli, check_hashes=False)
    if fmt == "geneval":
        if metric or value_column or lower_is_better:
            raise UserError(
                "--metric, --value-column and --lower-is-better do not apply to GenEval results"
            )
        rows, infos, summaries = import_geneval(source, manifest, variant=variant)
    else:
        if source.suffix.lower().lstrip(".") not in (fmt, "ndjson" if fmt == "jsonl" else fmt):
            raise UserError(f"{source} does not end in .{fmt}")
        rows, infos = import_scores(
            source,
            manifest,
            metric=metric,
            value_column=value_column,
            variant=variant,
            higher_is_better=not lower_is_better,
            version=version,
            scale=scale,
        )
        summaries = {}
    write_metrics(out, rows, infos, mode=mode)
    click.echo(f"imported {len(rows)} rows ({', '.join(i.name for i in infos)}) into {out}")
    for name, summary in summaries.items():
        tasks = ", ".join(f"{tag} {value:.3f}" for tag, value in summary.tasks.items())
        click.echo(
            f"  {name}: GenEval {summary.overall:.3f} over {summary.n_images} images ({tasks})"
        )
