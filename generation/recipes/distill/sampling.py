"""The stateless sample stream: which samples, σ and ε a micro-batch of a step draws.

Everything random in a step is a pure function of (seed, step, micro-batch slot), so the
data position is the step counter itself, a resumed run draws what an uninterrupted one
draws, and N processes draw what one process with N accumulation steps draws.

Noise levels (``--noise-levels``): ``scheduler`` (the default, the reference's) draws u from a
logit-normal and takes σ from the teacher scheduler's own table, built from its config, so
SD3.x's shift 3.0 applies (median σ 0.75); ``unshifted`` is σ = u itself (median 0.5), the
draw hprune used before. FLUX.1-dev's scheduler shifts per resolution at sampling time
(``use_dynamic_shifting``); its table at construction is unshifted, and so is the draw, as
in the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from generation.flow_matching import sample_sigmas, table_sigmas

NOISE_LEVELS = ("scheduler", "unshifted")


def noise_level_table(scheduler_config: Mapping[str, Any] | None) -> torch.Tensor:
    """The T noise levels of a flow-matching scheduler built from ``scheduler_config``
    (noisiest first); an empty config gives diffusers' defaults (shift 1)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(scheduler_config or {}))
    return scheduler.sigmas.to(torch.float32).clone()


def draw_sigmas(
    batch: int,
    generator: torch.Generator,
    *,
    table: torch.Tensor | None,
    mean: float = 0.0,
    std: float = 1.0,
) -> torch.Tensor:
    """``batch`` noise levels: u ~ logit-normal(mean, std); σ = table[⌊u·T⌋], or u itself
    when ``table`` is None (the unshifted draw)."""
    u = sample_sigmas(batch, generator, mean=mean, std=std)
    return u if table is None else table_sigmas(u, table)


def sample_indices(seed: int, n: int, first: int, count: int) -> list[int]:
    """Positions ``first .. first+count−1`` of the endless stream of seeded epoch permutations of range(n).

    Epoch e is ``torch.randperm(n)`` under seed (seed, e), so the data position of any step is
    known without state, on every process, after any resume.
    """
    out = []
    position = first
    while len(out) < count:
        epoch, offset = divmod(position, n)
        perm = _epoch_permutation(seed, epoch, n)
        take = min(count - len(out), n - offset)
        out.extend(perm[offset : offset + take])
        position += take
    return out


@functools.lru_cache(maxsize=2)  # consecutive steps read the same epoch (or the next)
def _epoch_permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(step_seed(seed, epoch, -1))
    return tuple(torch.randperm(n, generator=g).tolist())


def step_seed(seed: int, step: int, slot: int) -> int:
    """A well-mixed 63-bit seed for one micro-batch slot of a step.

    ``slot`` = micro-batch × processes + process: N processes with batch b draw exactly the data
    and noise that one process with N accumulation steps of batch b draws, so a run's numbers do
    not depend on how its global batch is spread over GPUs.
    """
    state = np.random.SeedSequence([seed, step, slot + 1]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])
