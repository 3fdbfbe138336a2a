"""Importing GenEval results and per-image score tables into the tidy metrics format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from generation.measurement.metric_importers import geneval_summary, import_geneval, import_scores
from hprune.contracts.manifest import ManifestRow
from hprune.contracts.metrics import read_metric_infos, read_metrics, write_metrics
from hprune.errors import UserError

VARIANTS = ("original", "pruned")
PROMPTS = {
    "geneval-00000": "single_object",
    "geneval-00080": "two_object",
    "geneval-00179": "counting",
}


@pytest.fixture
def manifest() -> list[ManifestRow]:
    rows = []
    for variant in VARIANTS:
        for prompt_id in PROMPTS:
            for seed in (0, 1):
                image_id = f"{variant[0]}{prompt_id[-3:]}{seed}"
                rows.append(
                    ManifestRow(
                        image_id,
                        f"images/{image_id}.png",
                        "0" * 64,
                        variant,
                        prompt_id,
                        "p",
                        PROMPTS[prompt_id],
                        seed,
                        64,
                        64,
                        2,
                        0.0,
                        "fp",
                        "2025-01-01T00:00:00Z",
                    )
                )
    return rows


def geneval_results(tmp_path, correct):
    """A results.jsonl the way GenEval's evaluate_images.py writes it (pandas orient=records, lines)."""
    records = []
    for (variant, prompt_id, seed), ok in correct.items():
        index = int(prompt_id.split("-")[1])
        records.append(
            {
                "filename": f"/data/geneval/{variant}/{index:05d}/samples/{seed:04d}.png",
                "tag": PROMPTS[prompt_id],
                "prompt": "p",
                "correct": ok,
                "reason": "" if ok else "no objects found",
                "metadata": json.dumps({"tag": PROMPTS[prompt_id], "prompt": prompt_id}),
                "details": "{}",
            }
        )
    path = tmp_path / "results.jsonl"
    pd.DataFrame(records).to_json(path, orient="records", lines=True)
    return path


def test_geneval_summary_is_the_mean_of_task_means():
    records = [
        {"tag": "single_object", "correct": True, "prompt_id": "a"},
        {"tag": "single_object", "correct": True, "prompt_id": "a"},
        {"tag": "single_object", "correct": False, "prompt_id": "b"},
        {"tag": "single_object", "correct": True, "prompt_id": "b"},
        {"tag": "counting", "correct": False, "prompt_id": "c"},
        {"tag": "counting", "correct": False, "prompt_id": "c"},
    ]
    summary = geneval_summary(records)
    assert summary.tasks == {"counting": 0.0, "single_object": 0.75}
    assert summary.overall == pytest.approx(0.375)  # not the image mean, 3/6 = 0.5
    assert summary.images_correct == pytest.approx(0.5)
    assert summary.prompts_correct == pytest.approx(2 / 3)
    assert summary.n_images == 6


def test_import_geneval_maps_paths_to_images(tmp_path, manifest):
    correct = {
        (variant, prompt_id, seed): (variant == "original" or seed == 0)
        for variant in VARIANTS
        for prompt_id in PROMPTS
        for seed in (0, 1)
    }
    rows, infos, summaries = import_geneval(geneval_results(tmp_path, correct), manifest)
    assert len(rows) == 12
    by_id = {row.image_id: row for row in manifest}
    for row in rows:
        image = by_id[row["image_id"]]
        assert (row["variant"], row["prompt_id"]) == (image.variant, image.prompt_id)
        assert row["value"] == float(correct[image.item])
        assert row["metric"] == "geneval" and row["higher_is_better"] is True
    assert summaries["original"].overall == 1.0
    assert summaries["pruned"].overall == pytest.approx(0.5)
    table = write_metrics(tmp_path / "metrics.csv", rows, infos)
    assert read_metrics(tmp_path / "metrics.csv").equals(table)
    assert (
        "mean of the six task means" in read_metric_infos(tmp_path / "metrics.csv")["geneval"].scale
    )


def test_import_geneval_errors(tmp_path, manifest):
    path = geneval_results(tmp_path, {("original", "geneval-00000", 7): True})
    with pytest.raises(UserError, match="seed 7"):
        import_geneval(path, manifest)
    path.write_text('{"filename": "x.png", "tag": "a", "correct": true}\n')
    with pytest.raises(UserError, match=r"samples/<seed>\.png"):
        import_geneval(path, manifest)
    path.write_text('{"filename": "/x/00000/samples/0000.png", "tag": "a", "correct": true}\n')
    with pytest.raises(UserError, match="pass --variant"):
        import_geneval(path, manifest)
    rows, _, _ = import_geneval(path, manifest, variant="pruned")
    assert rows[0]["variant"] == "pruned"
    path.write_text("{oops\n")
    with pytest.raises(UserError, match=":1: not a JSON object"):
        import_geneval(path, manifest)


def test_import_score_csv_keyed_by_prompt_seed_variant(tmp_path, manifest):
    path = tmp_path / "hps.csv"
    path.write_text(
        "prompt_id,seed,variant,score\ngeneval-00000,0,original,0.31\ngeneval-00000,1,pruned,0.27\n"
    )
    rows, infos = import_scores(path, manifest, metric="hpsv2.1", version="2.1", scale="~0.2-0.35")
    assert [(r["image_id"], r["metric"], r["value"]) for r in rows] == [
        ("o0000", "hpsv2.1", 0.31),
        ("p0001", "hpsv2.1", 0.27),
    ]
    assert infos[0].scale == "~0.2-0.35" and infos[0].version == "2.1"


def test_import_tidy_jsonl_keyed_by_image_id(tmp_path, manifest):
    path = tmp_path / "scores.jsonl"
    path.write_text(
        '{"image_id": "o0000", "metric": "clipscore", "value": 0.3}\n'
        '{"image_id": "o0000", "metric": "aesthetic", "value": 5.5}\n'
    )
    rows, infos = import_scores(path, manifest)
    assert {r["metric"] for r in rows} == {"clipscore", "aesthetic"}
    assert [i.name for i in infos] == ["aesthetic", "clipscore"]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("prompt_id,seed,variant,score\ngeneval-00000,0,original,0.3\n", {}, "name the metric"),
        (
            "prompt_id,seed,variant,score\ngeneval-00000,9,original,0.3\n",
            {"metric": "m"},
            ":2: no image",
        ),
        (
            "prompt_id,seed,variant,score\ngeneval-00000,x,original,0.3\n",
            {"metric": "m"},
            "not an integer",
        ),
        (
            "prompt_id,seed,variant,score\ngeneval-00000,0,original,\n",
            {"metric": "m"},
            ":2: value is missing",
        ),
        (
            "prompt_id,seed,variant,score\ngeneval-00000,0,original,1\ngeneval-00000,0,original,2\n",
            {"metric": "m"},
            "given twice",
        ),
        (
            "prompt_id,seed,score\ngeneval-00000,0,1\n",
            {"metric": "m"},
            "needs image_id, or prompt_id",
        ),
        (
            "prompt_id,seed,variant,s\ngeneval-00000,0,original,1\n",
            {"metric": "m"},
            "no value column",
        ),
    ],
)
def test_bad_score_tables(tmp_path, manifest, content, options, message):
    path = tmp_path / "scores.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        import_scores(path, manifest, **options)


def test_write_metrics_refuses_existing_and_merges(tmp_path, manifest):
    path = tmp_path / "scores.csv"
    path.write_text("image_id,score\no0000,1\np0000,2\n")
    out = tmp_path / "metrics.csv"
    rows, infos = import_scores(path, manifest, metric="a")
    write_metrics(out, rows, infos)
    with pytest.raises(UserError, match="already exists"):
        write_metrics(out, rows, infos)
    path.write_text("image_id,score\no0000,3\n")
    rows_b, infos_b = import_scores(path, manifest, metric="b", higher_is_better=False)
    table = write_metrics(out, rows_b, infos_b, mode="merge")
    assert sorted(table["metric"]) == ["a", "a", "b"]
    again = read_metrics(out)
    assert again[again.metric == "b"].higher_is_better.tolist() == [False]
    assert set(read_metric_infos(out)) == {"a", "b"}
    # re-writing a metric replaces its rows instead of duplicating them
    assert len(write_metrics(out, rows_b, infos_b, mode="merge")) == 3
