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
from analysis.metrics_agreement import variant_means
from analysis.pipeline import AnalysisResult, CriterionResult, DatasetResult, safe_name
from hprune import __version__
from hprune.fileio import atomic_output_dir

METHOD_NOTES = [
    "Bradley-Terry: P(i beats j) = sigma(s_i - s_j + gamma), fitted by maximum likelihood on "
    "count-weighted unique pairs (L-BFGS, then Newton); gamma is the left/right position "
    "effect; ties follow Davidson's model. A score gap of 1.1 logits means 75% preference.",
    "Thurstone Case V: P(i beats j) = Phi(0.6745 (m_i - m_j)), so 1 JOD = 75% preference.",
    "Wald intervals come from the Hessian and treat trials as independent (robust_se is the "
    "participant-clustered sandwich SE); bootstrap "
    "intervals resample participants (multinomial weights; optionally prompts too) and so "
    "respect that one person's answers are correlated. Simultaneous intervals hold for all "
    "variants together (sup-t); rank intervals are quantiles of the bootstrap ranks.",
    "Pairwise tests compare score differences with the bootstrap (or Wald) distribution; "
    "p-values are adjusted together (Holm: family-wise error; BH: false discovery rate).",
    "MOS intervals: t-interval over ratings (as papers usually print) and a participant "
    "bootstrap interval. Perceived degradation = (MOS_reference - MOS_variant) / MOS_variant, "
    "as in the HierarchicalPrune paper (4.38 vs 4.16 -> 5.3%).",
]


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
              show: bool = True) -> None:  # fmt: skip
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
    writer.table(blocks, part.scores, f"scores_{name}")
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
        writer.table(blocks, part.categories, f"categories_{name}")
    if other is not None:
        _text(blocks, "With and without exclusions", "heading")
        both = part.scores[["variant", "bt_score", "boot_low", "boot_high"]].merge(
            other.scores[["variant", "bt_score", "boot_low", "boot_high"]],
            on="variant", how="outer", suffixes=("_after_exclusions", "_all_responses"),
        )  # fmt: skip
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


def write_report(result: AnalysisResult, out_dir: str | Path, *, overwrite: bool = False,
                 title: str = "Human study analysis") -> Path:  # fmt: skip
    """Write the whole report; returns the path of report.html."""
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as folder:
        writer = ReportWriter(folder)
        blocks = writer.section("Summary")
        blocks.append({"kind": "warnings", "entries": result.warnings})
        writer.table(blocks, result.summary, "summary")
        _text(blocks, "Options (every choice that changes a number)", "heading")
        writer.table(blocks, _options_table(result), "options")
        if result.provenance is not None:
            _text(blocks, "Inputs", "heading")
            writer.table(blocks, result.provenance, "inputs")
        writer.table(blocks, _versions(), "versions")

        qc = result.qc
        blocks = writer.section("Quality control and exclusions")
        excluded = qc.participants.loc[qc.participants["excluded"], ["participant", "reasons"]]
        if result.options.exclusions:
            _text(blocks, f"{len(excluded)} of {len(qc.participants)} participants excluded "
                  "(the filter is the thresholds in the options table; re-run with "
                  "--no-exclusions to analyse everybody).")  # fmt: skip
        else:
            _text(blocks, f"Exclusions switched off; {len(excluded)} participants would have "
                  "been excluded.")  # fmt: skip
        writer.table(blocks, excluded, "exclusions")
        writer.image(
            blocks, plots.qc_plot(qc.participants, qc.options.min_rt_ms, _outlier_panel(qc)),
            "qc", "quality-control panels",
        )  # fmt: skip
        _text(blocks, "Rater agreement (Krippendorff's alpha)", "heading")
        writer.table(blocks, qc.agreement, "agreement")
        _text(blocks, "Every participant", "heading")
        writer.table(blocks, qc.participants, "qc_participants")

        primary, other = result.primary, result.all_data
        for criterion, part in primary.pairs.items():
            twin = other.pairs.get(criterion) if other is not None else None
            _criterion_blocks(writer, part, result, primary.label, twin)
        if primary.mos is not None:
            _mos_blocks(writer, primary, other, result)
        if result.metrics is not None:
            _metrics_blocks(writer, result)
        blocks = writer.section("Methods")
        for note in METHOD_NOTES:
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
