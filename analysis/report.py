"""Write an analysis to report/: tables (CSV + Parquet), figures (PNG) and one offline HTML.

report/
  report.html        self-contained (figures embedded as base64): open it anywhere, offline
  warnings.txt       the labelled warnings, one per line (empty file: none)
  tables/<name>.csv and tables/<name>.parquet
  plots/<name>.png

Nothing here computes a statistic: it lays out what ``analysis.pipeline`` computed. The
output directory appears whole or not at all (``hprune.fileio.atomic_output_dir``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from analysis import plots
from analysis.intervals import MIN_COMPARISONS, MIN_EACH_OUTCOME
from analysis.metrics_agreement import variant_means
from analysis.pipeline import AnalysisResult, CriterionResult, DatasetResult, safe_name
from analysis.ranking import mos_ranking, pair_ranking
from hprune import __version__
from hprune.fileio import atomic_output_dir

#: Above this many participants the report's HTML links the table of every participant's
#: checks (CSV and Parquet, always written) instead of showing it: tens of thousands of
#: rows make a page nobody reads and cost most of the report's time.
SHOWN_PARTICIPANTS = 2000


def methods_text(result: AnalysisResult) -> list[str]:
    """The Methods paragraphs, written from the options and choices this analysis used."""
    o = result.options
    parts = list(result.primary.pairs.values())
    notes = []
    if parts:
        ties = sorted({p.ties for p in parts})
        tie_text = {
            "davidson": "ties follow Davidson's model (a tie parameter nu is estimated)",
            "half": "a tie counts as half a win for each side",
            "drop": "ties are left out" if o.ties == "drop" else "there were no ties",
        }
        fitted = [p.criterion for p in parts if p.position]
        dropped = [f"{p.criterion} ({p.position_note})" for p in parts if not p.position]
        if o.position is False:
            position = "No left/right position effect was fitted (--no-position)."
        elif not result.sides:
            position = (
                "The data record no screen sides (A/B conditions), so no position effect was "
                "fitted."
            )
        else:
            position = (
                "A left/right position effect gamma was fitted"
                + (f" for {', '.join(fitted)}" if fitted else "")
                + (f"; it was left out for {'; '.join(dropped)}" if dropped else "")
                + "."
            )
        estimator = (
            "Firth's bias-reduced maximum likelihood (penalised by half the log-determinant of "
            "the Fisher information, as R's BradleyTerry2 with br = TRUE)"
            if o.bias_reduction
            else "maximum likelihood"
        )
        prior = (
            f" with an L2 prior of precision {o.prior:g} on the scores (the report also shows "
            "the fit without it)"
            if o.prior > 0
            else ""
        )
        notes.append(
            "Bradley-Terry: P(i beats j) = sigma(s_i - s_j + gamma), fitted by "
            f"{estimator}{prior} on count-weighted unique pairs; {'; '.join(tie_text[t] for t in ties)}. "
            f"{position} A score gap of 1.1 logits means 75% preference. Scores are "
            f"{', '.join(sorted({p.bt.identification for p in parts}))}."
        )
        jod = (
            "with pwcmp's Gaussian distance prior (Perez-Ortiz & Mantiuk 2017), without a "
            "position effect"
            if o.jod_prior == "gaussian"
            else "by maximum likelihood"
        )
        notes.append(
            "Thurstone Case V: P(i beats j) = Phi(0.6745 (m_i - m_j)), so 1 JOD = 75% "
            f"preference; ties count half to each side; scaled {jod}"
            + (f", overall and per {o.scenes}" if o.scenes else "")
            + "."
        )
    if o.rounds > 0:
        unit = "participants and prompts (two-way)" if o.bootstrap_prompts else "participants"
        notes.append(
            f"Intervals at {o.level:.0%}: a cluster bootstrap of {o.rounds} rounds resampling "
            f"{unit} (multinomial weights, seed {o.seed}), percentile intervals, widened to "
            "the Hessian (Wald) interval where that is wider; rank intervals are quantiles of "
            "the bootstrap ranks, and simultaneous (sup-t) intervals are in the full table. "
            f"Variants with fewer than {MIN_COMPARISONS} comparisons or fewer than "
            f"{MIN_EACH_OUTCOME} wins or losses are marked unreliable."
        )
    else:
        notes.append(
            f"Intervals at {o.level:.0%}: Hessian (Wald) intervals, which treat every trial as "
            "independent (no bootstrap was run); robust_se is the participant-clustered "
            "sandwich SE."
        )
    notes.append(
        "Pairwise tests compare score differences with the "
        f"{'bootstrap' if o.rounds > 0 else 'Wald'} distribution; p-values are adjusted "
        f"together ({o.correction})."
    )
    q = result.qc.options
    rule = (
        f"p < {q.outlier_alpha:g} (a Monte Carlo test of her answers against the others' scaling)"
        if q.outlier_rule == "calibrated"
        else f"pwcmp's dist_L > {q.outlier_distance:g}"
    )
    qc = [
        f"gold attention checks: excluded for {result.qc.attention_policy}",
        f"over {q.max_fast_fraction:.0%} of answers faster than {q.min_rt_ms:g} ms",
        "pwcmp's leave-one-out likelihood (others scaled with its Gaussian prior"
        + (f", per {q.scenes}" if q.scenes else "")
        + f"), outlier when {rule}; fewer than {q.min_trials} pair trials: not assessed",
    ]
    if q.bt500:
        qc.append("ITU-R BT.500 observer screening of ratings")
    if q.exclude_uniform_ratings:
        qc.append("the same rating for every image")
    if q.exclude_position_bias:
        qc.append("position bias")
    notes.append(
        "Quality control (each excludes the whole participant"
        + ("" if o.exclusions else "; exclusions were switched off")
        + "): "
        + "; ".join(qc)
        + "."
    )
    if result.primary.mos is not None:
        notes.append(
            "MOS intervals: participant bootstrap where available, else the t-interval over "
            "ratings. Perceived degradation = (MOS_reference - MOS_variant) / MOS_variant, as "
            "in the HierarchicalPrune paper (4.38 vs 4.16 -> 5.3%)."
        )
    return notes


class ReportWriter:
    """Collects blocks of the HTML and writes the files they refer to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "tables").mkdir()
        (folder / "plots").mkdir()
        self.sections: list[dict] = []

    def section(self, title: str) -> list[dict]:
        blocks: list[dict] = []
        self.sections.append({"title": title, "blocks": blocks})
        return blocks

    def table(self, blocks: list[dict], frame: pd.DataFrame, name: str, *, index: bool = False,
              show: bool = True, link: str = "") -> None:  # fmt: skip
        out = frame.reset_index() if index else frame
        out = out.copy()
        out.columns = [str(c) for c in out.columns]
        out.to_csv(self.folder / "tables" / f"{name}.csv", index=False, float_format="%.10g")
        out.to_parquet(self.folder / "tables" / f"{name}.parquet", index=False)
        if show:
            html = out.to_html(
                index=False, classes="data", border=0, na_rep="", float_format=_fmt, escape=True
            )
            blocks.append({"kind": "table", "html": html})
        if link:
            blocks.append({"kind": "link", "href": f"tables/{name}.csv", "text": link})

    def image(self, blocks: list[dict], png: bytes, name: str, alt: str) -> None:
        (self.folder / "plots" / f"{name}.png").write_bytes(png)
        blocks.append({"kind": "image", "data": base64.b64encode(png).decode(), "text": alt})


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return ""
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3g}"
    return f"{value:.3f}"


def _outlier_panel(qc) -> tuple[str, str, float]:
    if qc.options.outlier_rule == "pwcmp":
        return "loo_dist", "leave-one-out likelihood: pwcmp's dist_L", qc.options.outlier_distance
    return "loo_p", "leave-one-out likelihood: p-value (calibrated)", qc.options.outlier_alpha


def _text(blocks: list[dict], text: str, kind: str = "text") -> None:
    blocks.append({"kind": kind, "text": text})


def _options_table(result: AnalysisResult) -> pd.DataFrame:
    options = asdict(result.options)
    qc = options.pop("qc")
    options.pop("progress")
    options.pop("workers")  # how many processes ran the bootstrap never changes a number
    rows = [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in options.items()]
    rows += [(f"qc.{k}", json.dumps(v)) for k, v in qc.items()]
    return pd.DataFrame(rows, columns=["option", "value"])


def _versions() -> pd.DataFrame:
    import matplotlib
    import scipy
    import statsmodels

    rows = [("hprune", __version__), ("numpy", np.__version__), ("pandas", pd.__version__),
            ("scipy", scipy.__version__), ("statsmodels", statsmodels.__version__),
            ("matplotlib", matplotlib.__version__)]  # fmt: skip
    return pd.DataFrame(rows, columns=["package", "version"])


def _criterion_blocks(writer: ReportWriter, part: CriterionResult, result: AnalysisResult,
                      tag: str, other: CriterionResult | None) -> None:  # fmt: skip
    level = result.options.level
    blocks = writer.section(f"Pairwise: {part.criterion}")
    name = safe_name(part.criterion)
    _text(
        blocks,
        f"{int(part.bt.n_comparisons)} comparisons of {part.bt.n_items} variants "
        f"({tag}); scores are {part.bt.identification} "
        f"({'bootstrap' if part.draws is not None else 'Wald'} intervals at {level:.0%}).",
    )
    writer.table(
        blocks, part.scores, f"scores_{name}", show=False,
        link="Full score table (CSV: every interval, SEs, JOD, win rates, p(best))",
    )  # fmt: skip
    if part.prior_effect is not None:
        _text(blocks, f"With and without the prior ({part.bt.identification})", "heading")
        _text(blocks, part.prior_note, "note")
        writer.table(blocks, part.prior_effect, f"prior_effect_{name}")
    writer.image(
        blocks, plots.scores_plot(part.scores, part.criterion, level), f"scores_{name}", "scores"
    )
    _text(blocks, "Model parameters", "heading")
    writer.table(blocks, part.parameters, f"parameters_{name}")
    _text(blocks, f"Which variants differ ({part.tests['test'].iloc[0]} tests, "
          f"{part.tests['correction'].iloc[0]} correction)", "heading")  # fmt: skip
    writer.table(blocks, part.tests, f"tests_{name}")
    writer.table(blocks, part.significance, f"significance_{name}", index=True, show=False)
    writer.image(
        blocks,
        plots.matrix_plot(part.significance, "adjusted p-value", fmt=".2f", cmap="viridis_r",
                          vmin=0, vmax=1, label="p (adjusted)"),
        f"significance_{name}", "significance matrix",
    )  # fmt: skip
    _text(blocks, "Win rates (row beats column; ties count half) and comparison counts", "heading")
    writer.table(blocks, part.win_rate, f"winrate_{name}", index=True, show=False)
    writer.table(blocks, part.counts, f"counts_{name}", index=True, show=False)
    writer.image(
        blocks,
        plots.matrix_plot(part.win_rate, "win rate (row over column)", fmt=".2f", cmap="RdBu",
                          vmin=0, vmax=1, label="win rate"),
        f"winrate_{name}", "win-rate heatmap",
    )  # fmt: skip
    writer.image(
        blocks,
        plots.matrix_plot(part.counts, "comparisons", fmt=".0f", cmap="Greys", label="count"),
        f"counts_{name}", "count heatmap",
    )  # fmt: skip
    if part.mixed is not None:
        _text(
            blocks,
            "Mixed logit: win ~ score difference + left + (1|participant) + (1|prompt)",
            "heading",
        )
        _text(
            blocks,
            f"Variational Bayes (statsmodels BinomialBayesMixedGLM) on {part.mixed.n_trials} "
            f"decided trials ({part.mixed.n_ties_dropped} ties left out). Scores are relative to "
            "the reference (or the best variant); random-effect rows give the SD of each "
            "participant's and prompt's own left/right tendency.",
            "note",
        )
        writer.table(blocks, part.mixed.fixed, f"mixed_logit_{name}")
        writer.table(blocks, part.mixed.random, f"mixed_logit_random_{name}")
    if part.categories is not None and not part.categories.empty:
        _text(blocks, "Per prompt category (Wald intervals)", "heading")
        _text(blocks, "Identification per category: " + ", ".join(
            sorted(set(part.categories["identification"]))) + ".", "note")  # fmt: skip
        writer.table(blocks, part.categories, f"categories_{name}")
    if part.scenes is not None and not part.scenes.empty:
        _text(blocks, f"Thurstone JOD per {result.options.scenes} (Wald intervals)", "heading")
        _text(blocks, "Identification per scene: " + ", ".join(
            sorted(set(part.scenes["identification"]))) + "; scores compare only within a scene.",
            "note")  # fmt: skip
        writer.table(blocks, part.scenes, f"jod_by_{result.options.scenes}_{name}")
    if other is not None:
        _text(blocks, "With and without exclusions", "heading")
        _text(blocks, f"Scores are {part.bt.identification} in both.", "note")
        both = part.scores[["variant", "bt_score", "boot_low", "boot_high"]].merge(
            other.scores[["variant", "bt_score", "boot_low", "boot_high"]],
            on="variant", how="outer", suffixes=("_after_exclusions", "_all_responses"),
        ).assign(identification=part.bt.identification)  # fmt: skip
        writer.table(blocks, both, f"scores_{name}_with_and_without_exclusions")


def _mos_blocks(writer: ReportWriter, data: DatasetResult, other: DatasetResult | None,
                result: AnalysisResult) -> None:  # fmt: skip
    blocks = writer.section("Ratings (MOS)")
    writer.table(blocks, data.mos, "mos")
    writer.image(blocks, plots.mos_plot(data.mos, result.options.level), "mos", "MOS")
    if data.degradation is not None and not data.degradation.empty:
        _text(
            blocks, "Perceived degradation (MOS_reference - MOS_variant) / MOS_variant", "heading"
        )
        writer.table(blocks, data.degradation, "mos_degradation")
    for criterion, effects in data.mos_mixed.items():
        _text(
            blocks,
            f"Mixed model ({criterion}): rating ~ variant + (1|participant) + (1|prompt)",
            "heading",
        )
        writer.table(blocks, effects, f"mos_mixed_{safe_name(criterion)}")
        components = pd.DataFrame(
            [(k, v) for k, v in data.mos_components[criterion].items()],
            columns=["component", "value"],
        ).astype({"value": str})
        writer.table(blocks, components, f"mos_mixed_components_{safe_name(criterion)}")
    if other is not None and other.mos is not None:
        _text(blocks, "MOS of all responses (before exclusions)", "heading")
        writer.table(blocks, other.mos, "mos_all_responses")


def _metrics_blocks(writer: ReportWriter, result: AnalysisResult) -> None:
    blocks = writer.section("Humans against automatic metrics")
    means = variant_means(result.metrics)
    writer.table(blocks, means, "metric_means", index=True)
    for criterion, table in result.metrics_system.items():
        _text(
            blocks,
            f"System level ({criterion}): Kendall tau and Spearman rho over variants",
            "heading",
        )
        writer.table(blocks, table, f"metrics_system_{safe_name(criterion)}")
        human = result.primary.pairs[criterion].scores.set_index("variant")["bt_score"]
        writer.image(
            blocks, plots.metric_scatter(human, means, f"human ({criterion}) vs metrics"),
            f"metrics_scatter_{safe_name(criterion)}", "metric vs human scatter",
        )  # fmt: skip
    if result.metrics_items is not None:
        _text(blocks, "Item level: metric vs the human majority per image pair", "heading")
        _text(
            blocks,
            "human_vs_others is the ceiling: how often one person agrees with the majority of "
            "the other people who judged the same pair.",
            "note",
        )
        writer.table(blocks, result.metrics_items, "metrics_items")
    if result.metrics_degradation is not None:
        _text(
            blocks,
            "Relative drop from the reference (and the paper's automatic degradation)",
            "heading",
        )
        writer.table(blocks, result.metrics_degradation, "metrics_degradation")


def _ranking_blocks(writer: ReportWriter, blocks: list[dict], result: AnalysisResult) -> None:
    """The answer first: per criterion, the variants in rank order."""
    primary = result.primary
    for criterion, part in primary.pairs.items():
        if part.bt.identification == "sum-zero":
            reference = part.scores["variant"].iloc[0]
            against = f"the best variant, {reference}"
        else:
            reference = part.bt.identification.removeprefix("reference:")
            against = f"the reference, {reference}"
        name = safe_name(criterion)
        _text(blocks, f"Ranking: {criterion} (pairwise, Bradley-Terry)", "heading")
        _text(
            blocks,
            f"Scores in logits, identified {part.bt.identification}; "
            f"{int(part.bt.n_comparisons)} comparisons ({primary.label}); "
            f"{result.options.level:.0%} intervals; verdicts against {against} from "
            f"{part.tests['correction'].iloc[0]}-corrected {part.tests['test'].iloc[0]} tests.",
            "note",
        )
        writer.table(
            blocks, pair_ranking(part.scores, part.tests, reference), f"ranking_{name}",
            link="Full score table (CSV)",
        )  # fmt: skip
        blocks[-1]["href"] = f"tables/scores_{name}.csv"
    if primary.mos is not None:
        for criterion in sorted(primary.mos["criterion"].unique()):
            _text(blocks, f"Ranking: {criterion} (ratings, MOS)", "heading")
            writer.table(
                blocks, mos_ranking(primary.mos, primary.degradation, criterion),
                f"ranking_mos_{safe_name(criterion)}", link="Full MOS table (CSV)",
            )  # fmt: skip
            blocks[-1]["href"] = "tables/mos.csv"
    if result.metrics_degradation is not None and not result.metrics_degradation.empty:
        _text(blocks, "Automatic degradation (the paper's figure)", "heading")
        writer.table(blocks, result.metrics_degradation, "summary_metrics_degradation")


def write_report(result: AnalysisResult, out_dir: str | Path, *, overwrite: bool = False,
                 title: str = "Human study analysis") -> Path:  # fmt: skip
    """Write the whole report; returns the path of report.html."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as folder:
        writer = ReportWriter(folder)
        blocks = writer.section("Summary")
        _ranking_blocks(writer, blocks, result)
        blocks.append({"kind": "warnings", "entries": result.warnings})
        _text(blocks, "The study in numbers", "heading")
        writer.table(blocks, result.summary, "summary")
        _text(blocks, "Options (every choice that changes a number)", "heading")
        writer.table(blocks, _options_table(result), "options")
        if result.provenance is not None:
            _text(blocks, "Inputs", "heading")
            writer.table(blocks, result.provenance, "inputs")
        writer.table(blocks, _versions(), "versions")

        qc = result.qc
        blocks = writer.section("Quality control and exclusions")
        who = [c for c in ("participant", "prolific_pid") if c in qc.participants]
        excluded = qc.participants.loc[qc.participants["excluded"], [*who, "reasons"]]
        if result.options.exclusions:
            _text(blocks, f"{len(excluded)} of {len(qc.participants)} participants excluded "
                  "(the filter is the thresholds in the options table; re-run with "
                  "--no-exclusions to analyse everybody).")  # fmt: skip
        else:
            _text(blocks, f"Exclusions switched off; {len(excluded)} participants would have "
                  "been excluded.")  # fmt: skip
        _text(blocks, f"Gold attention checks: excluded for {qc.attention_policy}.", "note")
        writer.table(blocks, excluded, "exclusions")
        writer.image(
            blocks, plots.qc_plot(qc.participants, qc.options.min_rt_ms, _outlier_panel(qc)),
            "qc", "quality-control panels",
        )  # fmt: skip
        _text(blocks, "Rater agreement (Krippendorff's alpha)", "heading")
        writer.table(blocks, qc.agreement, "agreement")
        _text(blocks, "Every participant", "heading")
        many = len(qc.participants) > SHOWN_PARTICIPANTS
        writer.table(
            blocks, qc.participants, "qc_participants", show=not many,
            link=f"all {len(qc.participants):,} participants' checks (CSV; too many to show here)"
            if many else "",
        )  # fmt: skip

        primary, other = result.primary, result.all_data
        for criterion, part in primary.pairs.items():
            twin = other.pairs.get(criterion) if other is not None else None
            _criterion_blocks(writer, part, result, primary.label, twin)
        if primary.mos is not None:
            _mos_blocks(writer, primary, other, result)
        if result.metrics is not None:
            _metrics_blocks(writer, result)
        blocks = writer.section("Methods")
        for note in methods_text(result):
            _text(blocks, note)

        template = jinja2.Environment(autoescape=True).from_string(
            resources.files("analysis").joinpath("templates/report.html").read_text("utf-8")
        )
        html = template.render(title=title, version=__version__, sections=writer.sections)
        (folder / "report.html").write_text(html, encoding="utf-8")
        (folder / "warnings.txt").write_text(
            "".join(f"{w}\n" for w in result.warnings), encoding="utf-8"
        )
    return out_dir / "report.html"
