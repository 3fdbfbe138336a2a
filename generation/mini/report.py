"""docs/mini-results.md from the outputs of the mini paper chain (``generation.mini.paper``).

- :func:`results_table`: per variant, sizes and step latency (profiles, each model alone),
  image latency (median and IQR of interleaved runs, ``latency.json``), and mini-GenEval
  with its 95% bootstrap interval over prompts, task means and SSIM;
- :func:`claim_tests`: the paper's claims as paired tests over prompt x seed, Holm-corrected
  as one family, each with a plain verdict (supports, contradicts, cannot resolve); and the
  seed-to-seed differences of the variants distilled twice, for scale (outside the family);
- :func:`write_report`: the markdown, the stage timings and the contribution heatmaps.
"""

from __future__ import annotations

import json
from pathlib import Path

from generation.mini.paper import DOCS, PaperConfig, _seed_of, plan, variants
from generation.mini.stats import holm, overall_interval, paired_sign_flip, task_weights
from generation.shapes_world.shapes import CATEGORIES

ALPHA = 0.05


def verdicts(config: PaperConfig):
    """Per image: variant, prompt_id, seed, category and mini-GenEval's verdict (0/1)."""
    import pandas as pd

    from hprune.contracts.manifest import read_manifest
    from hprune.contracts.metrics import read_metrics

    metrics = read_metrics(config.work / "metrics.csv")
    manifest = pd.DataFrame([vars(row) for row in read_manifest(config.work / "stimuli")])
    metrics = metrics.merge(manifest[["image_id", "category", "seed"]], on="image_id")
    geneval = metrics[metrics["metric"] == "mini-geneval"].copy()
    geneval["correct"] = (geneval["value"] >= 0.5).astype(float)
    return metrics, geneval


def results_table(config: PaperConfig) -> list[dict]:
    """One dict per variant (see the module docstring), relative to the original."""
    from generation.measurement.metric_importers import geneval_summary

    metrics, geneval = verdicts(config)
    profiles = {
        v.name: json.loads((config.work / "profiles" / f"{_seed_of(v.name)}.json").read_text())
        for v in variants(config)
    }
    latency = json.loads((config.work / "latency.json").read_text())["variants"]
    base, base_ms = profiles["original"], latency["original"]["median_ms"]
    rows = []
    for v in variants(config):
        p = profiles[v.name]
        mine = geneval[geneval["variant"] == v.name]
        summary = geneval_summary(
            {"tag": c, "correct": bool(x), "prompt_id": pid}
            for c, x, pid in zip(mine["category"], mine["correct"], mine["prompt_id"], strict=True)
        )
        interval = overall_interval(
            mine["correct"],
            mine["category"],
            mine["prompt_id"],
            rounds=config.bootstrap_rounds,
        )
        ssim = metrics[(metrics["variant"] == v.name) & (metrics["metric"] == "ssim-vs-original")]
        timing = latency[v.name]
        rows.append(
            {
                "name": v.name,
                "label": v.label,
                "level": v.level,
                "parameters": p["parameters"],
                "parameters_pct": 100 * p["parameters"] / base["parameters"],
                "weights_bytes": p["weights_bytes"],
                "weights_pct": 100 * p["weights_bytes"] / base["weights_bytes"],
                "step_ms": p["step"]["latency_ms_median"],
                "step_pct": 100
                * p["step"]["latency_ms_median"]
                / base["step"]["latency_ms_median"],
                "latency_ms": timing["median_ms"],
                "latency_q1_ms": timing["q1_ms"],
                "latency_q3_ms": timing["q3_ms"],
                "latency_pct": 100 * timing["median_ms"] / base_ms,
                "overall": summary.overall,
                "overall_low": interval.low,
                "overall_high": interval.high,
                **{c: summary.tasks.get(c, float("nan")) for c in CATEGORIES},
                # the reference is scored against itself by definition
                "ssim": 1.0 if v.name == "original" else float(ssim["value"].mean()),
                "images": len(mine),
            }
        )
    return rows


def claims(config: PaperConfig) -> list[tuple[str, str, str, int]]:
    """(claim, variant A, variant B, expected sign of A - B; 0: two-sided, no side claimed)."""
    rows = []
    for level in ("20", "30"):
        hpp = f"hpp-{level}-pwp-sgd"
        rows += [
            (f"HPP+PWP+SGDistill > BK-SDM+KD at {level}%", hpp, f"bk-sdm-{level}-kd", 1),
            (f"HPP+PWP+SGDistill > KOALA+KD at {level}%", hpp, f"koala-{level}-kd", 1),
            (f"PWP > no distillation at {level}%", f"hpp-{level}-pwp", f"hpp-{level}", 1),
            (f"binary vs inverse weights at {level}%", hpp, f"hpp-{level}-pwp-sgd-inv", 0),
        ]
    return rows


def _paired(geneval, a: str, b: str, config: PaperConfig):
    keys = ["prompt_id", "seed"]
    left = geneval[geneval["variant"] == a][[*keys, "category", "correct"]]
    right = geneval[geneval["variant"] == b][[*keys, "correct"]]
    both = left.merge(right, on=keys, suffixes=("_a", "_b"))
    return paired_sign_flip(
        both["correct_a"],
        both["correct_b"],
        task_weights(both["category"]),
        rounds=config.permutation_rounds,
    )


def claim_tests(config: PaperConfig, geneval=None) -> tuple[list[dict], list[dict]]:
    """The claims' paired tests (Holm over the family), and the seed-to-seed differences."""
    if geneval is None:
        geneval = verdicts(config)[1]
    present = set(geneval["variant"])
    rows = []
    for claim, a, b, sign in claims(config):
        if {a, b} <= present:
            test = _paired(geneval, a, b, config)
            rows.append({"claim": claim, "a": a, "b": b, "sign": sign, "test": test})
    for row, adjusted in zip(rows, holm([r["test"].p_value for r in rows]), strict=True):
        row["p_holm"] = adjusted
        row["verdict"] = _verdict(row["test"].difference, adjusted, row["sign"], row["a"], row["b"])
    seeds = [
        {
            "a": v.name.removesuffix("-s1"),
            "b": v.name,
            "test": _paired(geneval, _seed_of(v.name), v.name, config),
        }
        for v in variants(config)
        if v.name.endswith("-s1") and {v.name, _seed_of(v.name)} <= present
    ]
    return rows, seeds


def _verdict(difference: float, p_holm: float, sign: int, a: str, b: str) -> str:
    if p_holm >= ALPHA:
        return "cannot resolve"
    if sign == 0:
        return f"{a if difference > 0 else b} better"
    return "supports" if difference * sign > 0 else "contradicts"


def contribution_heatmap(contrib_paths: dict[str, Path], out: Path) -> None:
    """Block x component heatmaps of the score drops, one panel per contrib.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(contrib_paths), figsize=(4.2 * len(contrib_paths), 5.2))
    axes = np.atleast_1d(axes)
    for ax, (title, path) in zip(axes, contrib_paths.items(), strict=True):
        data = json.loads(path.read_text())
        components = list(dict.fromkeys(e["component"] for e in data["entries"]))
        blocks = sorted({e["block"] for e in data["entries"]})
        grid = np.full((len(blocks), len(components)), np.nan)
        for e in data["entries"]:
            grid[blocks.index(e["block"]), components.index(e["component"])] = e["drop"]
        limit = np.nanmax(np.abs(grid)) or 1.0
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(components)), components, rotation=45, ha="right")
        ax.set_yticks(range(len(blocks)), [str(b) for b in blocks])
        ax.set_ylabel("block")
        ax.set_title(
            f"{title}\n(drop when removed; baseline {data['baseline']['score']:.3f})", fontsize=9
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _results_markdown(rows: list[dict]) -> list[str]:
    head = (
        "| Method | Pruned | Params | Weights | Latency / step | Latency / image (IQR) | "
        "mini-GenEval (95% CI) | " + " | ".join(CATEGORIES) + " | SSIM to original |"
    )
    table = [head, "|" + "---|" * (9 + len(CATEGORIES) - 1)]
    for r in rows:
        cells = [
            r["label"],
            r["level"],
            _pct(r["parameters_pct"]),
            _pct(r["weights_pct"]),
            f"{r['step_ms']:.1f} ms ({_pct(r['step_pct'])})",
            f"{r['latency_ms']:.0f} ms ({r['latency_q1_ms']:.0f}-{r['latency_q3_ms']:.0f}; "
            f"{_pct(r['latency_pct'])})",
            f"**{r['overall']:.3f}** ({r['overall_low']:.3f}-{r['overall_high']:.3f})",
            *(f"{r[c]:.2f}" for c in CATEGORIES),
            f"{r['ssim']:.3f}",
        ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def _tests_markdown(tests: list[dict], seeds: list[dict]) -> list[str]:
    lines = [
        "| Claim | A | B | A - B | pairs (differing) | p | p (Holm) | Verdict |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in tests:
        t = row["test"]
        lines.append(
            f"| {row['claim']} | {row['a']} | {row['b']} | {t.difference:+.3f} | "
            f"{t.pairs} ({t.discordant}) | {t.p_value:.4f} | {row['p_holm']:.4f} | "
            f"{row['verdict']} |"
        )
    if seeds:
        lines += [
            "",
            "Seed to seed (the same recipe distilled from seeds 0 and 1; not in the family):",
            "",
            "| Variant | seed 0 - seed 1 | pairs (differing) | p |",
            "|---|---:|---:|---:|",
        ]
        for row in seeds:
            t = row["test"]
            lines.append(
                f"| {row['a']} | {t.difference:+.3f} | {t.pairs} ({t.discordant}) | "
                f"{t.p_value:.4f} |"
            )
    return lines


def _timings_markdown(config: PaperConfig) -> list[str]:
    path = config.work / "timings.json"
    if not path.exists():
        return ["(no timings.json: the chain ran before timings were recorded)"]
    record = json.loads(path.read_text())
    lines = [f"Wall time per stage (`--jobs {record.get('jobs', 1)}`):", ""]
    lines += ["| Stage | steps run | wall s |", "|---|---:|---:|"]
    total = 0.0
    for stage, seconds in record["stages"].items():
        runs = sum(1 for name in record["steps"] if name.split("-")[0] == stage)
        lines.append(f"| {stage} | {runs} | {seconds:.0f} |")
        total += seconds
    lines.append(f"| all | {len(record['steps'])} | {total:.0f} |")
    return lines


def write_report(
    config: PaperConfig, out: Path = DOCS / "mini-results.md", *, machine: str = ""
) -> None:
    """The markdown report (module docstring) and the contribution heatmap PNG beside it."""
    from hprune.contracts.prompts import read_prompts
    from hprune.fileio import atomic_write_text

    rows = results_table(config)
    tests, seeds = claim_tests(config)
    heatmap = out.parent / "mini-contrib-heatmap.png"
    contribution_heatmap(
        {
            "fidelity (1 - SSIM)": config.work / "contrib-fidelity.json",
            "mini-GenEval": config.work / "contrib-mini-geneval.json",
        },
        heatmap,
    )
    base = rows[0]
    n_prompts = len(read_prompts(config.prompts, per_category=config.eval_per_category))
    commands = "\n".join(f"hprune {' '.join(step.args)}" for step in plan(config))
    text = f"""# HierarchicalPrune in miniature

The paper's chain run on the shipped mini teacher (`generation/mini/assets/teacher`, a
`StableDiffusion3Pipeline` with a {base["parameters"]:,}-parameter MMDiT trained on the shapes
world) by hprune's own commands. Regenerate everything with `hprune mini paper` (outputs in
`{config.work}`; steps whose output exists are skipped).

Evaluation: {n_prompts} held-out prompts
(`generation/mini/assets/evaluation_metadata.jsonl`, {config.eval_per_category or "all"} per category)
at seeds {config.eval_seeds}, rendered with {config.render["steps"]} Euler steps and guidance
{config.render["guidance"]}; every variant starts each (prompt, seed) from the same noise.
mini-GenEval is the mean of the six task means (GenEval's summary), with a 95% percentile
bootstrap interval over prompts ({config.bootstrap_rounds} rounds, prompts resampled within
each task, a prompt with all its seeds); SSIM is to the original's image of the same prompt
and seed. Params and weights are the transformer's (stored tensor bytes, NF4 packed bytes
plus quantisation state; the teacher is stored in fp32, so NF4 is about a sixth of it rather
than the ~28% of bf16 of the full-size models). Latency / step: the median of
{config.profile_repeats} runs of one transformer step (the guidance batch of 2), each model
profiled alone. Latency / image: the median of {config.latency_repeats} interleaved rounds in
one process (every variant loaded once, one image of each per round, the order rotated), with
the interquartile range, on the CPU{f", {machine}" if machine else ""}. NF4 is slower on a
CPU: bitsandbytes dequantises every weight on every call (the paper's latency gain is a GPU
memory-bandwidth effect). Rows "(seed 1)" repeat a recipe's distillation from seed 1.

{chr(10).join(_results_markdown(rows))}

Levels: {_pct(100 * (1 - config.moderate))} (moderate) and {_pct(100 * (1 - config.aggressive))}
(aggressive) of the transformer's parameters removed. Distillation: {config.distill_steps} steps,
batch {config.distill_batch}, AdamW lr {config.distill_lr}, on {config.data_images} captioned
shapes images (`hprune mini data`); PWP = frozen prefix + output distillation (λ_feat = 0);
SGDistill = output + feature distillation (λ_feat = {config.lambda_feat}) with binary or
inverse-sensitivity block weights; "+ KD" = the baselines' own recipe, the same distillation
with every remaining block trainable (`--freeze none`).

## The paper's claims, tested

Each claim compares two variants' images of the same prompt and seed: a paired permutation
test ({config.permutation_rounds} sign flips) of the difference of their overall mini-GenEval
(images weighted as in the overall score), two-sided; the p-values of the family are
Holm-corrected. A claim is supported or contradicted when its corrected p is below
{ALPHA}, else this sample cannot resolve it. "differing": the pairs where the two images'
verdicts differ, the only ones that carry evidence.

{chr(10).join(_tests_markdown(tests, seeds))}

## Cost

{chr(10).join(_timings_markdown(config))}

## Contributions

![block x component contributions](mini-contrib-heatmap.png)

Score drop when a block (column `block`) or one subcomponent is replaced by an identity,
on {config.contrib_per_category} prompts per category at seeds {config.contrib_seeds}. Left:
fidelity (drop of SSIM to the unablated image), which HPP and KOALA use here; right:
mini-GenEval.

## The commands

```
{commands}
```
"""
    atomic_write_text(out, text)
