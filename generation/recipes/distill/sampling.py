"""The stateless sample stream: which samples, σ and ε a micro-batch of a step draws.

Everything random in a step is a pure function of (seed, step, micro-batch slot), so the
data position is the step counter itself, a resumed run draws what an uninterrupted one
draws, and N processes draw what one process with N accumulation steps draws.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


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
