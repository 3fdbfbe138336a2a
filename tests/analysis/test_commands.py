"""`hprune analyze` and `hprune power` end to end: report contents, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.qc import run_qc
from analysis.simulate import PairDesign, simulate_metrics, simulate_pairs, simulate_ratings
from hprune.cli import main
from hprune.contracts.manifest import ManifestRow, write_manifest
from hprune.contracts.metrics import MetricInfo, write_metrics

VARIANTS = ("orig", "hpp", "bk-sdm", "koala")


@pytest.fixture(scope="module")
def study_files(tmp_path_factory) -> dict[str, Path]:
    """A pairwise + MOS study with careless participants, its metrics and its stimuli."""
    folder = tmp_path_factory.mktemp("study")
    design = PairDesign(VARIANTS, n_participants=24, trials_per_participant=36, n_prompts=8)
    pairs = simulate_pairs(
        design,
        [0.0, -0.3, -1.0, -1.2],
        seed=5,
        position=0.2,
        tie_log_nu=-1.5,
        spammers=0.1,
        attention_trials=3,
    )
    ratings = simulate_ratings(
        list(VARIANTS),
        {"quality": [4.38, 4.16, 3.5, 3.4], "alignment": [4.33, 4.13, 3.6, 3.5]},
        n_participants=24,
        ratings_per_participant=8,
        n_prompts=8,
        seed=6,
    )
    responses = pd.concat([pairs, ratings], ignore_index=True)
    responses.to_csv(folder / "responses.csv", index=False)
    metrics = simulate_metrics(
        pairs,
        {"geneval": [0.71, 0.69, 0.38, 0.37], "hpsv2.1": [30.29, 28.15, 21.2, 20.0]},
        list(VARIANTS),
        noise_sd=0.02,
    )
    write_metrics(
        folder / "metrics.csv", metrics, [MetricInfo("geneval", True), MetricInfo("hpsv2.1", True)]
    )
    stimuli = folder / "stimuli"
    stimuli.mkdir()
    images = (
        pd.concat(
            [
                responses[["left_image", "left_variant", "prompt_id"]].set_axis(
                    ["i", "v", "p"], axis=1
                ),
                responses[["right_image", "right_variant", "prompt_id"]].set_axis(
                    ["i", "v", "p"], axis=1
                ),
            ]
        )
        .dropna()
        .drop_duplicates("i")
    )
    write_manifest(
        stimuli,
        [
            ManifestRow(
                i,
                f"{i}.png",
                "0" * 64,
                v,
                p,
                "a prompt",
                "animals" if p < "prompt004" else "objects",
                0,
                64,
                64,
                2,
                1.0,
                "f",
                "2025-01-01T00:00:00Z",
            )
            for i, v, p in images.itertuples(index=False)
        ],
    )
    (stimuli / "render.json").write_text(json.dumps({"variants": [], "reference": "orig"}))
    return {
        "responses": folder / "responses.csv",
        "metrics": folder / "metrics.csv",
        "stimuli": stimuli,
    }


def _analyze(*args: str):
    return CliRunner().invoke(main, ["analyze", *args])


def test_full_report(study_files, tmp_path) -> None:
    out = tmp_path / "report"
    result = _analyze(
        "--responses",
        str(study_files["responses"]),
        "--metrics",
        str(study_files["metrics"]),
        "--stimuli",
        str(study_files["stimuli"]),
        "--out",
        str(out),
        "--rounds",
        "60",
        "--workers",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert "quality: orig +0.00" in result.output  # the stimuli's reference
    assert "perceived degradation of hpp" in result.output
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # offline, self-contained
    assert html.count('src="data:image/png;base64,') == len(list((out / "plots").glob("*.png")))
    for section in ("Quality control", "Pairwise: quality", "Ratings (MOS)", "Humans against"):
        assert section in html
    for name in (
        "scores_quality",
        "tests_quality",
        "mos_degradation",
        "metrics_system_quality",
        "metrics_items",
        "metrics_degradation",
        "exclusions",
        "categories_quality",
        "mixed_logit_quality",
        "mos_mixed_quality",
        "scores_quality_with_and_without_exclusions",
    ):
        csv = pd.read_csv(out / "tables" / f"{name}.csv")
        parquet = pd.read_parquet(out / "tables" / f"{name}.parquet")
        assert len(csv) == len(parquet) > 0, name
    scores = pd.read_csv(out / "tables" / "scores_quality.csv").set_index("variant")
    assert scores.loc["orig", "bt_score"] == 0 and scores["boot_low"].notna().all()
    assert list(scores.index[:2]) == ["orig", "hpp"]
    assert (scores["robust_se"].drop("orig") > 0).all() and scores.loc["orig", "robust_se"] == 0
    excluded = pd.read_csv(out / "tables" / "exclusions.csv")
    assert len(excluded) >= 1 and excluded["reasons"].str.len().min() > 0
    degradation = pd.read_csv(out / "tables" / "metrics_degradation.csv").set_index("variant")
    assert degradation.loc["hpp", "automatic_degradation"] == pytest.approx(0.049, abs=0.01)


def test_same_seed_same_report_whatever_the_workers(study_files, tmp_path) -> None:
    common = [
        "--responses",
        str(study_files["responses"]),
        "--rounds",
        "40",
        "--no-mixed-models",
        "--reference",
        "orig",
    ]
    a = _analyze(*common, "--out", str(tmp_path / "a"), "--workers", "1")
    b = _analyze(*common, "--out", str(tmp_path / "b"), "--workers", "2")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert (tmp_path / "a/report.html").read_bytes() == (tmp_path / "b/report.html").read_bytes()
    for table in (tmp_path / "a/tables").glob("*.csv"):
        assert table.read_bytes() == (tmp_path / "b/tables" / table.name).read_bytes(), table.name
    assert _analyze(*common, "--out", str(tmp_path / "c"), "--seed", "1").exit_code == 0
    assert (tmp_path / "c/report.html").read_bytes() != (tmp_path / "a/report.html").read_bytes()


def test_published_pairwise_data_and_existing_output(shared_data, tmp_path) -> None:
    source = shared_data / "pairwise/pwcmp_video_tmo/ex3_tmo_cmp_data.csv"
    out = tmp_path / "tmo"
    result = _analyze(
        "--responses", str(source), "--out", str(out), "--rounds", "30", "--no-mixed-models"
    )
    assert result.exit_code == 0, result.output
    assert "perceptual:" in result.output
    again = _analyze("--responses", str(source), "--out", str(out))
    assert again.exit_code == 2 and "already exists" in again.output


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def _rows(trials, kind="pair"):
    return pd.DataFrame(
        [
            {
                "participant": p,
                "kind": kind,
                "criterion": "quality",
                "prompt_id": "x",
                "left_variant": a,
                "right_variant": b if kind == "pair" else None,
                "choice": c if kind == "pair" else None,
                "rating": c if kind == "rating" else np.nan,
            }
            for p, a, b, c in trials
        ]
    )


@pytest.mark.parametrize(
    ("frame", "extra", "needles"),
    [
        (
            _rows([("p1", "a", "b", "left"), ("p2", "b", "a", "left")]),
            ["--variants", "a,c"],
            ["unknown variant", "b"],
        ),
        (
            _rows([("p1", "a", None, 4.0), ("p2", "a", None, 5.0)], kind="rating"),
            [],
            ["only one variant"],
        ),
        (
            _rows([("p1", "a", "b", "tie"), ("p2", "b", "a", "tie")]),
            [],
            ["every pair trial is a tie"],
        ),
        (
            _rows(
                [
                    ("p1", "a", "b", "left"),
                    ("p1", "b", "a", "left"),
                    ("p2", "c", "d", "left"),
                    ("p2", "d", "c", "left"),
                ]
            ),
            [],
            ["disconnected"],
        ),
        (
            _rows([("p1", "a", None, 4.0), ("p2", "b", None, float("nan"))], kind="rating"),
            [],
            ["no numeric rating"],
        ),
        (
            _rows([("p1", "a", "b", "left"), ("p2", "b", "a", "left")]),
            ["--reference", "zz"],
            ["reference variant", "zz"],
        ),
        (_rows([("p1", "a", "b", "left"), ("p2", "b", "a", "maybe")]), [], ["no valid choice"]),
    ],
    ids=[
        "unknown-variant",
        "single-variant",
        "all-ties",
        "disconnected",
        "nan-rating",
        "bad-reference",
        "bad-choice",
    ],
)
def test_bad_responses_are_one_line_errors(tmp_path, frame, extra, needles) -> None:
    path = tmp_path / "responses.csv"
    frame.to_csv(path, index=False)
    result = _analyze(
        "--responses", str(path), "--out", str(tmp_path / "out"), "--rounds", "10", *extra
    )
    _one_line_error(result, *needles)
    assert not (tmp_path / "out").exists()


def test_bad_metrics_and_stimuli_are_one_line_errors(study_files, tmp_path) -> None:
    duplicated = pd.read_csv(study_files["metrics"])
    duplicated = pd.concat([duplicated, duplicated.head(1)])
    path = tmp_path / "dup.csv"
    duplicated.to_csv(path, index=False)
    base = [
        "--responses",
        str(study_files["responses"]),
        "--out",
        str(tmp_path / "o"),
        "--rounds",
        "10",
    ]
    _one_line_error(_analyze(*base, "--metrics", str(path)), "more than once")
    renamed = pd.read_csv(study_files["metrics"])
    renamed = renamed[renamed["metric"] == "hpsv2.1"].replace({"metric": {"hpsv2.1": "hpsv2"}})
    renamed.to_csv(tmp_path / "v2.csv", index=False)
    _one_line_error(
        _analyze(
            *base, "--metrics", str(study_files["metrics"]), "--metrics", str(tmp_path / "v2.csv")
        ),
        "mix versions",
    )
    swapped = pd.read_csv(study_files["responses"])
    pairs = swapped["kind"] == "pair"
    swapped.loc[pairs, ["left_variant", "right_variant"]] = swapped.loc[
        pairs, ["right_variant", "left_variant"]
    ].to_numpy()
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    result = _analyze(
        "--responses",
        str(tmp_path / "swapped.csv"),
        "--stimuli",
        str(study_files["stimuli"]),
        "--out",
        str(tmp_path / "o2"),
    )
    _one_line_error(result, "disagree")
    _one_line_error(
        _analyze("--responses", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o3")),
        "does not exist",
    )


def test_one_participant_is_a_labelled_warning(study_files, tmp_path) -> None:
    responses = pd.read_csv(study_files["responses"])
    one = responses[responses["participant"] == "p0000"]
    one.to_csv(tmp_path / "one.csv", index=False)
    result = _analyze(
        "--responses", str(tmp_path / "one.csv"), "--out", str(tmp_path / "r"), "--rounds", "20"
    )
    assert result.exit_code == 0, result.output
    warnings = (tmp_path / "r/warnings.txt").read_text()
    assert "one participant" in warnings and "Wald" in warnings
    assert "one participant" in (tmp_path / "r/report.html").read_text()


def test_exclusions_leaving_one_participant_still_report_both_versions(
    study_files, tmp_path
) -> None:
    """All responses have a bootstrap, the excluded version cannot: the report says so."""
    responses = pd.read_csv(study_files["responses"])
    clean = sorted(set(responses["participant"]) - set(run_qc(responses).excluded))[:2]
    two = responses[responses["participant"].isin(clean)].copy()
    failed = (two["participant"] == clean[1]) & (two["kind"] == "attention")
    assert failed.any()
    two.loc[failed, "passed_checks"] = False
    two.to_csv(tmp_path / "two.csv", index=False)
    result = _analyze(
        "--responses", str(tmp_path / "two.csv"), "--out", str(tmp_path / "r"), "--rounds", "20"
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(
        next((tmp_path / "r/tables").glob("scores_*_with_and_without_exclusions.csv"))
    )
    assert table["boot_low_all_responses"].notna().all()
    assert table["boot_low_after_exclusions"].isna().all()


def test_power_command(tmp_path) -> None:
    out = tmp_path / "power.csv"
    result = CliRunner().invoke(
        main,
        [
            "power",
            "--scores",
            "orig=0,hpp=-0.3,bk=-1.5",
            "--trials",
            "30",
            "--participants",
            "5,40",
            "--simulations",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "participants needed" in result.output or "reaches power" in result.output
    assert list(pd.read_csv(out)["participants"]) == [5, 40]
    bad = CliRunner().invoke(main, ["power", "--scores", "a=0,b=x", "--trials", "10"])
    _one_line_error(bad, "not a number")
    missing = CliRunner().invoke(main, ["power", "--trials", "10"])
    _one_line_error(missing, "--scores")
