"""study.scheduling: even coverage, no repeats, determinism, information gain, fallback."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from study.scheduling import (
    PairTask,
    RatingTask,
    SchedulingState,
    available_schedulers,
    get_scheduler,
)
from study.scheduling.active import spanning_tree_order
from study.scheduling.posterior import (
    JOD_NOISE_SD,
    GaussianPosterior,
    information_gain,
    thurstone_posterior,
)


def make_state(n_variants: int, n_prompts: int, n_seeds: int = 1, design: str = "all"):
    variants = [f"v{k}" for k in range(n_variants)]
    items = [(f"p{k}", seed) for k in range(n_prompts) for seed in range(n_seeds)]
    if design == "all":
        pairs = list(itertools.combinations(variants, 2))
    else:  # each against the reference, listed reference second to check the normalisation
        pairs = [(v, variants[0]) for v in variants[1:]]
    return SchedulingState(variants, items, pairs)


def run_participants(scheduler, state, participants: int, per_participant: int, seed: int):
    """Each participant in turn gets a whole list (as the app does for balanced)."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(participants):
        state.participant_pairs = set()
        tasks = scheduler.next_pairs(state, per_participant, rng)
        lists.append(tasks)
        state.assigned_pairs.update(tasks)
    return lists


def spread(counter: Counter, keys) -> int:
    values = [counter.get(k, 0) for k in keys]
    return max(values) - min(values)


designs = st.tuples(
    st.integers(2, 6),  # variants
    st.integers(1, 6),  # prompts
    st.integers(1, 2),  # seeds
    st.sampled_from(["all", "reference"]),
    st.integers(1, 12),  # participants
    st.integers(1, 40),  # trials per participant
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=150, deadline=None)
@given(designs)
def test_balanced_pairs_cover_evenly_without_repeats(design) -> None:
    n_variants, n_prompts, n_seeds, kind, participants, per, seed = design
    state = make_state(n_variants, n_prompts, n_seeds, kind)
    lists = run_participants(get_scheduler("balanced"), state, participants, per, seed)
    pairs = state.unordered_pairs
    cells = len(pairs) * len(state.items)
    totals = Counter()
    for tasks in lists:
        assert len(tasks) == min(per, cells)
        assert len(set(tasks)) == len(tasks), "a participant got the same task twice"
        assert {t.pair for t in tasks} <= set(pairs)
        assert {t.item for t in tasks} <= set(state.items)
        mine = Counter(t.pair for t in tasks)
        assert spread(mine, pairs) <= 1, "a participant's pairs are uneven"
        totals.update(t.pair for t in tasks)
    assert spread(totals, pairs) <= 1
    for pair in pairs:
        per_item = Counter(t.item for t in state.assigned_pairs.elements() if t.pair == pair)
        assert spread(per_item, state.items) <= 1, f"items of {pair} are uneven"
    items = Counter(t.item for t in state.assigned_pairs.elements())
    assert spread(items, state.items) <= min(len(pairs), 3)


@settings(max_examples=100, deadline=None)
@given(designs)
def test_balanced_ratings_cover_evenly_without_repeats(design) -> None:
    n_variants, n_prompts, n_seeds, _, participants, per, seed = design
    state = make_state(n_variants, n_prompts, n_seeds)
    scheduler = get_scheduler("balanced")
    rng = np.random.default_rng(seed)
    for _ in range(participants):
        state.participant_ratings = set()
        tasks = scheduler.next_ratings(state, per, rng)
        assert len(tasks) == min(per, n_variants * len(state.items))
        assert len(set(tasks)) == len(tasks)
        assert spread(Counter(t.variant for t in tasks), state.variants) <= 1
        state.assigned_ratings.update(tasks)
    assert (
        spread(Counter(t.variant for t in state.assigned_ratings.elements()), state.variants) <= 1
    )
    for variant in state.variants:
        per_item = Counter(
            t.item for t in state.assigned_ratings.elements() if t.variant == variant
        )
        assert spread(per_item, state.items) <= 1
    items = Counter(t.item for t in state.assigned_ratings.elements())
    assert spread(items, state.items) <= min(n_variants, 3)


def test_balanced_avoids_tasks_the_participant_has_and_stops_when_none_are_left() -> None:
    state = make_state(3, 2)
    mine = {PairTask("p0", 0, "v0", "v1"), PairTask("p1", 0, "v0", "v1")}
    state.participant_pairs = set(mine)
    tasks = get_scheduler("balanced").next_pairs(state, 10, np.random.default_rng(0))
    assert len(tasks) == 4  # 3 pairs x 2 prompts, minus the 2 the participant has
    assert not set(tasks) & mine
    assert Counter(t.pair for t in tasks) == {("v0", "v2"): 2, ("v1", "v2"): 2}
    state.participant_ratings = {RatingTask(p, 0, v) for p in ("p0", "p1") for v in state.variants}
    assert get_scheduler("balanced").next_ratings(state, 3, np.random.default_rng(0)) == []


def test_balanced_spreads_prompts_within_a_participant() -> None:
    state = make_state(4, 12)  # 6 pairs, 12 prompts: 12 trials can all show different prompts
    tasks = get_scheduler("balanced").next_pairs(state, 12, np.random.default_rng(3))
    assert len({t.prompt_id for t in tasks}) == 12


@pytest.mark.parametrize("name", ["balanced", "active"])
def test_same_state_and_seed_give_the_same_tasks(name: str) -> None:
    def tasks(seed: int):
        state = make_state(5, 8)
        state.wins = close_and_far_wins(state) if name == "active" else state.wins
        scheduler = get_scheduler(name, warmup=0) if name == "active" else get_scheduler(name)
        first = scheduler.next_pairs(state, 6, np.random.default_rng(seed))
        state.participant_pairs = set(first)
        return first + scheduler.next_pairs(state, 1, np.random.default_rng(seed))

    assert tasks(7) == tasks(7)
    assert tasks(7) != tasks(8)


def close_and_far_wins(state: SchedulingState) -> np.ndarray:
    wins = np.zeros((len(state.variants),) * 2)
    for i, j in itertools.combinations(range(len(state.variants)), 2):
        wins[i, j], wins[j, i] = 3 + i, 3 + j
    return wins


def test_thurstone_posterior_is_the_map_and_orders_the_variants() -> None:
    true = np.array([0.0, 0.5, 1.5, 3.0])
    rng = np.random.default_rng(0)
    wins = np.zeros((4, 4))
    for i, j in itertools.permutations(range(4), 2):
        wins[i, j] = rng.binomial(40, ndtr((true[i] - true[j]) / JOD_NOISE_SD))
    wins = (wins + (40 - wins.T)) / 2  # consistent counts: 40 trials per ordered pair
    post = thurstone_posterior(wins, prior_sd=3.0)
    assert list(np.argsort(post.mean)) == [0, 1, 2, 3]
    assert np.allclose(post.cov @ post.precision, np.eye(4))
    assert np.all(np.linalg.eigvalsh(post.cov) > 0)

    def log_posterior(s):
        diff = (s[:, None] - s[None, :]) / JOD_NOISE_SD
        return (wins * np.log(ndtr(diff))).sum() - s @ s / 18

    eps = 1e-5
    grad = [
        (log_posterior(post.mean + eps * e) - log_posterior(post.mean - eps * e)) / (2 * eps)
        for e in np.eye(4)
    ]
    assert np.allclose(grad, 0, atol=1e-5)


def test_information_gain_matches_numerical_integration() -> None:
    """The closed-form moment-matched update equals brute-force Bayes on a grid."""
    mean, cov = np.array([0.3, -0.4]), np.array([[0.8, 0.2], [0.2, 0.5]])
    post = GaussianPosterior(mean, cov, np.linalg.inv(cov))
    gain = information_gain(post, np.array([0]), np.array([1]))[0]

    m, v = 0.7, 0.8 + 0.5 - 0.4
    d = np.linspace(m - 12 * np.sqrt(v), m + 12 * np.sqrt(v), 200_001)
    prior = np.exp(-((d - m) ** 2) / (2 * v))
    prior /= prior.sum()
    expected = 0.0
    for like in (ndtr(d / JOD_NOISE_SD), ndtr(-d / JOD_NOISE_SD)):
        p_outcome = (prior * like).sum()
        after = prior * like / p_outcome
        m1 = (after * d).sum()
        v1 = (after * (d - m1) ** 2).sum()
        expected += p_outcome * 0.5 * (v1 / v + (m1 - m) ** 2 / v - 1 + np.log(v / v1))
    assert gain == pytest.approx(expected, rel=1e-4)


def test_information_gain_falls_with_certainty_and_with_distance() -> None:
    eye = np.eye(2)
    first, second = np.array([0]), np.array([1])

    def gain(mean_gap: float, var: float) -> float:
        post = GaussianPosterior(np.array([mean_gap, 0.0]), var * eye, eye / var)
        return float(information_gain(post, first, second)[0])

    assert gain(0.0, 1.0) > gain(0.0, 0.1) > gain(0.0, 0.01)
    assert gain(0.0, 1.0) > gain(1.5, 1.0) > gain(4.0, 1.0)


def test_active_prefers_the_uncertain_close_pair() -> None:
    """Three disjoint pairs: close but settled, close and uncertain, far apart."""
    variants = ["a", "b", "c", "d", "e", "f"]
    state = SchedulingState(variants, [("p0", 0), ("p1", 0)], [("a", "b"), ("c", "d"), ("e", "f")])
    wins = np.zeros((6, 6))
    wins[0, 1] = wins[1, 0] = 100  # a~b, settled
    wins[2, 3] = wins[3, 2] = 2  # c~d, barely measured
    wins[4, 5] = 25  # e >> f
    state.wins = wins
    scheduler = get_scheduler("active", warmup=0)
    _, gains = scheduler.pair_gains(state)
    assert np.argmax(gains) == 1
    (task,) = scheduler.next_pairs(state, 1, np.random.default_rng(0))
    assert task.pair == ("c", "d")


def test_pending_comparisons_spread_simultaneous_participants() -> None:
    state = make_state(4, 50)
    state.wins = close_and_far_wins(state)
    for (i, j), (a, b) in zip(
        itertools.combinations(range(4), 2), state.unordered_pairs, strict=True
    ):
        answered = int(state.wins[i, j] + state.wins[j, i])
        state.assigned_pairs.update(PairTask(f"p{k}", 0, a, b) for k in range(answered))
    scheduler = get_scheduler("active", warmup=0)
    (first,) = scheduler.next_pairs(state, 1, np.random.default_rng(0))
    k = state.unordered_pairs.index(first.pair)
    _, before = scheduler.pair_gains(state)
    # three participants were just given that pair and have not answered yet
    for prompt in ("p40", "p41", "p42"):
        state.assigned_pairs[PairTask(prompt, 0, first.variant_a, first.variant_b)] += 1
    _, after = scheduler.pair_gains(state)
    assert after[k] < before[k]
    (second,) = scheduler.next_pairs(state, 1, np.random.default_rng(0))
    assert second.pair != first.pair
    # the app's fast path (a pending matrix) gives the same posterior as deriving it
    pending = np.zeros((4, 4))
    i, j = state.variants.index(first.variant_a), state.variants.index(first.variant_b)
    pending[i, j] = 3
    fast = SchedulingState(
        state.variants, state.items, state.pairs, wins=state.wins, pending=pending
    )
    assert np.allclose(scheduler.pair_gains(fast)[1], after)


def test_active_falls_back_to_balanced_while_data_are_scarce() -> None:
    state = make_state(5, 10)
    state.wins = np.zeros((5, 5))
    state.wins[0, 1] = 4  # 4 answered < warmup 5
    active, balanced = get_scheduler("active", warmup=5), get_scheduler("balanced")
    rng_seed = 11
    assert active.next_pairs(state, 8, np.random.default_rng(rng_seed)) == balanced.next_pairs(
        state, 8, np.random.default_rng(rng_seed)
    )
    # default warmup: as many answered comparisons as the study has variants (5)
    assert get_scheduler("active").next_pairs(state, 8, np.random.default_rng(1)) == (
        balanced.next_pairs(state, 8, np.random.default_rng(1))
    )
    state.wins[1, 0] = 1
    gains_choice = active.next_pairs(state, 1, np.random.default_rng(rng_seed))[0].pair
    assert gains_choice != ("v0", "v1")  # the only measured pair is no longer first choice
    _, gains = active.pair_gains(state)
    assert gains_choice == state.unordered_pairs[int(np.argmax(gains))]
    assert get_scheduler("active").next_pairs(state, 1, np.random.default_rng(rng_seed)) == (
        active.next_pairs(state, 1, np.random.default_rng(rng_seed))
    )
    ratings = active.next_ratings(state, 6, np.random.default_rng(2))
    assert ratings == balanced.next_ratings(state, 6, np.random.default_rng(2))


def test_active_batch_is_a_spanning_tree_then_more_trees() -> None:
    state = make_state(6, 40)
    state.wins = close_and_far_wins(state)
    scheduler = get_scheduler("active", warmup=0)
    batch = scheduler.next_pairs(state, 5, np.random.default_rng(0))
    assert len(batch) == 5 and len({t.pair for t in batch}) == 5
    nodes = {0}
    edges = [(state.variants.index(t.variant_a), state.variants.index(t.variant_b)) for t in batch]
    for _ in range(5):
        nodes |= {v for e in edges if set(e) & nodes for v in e}
    assert nodes == set(range(6)), "a 5-pair batch over 6 variants must connect them all"
    _, gains = scheduler.pair_gains(state)
    assert batch[0].pair == state.unordered_pairs[int(np.argmax(gains))]
    longer = scheduler.next_pairs(state, 40, np.random.default_rng(0))
    assert len(set(longer)) == 40
    assert len({t.pair for t in longer}) == 15  # all pairs used before any repeats


def test_spanning_tree_order_on_a_star_is_the_star() -> None:
    first, second = np.array([0, 0, 0]), np.array([1, 2, 3])
    assert sorted(spanning_tree_order(np.array([0.1, 0.3, 0.2]), first, second, 4, 3)) == [0, 1, 2]
    assert spanning_tree_order(np.array([0.1, 0.3, 0.2]), first, second, 4, 4) == [1, 2, 0, 1]


def test_active_never_repeats_a_task_and_picks_the_least_covered_item() -> None:
    state = make_state(3, 3)
    state.wins = close_and_far_wins(state)
    scheduler = get_scheduler("active", warmup=0)
    rng = np.random.default_rng(0)
    everything = {
        PairTask(p, 0, a, b) for p in ("p0", "p1", "p2") for a, b in state.unordered_pairs
    }
    state.participant_pairs = set(everything)
    assert scheduler.next_pairs(state, 3, rng) == []
    state.participant_pairs = {PairTask("p2", 0, "v0", "v1"), PairTask("p2", 0, "v0", "v2")}
    got = scheduler.next_pairs(state, 9, rng)
    assert len(got) == 7 and set(got) == everything - state.participant_pairs

    only = SchedulingState(state.variants, state.items, [("v0", "v1")], wins=state.wins)
    only.assigned_pairs.update([PairTask(p, 0, "v0", "v1") for p in ("p0", "p0", "p1")])
    assert scheduler.next_pairs(only, 1, rng)[0].prompt_id == "p2"
    only.participant_pairs = {PairTask("p2", 0, "v0", "v1")}
    assert scheduler.next_pairs(only, 1, rng)[0].prompt_id == "p1"


def test_bad_names_options_and_states_are_refused() -> None:
    assert available_schedulers() == ["active", "balanced"]
    with pytest.raises(
        ValueError, match="unknown scheduler 'asap'; choose one of active, balanced"
    ):
        get_scheduler("asap")
    with pytest.raises(ValueError, match="bad options"):
        get_scheduler("balanced", warmup=3)
    with pytest.raises(ValueError, match="warmup"):
        get_scheduler("active", warmup=-1)
    with pytest.raises(ValueError, match="variant_a < variant_b"):
        PairTask("p", 0, "b", "a")
    assert PairTask.unordered("p", 0, "b", "a") == PairTask("p", 0, "a", "b")
    with pytest.raises(ValueError, match="2x2"):
        SchedulingState(["a", "b"], [("p", 0)], [("a", "b")], wins=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not two different study variants"):
        SchedulingState(["a", "b"], [("p", 0)], [("a", "c")])
