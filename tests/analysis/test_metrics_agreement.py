"""Humans against metrics: the paper's degradation, metrics-file checks, tau and agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import make_plan
from analysis.metrics_agreement import (
    automatic_degradation,
    degradation_by_metric,
    item_agreement,
    load_metrics,
    metric_family,
    system_agreement,
)
from analysis.simulate import simulate_metrics
from hprune.contracts.metrics import MetricInfo, write_metrics
from hprune.errors import UserError


def test_paper_automatic_degradation() -> None:
    # SD3.5-LT 20% + NF4: GenEval 0.71 -> 0.69, HPSv2 30.29 -> 28.15.
    assert automatic_degradation(0.71, 0.69, 30.29, 28.15) == pytest.approx(0.0494, abs=5e-5)
    # FLUX.1-schnell: 0.66 -> 0.64, 29.71 -> 28.69.
    assert automatic_degradation(0.66, 0.64, 29.71, 28.69) == pytest.approx(0.0323, abs=5e-5)


def _rows(metric, values, *, hib=True):
    return [
        {
            "image_id": f"img-{v}-{p}",
            "variant": v,
            "prompt_id": p,
            "metric": metric,
            "value": x,
            "higher_is_better": hib,
        }
        for (v, p), x in values.items()
    ]


def test_degradation_by_metric_combines_geneval_and_hps(tmp_path) -> None:
    values_g = {("orig", "p1"): 0.71, ("hpp", "p1"): 0.69}
    values_h = {("orig", "p1"): 30.29, ("hpp", "p1"): 28.15}
    path = tmp_path / "metrics.csv"
    write_metrics(
        path,
        _rows("geneval", values_g) + _rows("hpsv2.1", values_h),
        [MetricInfo("geneval", True), MetricInfo("hpsv2.1", True)],
    )
    table = degradation_by_metric(load_metrics([path]), "orig").set_index("variant")
    assert table.loc["hpp", "automatic_degradation"] == pytest.approx(0.0494, abs=5e-5)
    assert table.loc["hpp", "geneval_drop"] == pytest.approx(0.02 / 0.71)
    with pytest.raises(UserError, match="reference variant"):
        degradation_by_metric(load_metrics([path]), "nope")


def test_metrics_files_that_would_mislead_are_refused(tmp_path) -> None:
    assert metric_family("hpsv2.1") == metric_family("hpsv2") == "hps"
    assert metric_family("mini-geneval") != metric_family("geneval")
    a, b, c, d = (tmp_path / f"{n}.csv" for n in "abcd")
    write_metrics(a, _rows("hpsv2", {("x", "p"): 1.0}), [MetricInfo("hpsv2", True, version="2.0")])
    write_metrics(b, _rows("hpsv2.1", {("y", "p"): 1.0}), [MetricInfo("hpsv2.1", True)])
    write_metrics(c, _rows("hpsv2", {("x", "p"): 2.0}), [MetricInfo("hpsv2", True, version="2.0")])
    write_metrics(d, _rows("hpsv2", {("z", "p"): 1.0}), [MetricInfo("hpsv2", True, version="2.1")])
    with pytest.raises(UserError, match="mix versions"):
        load_metrics([a, b])
    with pytest.raises(UserError, match="more than once"):
        load_metrics([a, c])
    with pytest.raises(UserError, match="two versions"):
        load_metrics([a, d])
    e = tmp_path / "e.csv"
    write_metrics(e, _rows("hpsv2", {("z", "p"): 1.0}, hib=False), [MetricInfo("hpsv2", False)])
    with pytest.raises(UserError, match="higher- and lower"):
        load_metrics([a, e])
    with pytest.raises(UserError, match="does not exist"):
        load_metrics([tmp_path / "missing.csv"])


def test_system_agreement_orients_metrics_and_bootstraps(small_study) -> None:
    responses, truth = small_study
    variants = ["orig", "hpp", "bk", "koala", "sana", "tiny"]
    metrics = simulate_metrics(
        responses,
        {"good": truth, "backwards": -np.array(truth), "inverted-loss": -np.array(truth)},
        variants,
        noise_sd=0.01,
        higher_is_better={"good": True, "backwards": True, "inverted-loss": False},
    )
    human = pd.Series(truth, index=variants)
    plan = make_plan(responses.participant, rounds=80, seed=0, prompts=responses.prompt_id)
    rng = np.random.default_rng(0)
    draws = np.array(truth) + rng.normal(0, 0.05, (80, 6))
    table = system_agreement(human, metrics, human_draws=draws, plan=plan).set_index("metric")
    assert table.loc["good", "kendall_tau"] == pytest.approx(1.0)
    assert table.loc["backwards", "kendall_tau"] == pytest.approx(-1.0)
    assert table.loc["inverted-loss", "spearman_rho"] == pytest.approx(1.0)
    assert table.loc["good", "tau_low"] <= 1.0 <= table.loc["good", "tau_high"] + 1e-12
    few = system_agreement(human[:2], metrics)
    assert few["note"].notna().all()


def test_item_agreement_by_hand() -> None:
    # Four people judge the pair (A, B): three prefer A, one B.
    pairs = pd.DataFrame(
        {
            "participant": ["p1", "p2", "p3", "p4"],
            "criterion": "quality",
            "left_image": ["A", "B", "A", "B"],
            "right_image": ["B", "A", "B", "A"],
            "choice": ["left", "right", "left", "left"],
        }
    )
    metrics = pd.DataFrame(
        {
            "image_id": ["A", "B"],
            "variant": ["x", "y"],
            "prompt_id": "p",
            "metric": "m",
            "value": [2.0, 1.0],
            "higher_is_better": True,
        }
    )
    row = item_agreement(pairs, metrics).iloc[0]
    assert row["items"] == 1 and row["metric_vs_majority"] == 1.0
    assert row["metric_vs_votes"] == 0.75
    # Each A voter sees the others at 2:1 for A (agrees), the B voter sees 3:0 (disagrees).
    assert row["human_vs_others"] == 0.75
