"""The shipped demo set (`make demo`): its manifest matches its files, it is scored, and it runs as a study."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from generation.mini import EVALUATION_PROMPTS
from hprune.contracts.manifest import verify_manifest
from hprune.contracts.prompts import read_prompts
from study.importer import import_study
from study.spec import parse_spec
from tests.study.conftest import Participant, run_through

DEMO = Path(__file__).resolve().parents[2] / "demo"
STIMULI = DEMO / "stimuli"
VARIANTS = {
    "original",
    "hpp-20-pwp-nf4",
    "hpp-30-pwp-sgd-nf4",
    "bk-sdm-30-kd-nf4",
    "koala-30-kd-nf4",
}
CATEGORIES = {"single_object", "two_object", "counting", "colors", "position", "color_attr"}


def test_demo_manifest_matches_its_files() -> None:
    rows = verify_manifest(STIMULI, check_hashes=True)
    assert {r.variant for r in rows} == VARIANTS
    per_variant = {v: {(r.prompt_id, r.seed) for r in rows if r.variant == v} for v in VARIANTS}
    items = per_variant["original"]
    assert all(cells == items for cells in per_variant.values()), "every variant renders every item"
    assert {seed for _, seed in items} == {0, 1}
    categories = Counter(r.category for r in rows if r.variant == "original" and r.seed == 0)
    held_out = Counter(p.category for p in read_prompts(EVALUATION_PROMPTS))
    assert set(held_out) == CATEGORIES
    assert categories == {
        c: min(4, n) for c, n in held_out.items()
    }  # 4 per category where there are 4


def test_demo_metrics_score_every_image() -> None:
    rows = verify_manifest(STIMULI, check_hashes=False)
    metrics = pd.read_csv(STIMULI / "metrics.csv")
    assert set(metrics["metric"]) == {"mini-geneval", "ssim-vs-original"}
    every = sorted(r.image_id for r in rows)
    scored = metrics[metrics["metric"] == "mini-geneval"]
    assert sorted(scored["image_id"]) == every
    ssim = metrics[metrics["metric"] == "ssim-vs-original"]
    assert sorted(ssim["image_id"]) == sorted(r.image_id for r in rows if r.variant != "original")
    assert ((ssim["value"] > 0) & (ssim["value"] < 1.0)).any()


def test_demo_study_imports_and_a_participant_finishes_it(app) -> None:
    spec = yaml.safe_load((DEMO / "study.yaml").read_text())
    spec["name"] = f"demo-{secrets.token_hex(4)}"
    result = import_study(
        app.extensions["hprune_db"],
        STIMULI / "manifest.csv",
        parse_spec(spec),
        app.config["MEDIA_DIR"],
        progress=False,
    )
    participant = Participant(app.test_client(), result.public_key)
    body = run_through(participant, participant.start("demo-participant"))
    assert body["phase"] == "end", body
