"""Active vs balanced pair scheduling: comparisons needed to recover the true ranking, and speed.

Simulated studies run in-process (no HTTP, no database): participants with known Bradley-Terry
preferences (study.simulate.observer.Observer: participant noise, position bias, lapses) answer what the
scheduler assigns. ``--concurrent`` participants are mid-trial at any moment, so the active
scheduler sees that many unanswered assignments (as pending comparisons), as it would on a server.
Balanced assigns each participant's whole list when they start (as the app does); active is asked
per trial. After every ``--every`` answers the scores are estimated the same way for both (the
Thurstone MAP of study.scheduling.posterior) and compared with the truth by Kendall's tau.

Reported: the comparisons at which the mean tau over seeds first reaches ``--target``, and the
median over seeds of the first checkpoint from which tau stays at or above it; then the time to
choose one next pair (p50/p99) for ``--variants`` x ``--prompts`` mid-study, every call after a
new answer (so the posterior cache never hits), with and without the pending-matrix fast path.

    .venv/bin/python benchmarks/active_sampling.py --spacing 0.5
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from scipy.stats import kendalltau

from study.scheduling import PairTask, SchedulingState, get_scheduler
from study.scheduling.posterior import thurstone_posterior
from study.simulate.observer import Observer, Preferences


def simulate_study(
    scheduler_name: str,
    preferences: Preferences,
    *,
    prompts: int,
    per_participant: int,
    concurrent: int,
    max_comparisons: int,
    every: int,
    seed: int,
    options: dict | None = None,
) -> np.ndarray:
    """Kendall tau with the true scores after every ``every`` answers."""
    variants = list(preferences.scores)
    n = len(variants)
    index = {v: k for k, v in enumerate(variants)}
    truth = np.array([preferences.scores[v] for v in variants])
    items = [(f"p{k:03d}", 0) for k in range(prompts)]
    state = SchedulingState(variants, items, list(itertools.combinations(variants, 2)))
    state.pending = np.zeros((n, n))
    scheduler = get_scheduler(scheduler_name, **(options or {}))
    rng = np.random.default_rng(seed)
    schedule_rng = np.random.default_rng(seed + 10_000)

    def new_participant() -> dict:
        person = {"observer": Observer(preferences, rng), "mine": set(), "queue": [], "done": 0}
        if scheduler_name == "balanced":
            state.participant_pairs = person["mine"]
            person["queue"] = scheduler.next_pairs(state, per_participant, schedule_rng)
            assign(person, person["queue"])
        return person

    def assign(person: dict, tasks: list[PairTask]) -> None:
        for task in tasks:
            state.assigned_pairs[task] += 1
            person["mine"].add(task)
            i, j = index[task.variant_a], index[task.variant_b]
            state.pending[i, j] += 1
            state.pending[j, i] += 1

    def next_task(person: dict) -> PairTask | None:
        if scheduler_name == "balanced":
            return person["queue"].pop(0) if person["queue"] else None
        state.participant_pairs = person["mine"]
        tasks = scheduler.next_pairs(state, 1, schedule_rng)
        assign(person, tasks)
        return tasks[0] if tasks else None

    def answer(person: dict, task: PairTask) -> None:
        left, right = task.variant_a, task.variant_b
        if rng.random() < 0.5:
            left, right = right, left
        choice = person["observer"].choose(left, right)
        winner, loser = (left, right) if choice == "left" else (right, left)
        state.wins[index[winner], index[loser]] += 1
        i, j = index[task.variant_a], index[task.variant_b]
        state.pending[i, j] -= 1
        state.pending[j, i] -= 1
        person["done"] += 1

    slots: list[tuple[dict, PairTask | None]] = []
    for _ in range(concurrent):
        person = new_participant()
        slots.append((person, next_task(person)))
    taus = []
    answered = 0
    while answered < max_comparisons:
        for k, (person, task) in enumerate(slots):
            if task is not None:
                answer(person, task)
                answered += 1
                if answered % every == 0:
                    estimate = thurstone_posterior(state.wins).mean
                    taus.append(kendalltau(estimate, truth).statistic)
            if person["done"] >= per_participant or task is None:
                person = new_participant()
            slots[k] = (person, next_task(person))
            if answered >= max_comparisons:
                break
    return np.array(taus)


def comparisons_to_target(taus: np.ndarray, target: float, every: int) -> tuple[float, float]:
    """(first checkpoint of the mean curve >= target, median first checkpoint staying >= target)."""
    mean_curve = taus.mean(axis=0)
    hits = np.flatnonzero(mean_curve >= target)
    mean_first = (hits[0] + 1) * every if hits.size else float("nan")
    stays = []
    for curve in taus:
        below = np.flatnonzero(curve < target)
        last_below = below[-1] + 1 if below.size else 0
        stays.append((last_below + 1) * every if last_below < len(curve) else np.nan)
    return float(mean_first), float(np.nanmedian(stays)) if not np.all(np.isnan(stays)) else np.nan


def choice_latency(variants: int, prompts: int, participants: int, per: int, seed: int) -> dict:
    """Wall and CPU p50/p99 ms of ``active.next_pairs`` mid-study, the posterior changed every call.

    CPU time (this process) leaves out the time the scheduler waited for a core, which on a
    shared machine decides the wall-clock tail.
    """
    names = [f"variant-{k:02d}" for k in range(variants)]
    preferences = Preferences.evenly_spaced(names, 0.4)
    rng = np.random.default_rng(seed)
    items = [(f"prompt-{k:04d}", 0) for k in range(prompts)]
    state = SchedulingState(names, items, list(itertools.combinations(names, 2)))
    balanced = get_scheduler("balanced")
    observer = Observer(preferences, rng)
    index = {v: k for k, v in enumerate(names)}
    for _ in range(participants):  # a study well under way: every trial assigned and answered
        state.participant_pairs = set()
        tasks = balanced.next_pairs(state, per, rng)
        state.assigned_pairs.update(tasks)
        for task in tasks:
            choice = observer.choose(task.variant_a, task.variant_b)
            winner, loser = (
                (task.variant_a, task.variant_b)
                if choice == "left"
                else (task.variant_b, task.variant_a)
            )
            state.wins[index[winner], index[loser]] += 1
    active = get_scheduler("active")

    def timed(call) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - wall, time.process_time() - cpu

    def summary(times: list[tuple[float, float]]) -> tuple[float, ...]:
        ms = np.array(times) * 1e3
        return tuple(np.percentile(ms[:, k], q) for k in (0, 1) for q in (50, 99))

    results = {}
    pendings = (
        ("next pair, pending matrix given", np.zeros((variants, variants))),
        ("next pair, pending derived", None),
    )
    for label, pending in pendings:
        state.pending = pending
        times = []
        for call in range(1500):
            state.participant_pairs = set(list(state.assigned_pairs)[call % 200 : call % 200 + per])
            state.wins[call % variants, (call + 1) % variants] += 1  # a new answer: cache miss
            times.append(timed(lambda: active.next_pairs(state, 1, rng)))
        results[label] = summary(times[100:])
    state.pending = np.zeros((variants, variants))
    times = [timed(lambda: active.next_pairs(state, variants - 1, rng)) for _ in range(500)]
    results[f"next batch of {variants - 1} (MST), cached posterior"] = summary(times[50:])
    # balanced: a whole list of `per` trials at once, 4 seeds per prompt (4x the items)
    state.items = [(prompt, seed) for prompt, _ in items for seed in range(4)]
    times = []
    for _ in range(60):
        state.participant_pairs = set()
        times.append(timed(lambda: balanced.next_pairs(state, per, rng)))
    results[f"balanced, a list of {per} over {len(state.items)} items"] = summary(times[10:])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=100, help="seeds not used for tuning")
    parser.add_argument("--variants", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument(
        "--spacing", type=float, default=0.5, help="BT score gap between neighbours"
    )
    parser.add_argument("--per-participant", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--max-comparisons", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-studies", action="store_true")
    args = parser.parse_args()

    names = [f"v{k:02d}" for k in range(args.variants)]
    preferences = Preferences.evenly_spaced(names, args.spacing)
    print(
        f"{args.variants} variants, BT spacing {args.spacing}, {args.prompts} prompts, "
        f"{args.per_participant} trials/participant, {args.concurrent} concurrent, "
        f"{args.seeds} seeds from {args.first_seed}; participant_sd {preferences.participant_sd}, position bias "
        f"{preferences.position_bias}, lapses {preferences.lapse_rate}"
    )
    found = {}
    for name in () if args.skip_studies else ("balanced", "active"):
        start = time.perf_counter()
        taus = np.array(
            [
                simulate_study(
                    name,
                    preferences,
                    prompts=args.prompts,
                    per_participant=args.per_participant,
                    concurrent=args.concurrent,
                    max_comparisons=args.max_comparisons,
                    every=args.every,
                    seed=seed,
                )
                for seed in range(args.first_seed, args.first_seed + args.seeds)
            ]
        )
        found[name] = comparisons_to_target(taus, args.target, args.every)
        marks = [args.max_comparisons // 8, args.max_comparisons // 4, args.max_comparisons // 2]
        curve = ", ".join(f"{m}: {taus[:, m // args.every - 1].mean():.3f}" for m in marks)
        print(
            f"{name:9s} mean tau reaches {args.target} at {found[name][0]:.0f} comparisons; "
            f"median per seed (staying above) {found[name][1]:.0f}; mean tau at {curve} "
            f"({time.perf_counter() - start:.1f} s)"
        )
    for k, label in enumerate(() if args.skip_studies else ("mean curve", "median per seed")):
        saving = 1 - found["active"][k] / found["balanced"][k]
        print(f"active needs {saving:.0%} fewer comparisons than balanced ({label})")
    if not args.skip_timing:
        timings = choice_latency(args.variants, args.prompts, 200, 50, 0)
        for label, (p50, p99, cpu50, cpu99) in timings.items():
            print(
                f"{label}: wall p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                f"CPU time p50 {cpu50:.2f} ms, p99 {cpu99:.2f} ms"
            )


if __name__ == "__main__":
    main()
