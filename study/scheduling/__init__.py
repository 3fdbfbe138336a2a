"""Which trials a participant gets next: balanced coverage or active (information-gain) sampling.

One interface (:class:`Scheduler`), chosen by name in the study spec::

    scheduler = get_scheduler("active", warmup=50)
    tasks = scheduler.next_pairs(state, n=1, rng=np.random.default_rng(seed))

Pure numpy/scipy; no Flask, no database: the web app builds the :class:`SchedulingState` inside
its assignment transaction and stores what comes back.
"""

from __future__ import annotations

from study.scheduling.active import ActiveScheduler
from study.scheduling.balanced import BalancedScheduler
from study.scheduling.state import PairTask, RatingTask, Scheduler, SchedulingState

SCHEDULERS = {"balanced": BalancedScheduler, "active": ActiveScheduler}


def available_schedulers() -> list[str]:
    return sorted(SCHEDULERS)


def get_scheduler(name: str, **options) -> Scheduler:
    """A scheduler by name (``balanced`` or ``active``) with its options.

    Raises ValueError, with the choices, for an unknown name or option.
    """
    try:
        factory = SCHEDULERS[name]
    except KeyError:
        raise ValueError(
            f"unknown scheduler {name!r}; choose one of {', '.join(available_schedulers())}"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for scheduler {name!r}: {exc}") from None


__all__ = [
    "SCHEDULERS",
    "ActiveScheduler",
    "BalancedScheduler",
    "PairTask",
    "RatingTask",
    "Scheduler",
    "SchedulingState",
    "available_schedulers",
    "get_scheduler",
]
