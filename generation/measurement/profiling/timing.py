"""Latency: the wall times of repeated runs after warm-up runs, synchronised on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[[], Any],
    device: str | torch.device,
    *,
    warmup: int = 1,
    repeats: int = 3,
    progress: Any = None,
) -> list[float]:
    """Wall times (seconds) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    ``progress``: a tqdm bar advanced by one per call.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
        if progress is not None:
            progress.update()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        if progress is not None:
            progress.update()
    return times
