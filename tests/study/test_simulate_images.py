"""Image-aware simulated participants: their answers follow the pixels they are shown (through
the mini world's judge, ``generation.shapes_world.judge``) and never the variants' names."""

from __future__ import annotations

import io
import secrets
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from generation.shapes_world.judge import ShapesJudge
from generation.shapes_world.shapes import draw_scene, evaluation_prompts, scene_for
from hprune.cli import main
from hprune.contracts.manifest import ManifestRow, sha256_file, write_manifest
from study.simulate.driver import _answer_for
from study.simulate.observer import ImageAwareObserver, ImagePreferences, Preferences, Seen
from study.simulate.oracle import StimulusOracle
from tests.study.conftest import Participant, attentive, import_spec, serve_in_thread

PROMPTS = [row for row in evaluation_prompts() if row["tag"] in ("two_object", "colors")][:6]


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def scene_png(row: dict, seed: int) -> bytes:
    return png(draw_scene(scene_for(row, np.random.default_rng(seed))))


def wrong_png(row: dict, seed: int) -> bytes:
    """A clean scene of another prompt: well drawn, but not what ``row`` asks for."""
    other = PROMPTS[(PROMPTS.index(row) + 3) % len(PROMPTS)]
    return scene_png(other, seed)


GOOD, BAD = scene_png(PROMPTS[0], 1), wrong_png(PROMPTS[0], 1)
PROMPT = PROMPTS[0]["prompt"]


def choices(prefs: ImagePreferences, left: bytes, right: bytes, n: int, prompt=PROMPT, seed=0):
    observer = ImageAwareObserver(prefs, np.random.default_rng(seed))
    shown = Seen(image=left, prompt=prompt), Seen(image=right, prompt=prompt)
    return Counter(observer.choose(*shown) for _ in range(n))


def test_the_judge_reads_the_prompt_from_the_pixels() -> None:
    judge = ShapesJudge()
    good, bad = judge(GOOD, PROMPT), judge(BAD, PROMPT)
    assert good == {"correct": 1.0, "fidelity": 1.0, "form": pytest.approx(1.0, abs=0.05)}
    assert bad["correct"] == 0.0 and bad["fidelity"] < 0.6
    assert set(judge(GOOD, None)) == {"form"}  # no prompt shown: how well drawn, nothing else
    with pytest.raises(ValueError, match="not an image"):
        judge(b"not a png", PROMPT)


def test_swapping_two_images_swaps_the_preference() -> None:
    prefs = ImagePreferences(ShapesJudge(), position_bias=0.0, lapse_rate=0.0)
    n = 400
    assert choices(prefs, GOOD, BAD, n)["left"] / n > 0.85
    assert choices(prefs, BAD, GOOD, n)["right"] / n > 0.85
    # with the prompt hidden only the drawing counts: two clean scenes are near a coin flip
    assert 0.3 < choices(prefs, GOOD, BAD, n, prompt=None)["left"] / n < 0.7


def test_position_bias_and_lapses_have_their_effect() -> None:
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    n = 4000
    biased = ImagePreferences(ShapesJudge(), position_bias=1.0, lapse_rate=0.0)
    assert choices(biased, GOOD, GOOD, n)["left"] / n == pytest.approx(sigmoid(1.0), abs=0.03)
    lapsing = ImagePreferences(ShapesJudge(), position_bias=0.0, lapse_rate=0.5, sharpness=50)
    # the sharp judge always picks GOOD; half the answers are coin flips: 0.5 + 0.5 / 2
    assert choices(lapsing, GOOD, BAD, n)["left"] / n == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="lapse_rate"):
        ImagePreferences(ShapesJudge(), lapse_rate=2.0)


def test_ratings_follow_the_image() -> None:
    prefs = ImagePreferences(ShapesJudge(), rating_sd=0.5)
    observer = ImageAwareObserver(prefs, np.random.default_rng(3))
    good = [observer.rate(Seen(image=GOOD, prompt=PROMPT)) for _ in range(300)]
    bad = [observer.rate(Seen(image=BAD, prompt=PROMPT), 1, 5) for _ in range(300)]
    assert set(good) | set(bad) <= set(range(1, 6))
    assert np.mean(good) > np.mean(bad) + 1.0
    with pytest.raises(ValueError, match="image's bytes"):
        observer.rate(Seen(variant="original", prompt=PROMPT))


def shapes_stimuli(folder: Path) -> Path:
    """Three variants of the shapes world: ``good`` draws every prompt, ``bad`` another prompt,
    ``mixed`` the prompt for even seeds only."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for variant in ("good", "mixed", "bad"):
        for p, row in enumerate(PROMPTS):
            for seed in (0, 1):
                right = variant == "good" or (variant == "mixed" and seed == 0)
                data = scene_png(row, 10 * p + seed) if right else wrong_png(row, 10 * p + seed)
                file = f"images/{variant}-{p}-{seed}.png"
                (folder / file).write_bytes(data)
                rows.append(
                    ManifestRow(
                        image_id=secrets.token_hex(6),
                        file=file,
                        sha256=sha256_file(folder / file),
                        variant=variant,
                        prompt_id=f"p{p}",
                        prompt=row["prompt"],
                        category=row["tag"],
                        seed=seed,
                        width=64,
                        height=64,
                        steps=2,
                        guidance=1.0,
                        model_fingerprint=f"fp-{variant}",
                        created_at="2025-01-01T00:00:00Z",
                    )
                )
    write_manifest(folder, rows)
    return folder


SPEC = {
    "criteria": [
        {"name": "alignment", "question": "Which matches the text?", "show_prompt": True},
        {"name": "quality", "question": "Which looks better?"},
    ],
    "trials_per_criterion": 6,
    "practice_trials": 0,
}


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    return shapes_stimuli(tmp_path_factory.mktemp("shapes"))


def test_renaming_variants_changes_nothing(app, db_url, shapes_dir) -> None:
    """The same trials answered with the variants' names swapped around in the oracle: the
    same answers for the same seed (the name-based observer would answer differently)."""
    handle = import_spec(app, shapes_dir, **SPEC)
    client = app.test_client()
    p = Participant(client, handle.key)
    body, trials, pick = p.start("renamer"), [], attentive(app)
    while body["phase"] == "trials":  # collect real trials, answered attentively by the test
        trials.append(body["trial"])
        body = p.answer(body["trial"]["id"], **pick(body["trial"])).get_json()
    assert body["phase"] == "end"
    assert any(t["prompt"] for t in trials) and any(t["prompt"] is None for t in trials)

    oracle = StimulusOracle.from_database(db_url, handle.name)
    swap = {"good": "bad", "bad": "good", "mixed": "renamed"}
    renamed = StimulusOracle(
        oracle.study_key,
        {i: (swap.get(v, v), role) for i, (v, role) in oracle.images.items()},
        db_url,
    )

    def fetch(url: str) -> bytes:
        response = client.get(url)
        assert response.status_code == 200
        return response.data

    def answers(the_oracle: StimulusOracle) -> list[dict]:
        prefs = ImagePreferences(ShapesJudge(), lapse_rate=0.1, tie_strength=0.2)
        observer = prefs.observer(np.random.default_rng(11))
        memory: dict = {}
        return [_answer_for(t, observer, the_oracle, memory, fetch) for t in trials]

    assert answers(oracle) == answers(renamed)

    # the name-based observer, sure that good beats bad, turns round with the names
    sure = Preferences(
        {"good": 0.0, "mixed": -10.0, "bad": -20.0, "renamed": -10.0},
        participant_sd=0.0,
        lapse_rate=0.0,
        attention_failure_rate=0.0,
    )

    def by_names(the_oracle: StimulusOracle) -> list[dict]:
        observer = sure.observer(np.random.default_rng(11))
        return [_answer_for(t, observer, the_oracle, {}, fetch) for t in trials]

    assert by_names(oracle) != by_names(renamed)
    oracle.close()
    renamed.close()


@pytest.mark.slow
def test_image_aware_study_recovers_what_the_images_show(app, db_url, shapes_dir) -> None:
    """Through a real server and the CLI: the alignment ranking is good > mixed > bad."""
    from analysis.live import live_scores
    from study.export import export_responses

    handle = import_spec(app, shapes_dir, **SPEC)
    runner = CliRunner()
    with serve_in_thread(app) as base:
        args = ["study", "simulate", "-n", "24", "--url", base, "--study", handle.name]
        result = runner.invoke(
            main, [*args, "--observer", "image-aware", "--seed", "2"], env={"DATABASE_URL": db_url}
        )
        assert result.exit_code == 0, result.output
        assert "image-aware observers" in result.output
        bad = runner.invoke(
            main,
            [*args, "--observer", "image-aware", "--scores", "good=1"],
            env={"DATABASE_URL": db_url},
        )
        assert bad.exit_code == 2 and "--scores is for --observer names" in bad.output
    responses = export_responses(db_url, handle.name)
    aligned = responses[responses["criterion"] == "alignment"]
    scores = live_scores(aligned).set_index("variant")["score"]
    assert list(scores.sort_values(ascending=False).index) == ["good", "mixed", "bad"]
