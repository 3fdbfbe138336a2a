"""Blinding: nothing a participant can receive names a variant, model, file or path; served
images cannot be matched to a public manifest; left/right is balanced per variant; attention
trials look like every other trial, so that a bot that never looks at the images fails them
as often as chance predicts."""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import requests
from sqlalchemy import select
from sqlalchemy.orm import aliased

from hprune.contracts.manifest import METADATA_CHUNKS, png_chunk_types, read_manifest
from study.importer import BROKEN_VARIANT
from study.models import Participant, Stimulus, Study, Trial
from tests.study.conftest import Participant as Client
from tests.study.conftest import run_through, serve_in_thread


def _flask_cookie_payload(value: str) -> str:
    compressed = value.startswith(".")
    data = base64.urlsafe_b64decode(value.lstrip(".").split(".")[0] + "===")
    return (zlib.decompress(data) if compressed else data).decode()


class Crawler:
    """A participant's browser that keeps everything it receives."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()
        self.texts: list[str] = []
        self.images: list[bytes] = []
        self.seen: set[str] = set()

    def get(self, path: str, **kw) -> requests.Response:
        return self.keep(self.http.get(self.base + path if path.startswith("/") else path, **kw))

    def post(self, path: str, **kw) -> requests.Response:
        return self.keep(self.http.post(self.base + path, **kw))

    def keep(self, response: requests.Response) -> requests.Response:
        for r in [*response.history, response]:
            self.texts.append(r.url)
            self.texts.extend(f"{k}: {v}" for k, v in r.headers.items())
            for cookie in r.cookies:
                self.texts.append(f"{cookie.name}={cookie.value}")
                self.texts.append(_flask_cookie_payload(cookie.value))
            if r.headers.get("Content-Type", "").startswith("image/"):
                self.images.append(r.content)
            else:
                self.texts.append(r.text)
                self.follow_assets(r.text)
        return response

    def follow_assets(self, html: str) -> None:
        for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            if path not in self.seen:
                self.seen.add(path)
                self.get(path)


def test_nothing_a_participant_receives_names_a_variant_model_or_file(app, make_study, stimuli_dir):
    study = make_study(
        attention={"broken": 2, "repeat": 2, "max_failures": 5},
        criteria=[
            {"name": "alignment", "question": "Which matches the text?", "show_prompt": True}
        ],
    )
    rows = read_manifest(stimuli_dir)
    forbidden = {study.name, "attention-broken", str(stimuli_dir), app.config["MEDIA_DIR"]}
    for r in rows:
        forbidden |= {r.variant, r.image_id, r.model_fingerprint, r.file, Path(r.file).name}
    trial_shapes = set()
    with serve_in_thread(app) as base:
        c = Crawler(base)
        c.get(
            f"/s/{study.key}",
            params={"PROLIFIC_PID": "PIDcrawl", "STUDY_ID": "s1", "SESSION_ID": "x"},
        )
        token = c.get(f"/api/s/{study.key}/session").json()["csrf_token"]
        h = {"X-CSRFToken": token}
        c.post(f"/s/{study.key}/check", data={"width": 300, "height": 200, "touch": 0}, headers=h)
        c.post(f"/s/{study.key}/check", data={"width": 1300, "height": 900, "touch": 0}, headers=h)
        c.post(f"/s/{study.key}/consent", data={"decision": "agree"}, headers=h)
        c.post(f"/s/{study.key}/instructions", headers=h)
        body = c.get(f"/api/s/{study.key}/trial").json()
        # some errors on the way: they too must say nothing
        c.post(
            f"/api/s/{study.key}/answer",
            json={"trial": "forged", "choice": "left", "rt_ms": 1},
            headers=h,
        )
        c.post(
            f"/api/s/{study.key}/answer",
            json={"trial": body["trial"]["id"], "choice": "up", "rt_ms": 1},
            headers=h,
        )
        c.get("/i/AAAAAAAAAAAAAAAAAAAAAAAA")
        c.get(f"/s/{study.key}/nothing-here")
        rng = np.random.default_rng(3)
        urls: list[str] = []
        while body["phase"] == "trials":
            trial = body["trial"]
            trial_shapes.add((tuple(sorted(trial)), tuple(sorted(trial["images"]))))
            urls += trial["images"].values()
            for url in [*trial["images"].values(), *body["preload"]]:
                c.get(url)
            choice = ["left", "right"][int(rng.integers(2))]
            body = c.post(
                f"/api/s/{study.key}/answer",
                json={"trial": trial["id"], "choice": choice, "rt_ms": 700},
                headers=h,
            ).json()
        c.get(body["redirect"])
        c.get("/")

    assert len(c.images) >= 20 and len(c.texts) > 100
    blob = "\n".join(c.texts)
    leaks = sorted(word for word in forbidden if word and word in blob)
    assert leaks == [], f"participant-visible text names {leaks}"
    for data in c.images:
        assert not METADATA_CHUNKS & set(png_chunk_types(data))
        assert not [w for w in forbidden if w and w.encode() in data]
    assert len(trial_shapes) == 1, "attention/practice trials are distinguishable"
    assert len(set(urls)) == len(urls), "two trials share an image URL"
    assert len({len(data) for data in c.images}) == 1, "image sizes differ"


def test_left_right_balance_within_two_points_over_a_simulated_study(app, make_study):
    study = make_study(trials_per_criterion=8, practice_trials=0, attention={})
    rng = np.random.default_rng(7)
    for i in range(48):
        p = Client(app.test_client(), study.key)
        run_through(p, p.start(pid=f"PIDbal{i:03d}"), rng=rng)
    db = app.extensions["hprune_db"]
    left, right = aliased(Stimulus), aliased(Stimulus)
    with db.read() as s:
        rows = s.execute(
            select(left.variant, right.variant)
            .select_from(Trial)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(left, left.id == Trial.left_id)
            .join(right, right.id == Trial.right_id)
            .where(Study.public_key == study.key, Trial.kind == "pair")
        ).all()
    assert len(rows) == 48 * 8
    on_left, shown = Counter(lv for lv, _ in rows), Counter()
    pairs = Counter(tuple(sorted(r)) for r in rows)
    for lv, rv in rows:
        shown[lv] += 1
        shown[rv] += 1
    shares = {v: on_left[v] / shown[v] for v in shown}
    assert all(abs(share - 0.5) <= 0.02 for share in shares.values()), shares
    assert max(pairs.values()) - min(pairs.values()) <= 1, pairs  # balanced pair coverage


# --- against a public manifest, and a bot that never looks -----------------------------------

DEMO = Path(__file__).resolve().parents[2] / "demo"


def binomial_summary(k: int, n: int, chance: float) -> str:
    """``k/n`` with its exact (Clopper-Pearson) 95% interval and the two-sided p-value of a
    difference from ``chance``."""
    from scipy.stats import binomtest

    test = binomtest(k, n, chance)
    low, high = test.proportion_ci(0.95, method="exact")
    return (
        f"{k}/{n} = {k / n:.3f} (95% CI {low:.3f}-{high:.3f}; chance {chance:.3f}, "
        f"p={test.pvalue:.3g})"
    )


def _crawl(base: str, key: str, pid: str, rng) -> list[tuple[str, requests.Response]]:
    """One participant through the study, keeping every image response: (url, response)."""
    c = Crawler(base)
    c.get(f"/s/{key}", params={"PROLIFIC_PID": pid, "STUDY_ID": "st", "SESSION_ID": pid})
    h = {"X-CSRFToken": c.get(f"/api/s/{key}/session").json()["csrf_token"]}
    c.post(f"/s/{key}/check", data={"width": 1300, "height": 900, "touch": 0}, headers=h)
    c.post(f"/s/{key}/consent", data={"decision": "agree"}, headers=h)
    c.post(f"/s/{key}/instructions", headers=h)
    body, seen = c.get(f"/api/s/{key}/trial").json(), []
    while body["phase"] == "trials":
        trial = body["trial"]
        seen += [(url, c.get(url)) for url in trial["images"].values()]
        answer = {"choice": ["left", "right"][int(rng.integers(2))]}
        body = c.post(
            f"/api/s/{key}/answer", json={"trial": trial["id"], "rt_ms": 900, **answer}, headers=h
        ).json()
    return seen


def _reencodings(data: bytes) -> set[str]:
    """sha256 of the served image decoded and saved again as common encoders would."""
    import hashlib
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    out = set()
    for options in ({}, {"optimize": True}, *({"compress_level": k} for k in range(10))):
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG", **options)
        out.add(hashlib.sha256(buffer.getvalue()).hexdigest())
    return out


def test_a_participant_with_the_public_manifest_names_variants_at_chance(
    app, db_url, artifacts_dir
):
    """The repository's demo manifest maps every rendered file's sha256 (and, with the files,
    their sizes) to its variant. A participant who keeps every byte they are sent tries each
    way of matching: the hash of the image, its ETag, the hash of the image re-encoded as
    common encoders would, and the nearest rendered file size."""
    import hashlib

    import yaml

    from study.importer import import_study
    from study.simulate.oracle import StimulusOracle
    from study.spec import parse_spec

    rows = read_manifest(DEMO / "stimuli")
    by_hash = {r.sha256: r.variant for r in rows}
    sizes = [((DEMO / "stimuli" / r.file).stat().st_size, r.variant) for r in rows]
    spec = yaml.safe_load((DEMO / "study.yaml").read_text())
    spec |= {"name": f"demo-blind-{secrets.token_hex(3)}"}
    spec["attention"]["max_failures"] = 100
    result = import_study(
        app.extensions["hprune_db"], DEMO / "stimuli", parse_spec(spec), app.config["MEDIA_DIR"],
        progress=False,
    )  # fmt: skip
    oracle = StimulusOracle.from_database(db_url, result.study_name)
    rng = np.random.default_rng(11)
    named = matched = 0
    truth = []
    with serve_in_thread(app) as base:
        for i in range(6):
            for url, response in _crawl(base, result.public_key, f"PIDblind{i}", rng):
                shown = oracle.lookup(url)
                if shown.role == "broken":
                    continue
                data, etag = response.content, response.headers["ETag"].strip('"')
                candidates = {hashlib.sha256(data).hexdigest(), etag} | _reencodings(data)
                hits = [by_hash[h] for h in candidates if h in by_hash]
                matched += bool(hits)
                nearest = min(sizes, key=lambda s: abs(s[0] - len(data)))[1]
                guess = hits[0] if hits else nearest
                named += guess == shown.variant
                truth.append(shown.variant)
    oracle.close()
    n, chance = len(truth), 1 / len(set(truth))
    summary = binomial_summary(named, n, chance)
    (artifacts_dir / "blinding-manifest-attack.txt").write_text(
        f"variants named by a participant holding the public demo manifest: {summary}; "
        f"hash, ETag or re-encoding matches: {matched}\n"
    )
    assert matched == 0, f"{matched} served images matched the manifest"
    from scipy.stats import binomtest

    assert binomtest(named, n, chance, alternative="greater").pvalue > 1e-3, summary


def test_a_bot_that_never_looks_fails_attention_checks_at_chance(app, make_study, artifacts_dir):
    """A bot that never decodes an image but uses everything else it is sent (URLs, sizes,
    ETags, the bytes' hashes, which images it saw before, the order): in a pair study a gold
    trial and a repeat each pass with probability 1/2 when the answer is a coin flip."""
    import hashlib

    from study.models import Answer

    study = make_study(
        trials_per_criterion=6,
        practice_trials=1,
        attention={"broken": 2, "repeat": 2, "max_failures": 100},
    )
    rng = np.random.default_rng(5)
    for i in range(30):
        p = Client(app.test_client(), study.key)
        body = p.start(pid=f"PIDbot{i}")
        earlier: dict[frozenset, dict[str, str]] = {}  # a pair's fingerprints -> side: answer
        seen: set[str] = set()
        while body["phase"] == "trials":
            trial = body["trial"]
            files = {}
            for side, url in trial["images"].items():
                response = p.client.get(url)
                files[side] = {
                    "url": url,
                    "etag": response.headers["ETag"],
                    "hash": hashlib.sha256(response.data).hexdigest(),
                    "length": len(response.data),
                }
            keys = [frozenset(f[k] for f in files.values()) for k in ("url", "etag", "hash")]
            known = next((earlier[k] for k in keys if k in earlier), None)
            lengths = {side: f["length"] for side, f in files.items()}
            new = [side for side, f in files.items() if f["hash"] not in seen]
            if known is not None:  # the same pair again: answer as before, sides swapped
                choice = {"left": "right", "right": "left"}[known]
            elif len(set(lengths.values())) > 1:  # a broken image is larger: choose the other
                choice = min(lengths, key=lengths.get)
            elif len(new) == 1:  # one image never seen: perhaps the broken one
                choice = "left" if new == ["right"] else "right"
            else:
                choice = ["left", "right"][int(rng.integers(2))]
            for k in keys:
                earlier[k] = "left" if choice == "left" else "right"
            seen |= {f["hash"] for f in files.values()}
            body = p.answer(trial["id"], choice=choice).get_json()
    with app.extensions["hprune_db"].read() as s:
        rows = s.execute(
            select(Trial.check, Answer.passed)
            .join(Answer, Answer.trial_id == Trial.id)
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .where(Study.public_key == study.key, Trial.check.is_not(None))
        ).all()
    from scipy.stats import binomtest

    lines = []
    for check in ("broken", "repeat"):
        passed = [bool(ok) for kind, ok in rows if kind == check]
        k, n = sum(passed), len(passed)
        assert n >= 50
        lines.append(f"{check}: passed {binomial_summary(k, n, 0.5)}")
        assert binomtest(k, n, 0.5).pvalue > 1e-3, lines[-1]
    (artifacts_dir / "blinding-bot.txt").write_text("\n".join(lines) + "\n")


# --- the image tokens, structurally ---------------------------------------------------------

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_sharing(tokens_by_group: dict[str, list[str]]) -> tuple[float, float, int, int]:
    """Mean common-prefix length of two tokens of the same group and of different groups, the
    longest common prefix within a group, and the number of pairs within groups."""
    within, across = [], []
    groups = sorted(tokens_by_group)
    for i, g in enumerate(groups):
        mine = tokens_by_group[g]
        for a, b in itertools.combinations(mine, 2):
            within.append(common_prefix(a, b))
        for h in groups[i + 1 :]:
            across += [common_prefix(a, b) for a in mine for b in tokens_by_group[h]]
    return float(np.mean(within)), float(np.mean(across)), max(within), len(within)


def test_image_tokens_and_urls_say_nothing_and_gold_sides_are_balanced(app, make_study):
    """Every token (the stimuli's stored names, the per-trial URLs) has one length and one
    alphabet, shares no more of its beginning with tokens of the same variant than with
    others', a gold trial's URLs look like any other's, and the broken image is on the left
    about half the time (participants seeded by the test app's RANDOM_SEED: deterministic)."""
    study = make_study(
        trials_per_criterion=4,
        practice_trials=1,
        attention={"broken": 2, "repeat": 1, "max_failures": 100},
    )
    walked: list[tuple[str, str]] = []  # (trial id, image URL) as the API sent them
    for i in range(60):
        p = Client(app.test_client(), study.key)
        body = p.start(pid=f"PIDtok{i:02d}")
        while i < 8 and body["phase"] == "trials":  # a few all the way through the API
            walked += [(body["trial"]["id"], url) for url in body["trial"]["images"].values()]
            body = p.answer(body["trial"]["id"], choice="left").get_json()
    left, right = aliased(Stimulus), aliased(Stimulus)
    with app.extensions["hprune_db"].read() as s:
        trials = s.execute(
            select(
                Trial.public_id, Trial.check, Trial.expected, Trial.left_token, Trial.right_token,
                left.variant, right.variant,
            )
            .join(Participant, Participant.id == Trial.participant_id)
            .join(Study, Study.id == Participant.study_id)
            .join(left, left.id == Trial.left_id)
            .join(right, right.id == Trial.right_id)
            .where(Study.public_key == study.key)
        ).all()  # fmt: skip
        stimuli = s.execute(
            select(Stimulus.token, Stimulus.variant)
            .join(Study, Study.id == Stimulus.study_id)
            .where(Study.public_key == study.key)
        ).all()
    assert len(trials) == 60 * 8

    by_variant: dict[str, list[str]] = {}
    for *_, lt, rt, lv, rv in trials:
        by_variant.setdefault(lv, []).append(lt)
        by_variant.setdefault(rv, []).append(rt)
    stored: dict[str, list[str]] = {}
    for token, variant in stimuli:
        stored.setdefault(variant, []).append(token)
    assert BROKEN_VARIANT in by_variant and BROKEN_VARIANT in stored
    for name, groups in (("trial", by_variant), ("stimulus", stored)):
        tokens = [t for ts in groups.values() for t in ts]
        assert len({len(t) for t in tokens}) == 1, f"{name} tokens differ in length"
        assert all(TOKEN_RE.fullmatch(t) for t in tokens), f"{name} tokens outside base64url"
        assert len(set(tokens)) == len(tokens)
        within, across, longest, pairs = prefix_sharing(groups)
        # random tokens: both about 1/63 (a first character in common now and then), give or
        # take far less than the margin; a prefix per variant makes the first its length
        assert within <= across + max(0.01, 2 / pairs**0.5), (name, within, across, pairs)
        assert longest <= 6, (name, longest)

    # a gold trial's URLs: the same form and length as every other trial's
    checks = {t.public_id: t.check for t in trials}
    shapes = {
        (checks[trial_id] == "broken", len(url), re.sub(r"[A-Za-z0-9_-]", "x", url))
        for trial_id, url in walked
    }
    assert {gold for gold, *_ in shapes} == {True, False}
    assert len({shape[1:] for shape in shapes}) == 1, shapes
    assert all(re.fullmatch(r"/i/[A-Za-z0-9_-]{22}", url) for _, url in walked)

    # the broken image is on the left about half the time
    gold = [t for t in trials if t.check == "broken"]
    broken_left = sum(t.expected == "right" for t in gold)  # expected: the intact side
    assert len(gold) == 120 and all(BROKEN_VARIANT in (t[5], t[6]) for t in gold)
    from scipy.stats import binomtest

    assert binomtest(broken_left, len(gold), 0.5).pvalue > 0.01, binomial_summary(
        broken_left, len(gold), 0.5
    )
