"""Peak memory: the high-water mark of the bytes held by live torch tensors inside a block.

Measured from the start of the block (``above_start``) and in total (``total`` = tensors
already resident at the start + ``above_start``). On CUDA that is
``torch.cuda.max_memory_allocated``. On the CPU we replay the allocation events torch's
profiler records with ``profile_memory=True`` (every allocation and free of the CPU
allocator, in order) -- the same quantity, without allocator caching or fragmentation.
Process RSS would mix in the Python heap and glibc's retained arenas; tracemalloc does
not see torch's allocations at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn


@dataclasses.dataclass
class PeakMemory:
    """Filled in when the :func:`peak_memory` block exits."""

    device: str
    start_bytes: int = 0  # bytes of live tensors when the block started
    above_start_bytes: int = 0  # high-water mark of the bytes allocated inside the block
    method: str = ""

    @property
    def total_bytes(self) -> int:
        return self.start_bytes + self.above_start_bytes


def resident_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct storages behind the parameters and buffers of ``modules``."""
    seen: dict[tuple[str, int], int] = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


@contextlib.contextmanager
def peak_memory(device: str | torch.device, *resident: nn.Module) -> Iterator[PeakMemory]:
    """Measure the peak bytes of live torch tensors inside the ``with`` block.

    CUDA: the allocator's own counters. CPU: the allocation events of torch's profiler,
    summed in time order; the modules in ``resident`` give the bytes live at the start
    (what ``torch.cuda.memory_allocated()`` reports on CUDA).
    """
    device = torch.device(device)
    result = PeakMemory(device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.start_bytes = torch.cuda.memory_allocated(device)
        result.method = "torch.cuda.max_memory_allocated"
        yield result
        torch.cuda.synchronize(device)
        result.above_start_bytes = torch.cuda.max_memory_allocated(device) - result.start_bytes
        return
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on cpu or cuda, not {device}")
    from torch.profiler import ProfilerActivity, profile

    result.start_bytes = resident_bytes(*resident)
    result.method = "torch.profiler CPU allocation events (profile_memory=True)"
    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        yield result
    result.above_start_bytes = _peak_from_allocation_events(prof)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what the profiler's C++ side prints to file descriptor 2 (kineto's start/stop
    trace lines, c10's note about blocks allocated before profiling started: expected here,
    since the model was loaded before). Python exceptions still propagate."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _peak_from_allocation_events(prof) -> int:
    """The running maximum of allocated-minus-freed bytes over the profiler's memory events."""
    events = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak
