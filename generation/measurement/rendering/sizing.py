"""How many images one pipeline call renders: ``--batch-size N`` or ``auto``.

A small model at a small resolution is launch-bound on a GPU: one image per call leaves the
device idle between kernels (the mini teacher renders 2 images/s at batch 1 on an H200 and
~49 at batch 48, docs/benchmarks.md). ``auto`` renders a variant's first image alone while
measuring the CUDA memory its call needs above the loaded weights (the peak the caching
allocator saw, minus what was allocated before), then fills ``AUTO_HEADROOM`` of the memory
still free (the driver's free memory plus what torch's cache holds unused) with images of
that size, at most ``AUTO_MOST`` and never more than are left. Elsewhere (CPU, MPS) there is
no memory to read: ``auto`` is ``AUTO_OTHER``, which already amortises the per-call cost of
the text encoders and the scheduler on a CPU (1.7x at batch 4 on toy models) without
holding many full-size activations at once.

Batching does not change what an image is: each image's noise comes from its own seed
(``batches.initial_latents``); only floating-point summation order differs, so a batched
image equals its batch-1 render to within one grey level on a few pixels (tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from hprune.errors import UserError

AUTO = "auto"
AUTO_HEADROOM = 0.8  # of the free memory: the allocator fragments, and the VAE peaks late
AUTO_MOST = 256
AUTO_OTHER = 4


def parse_batch_size(value: int | str) -> int | str:
    """``"auto"`` or a whole number >= 1 (from the command line or a caller)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--batch-size must be a whole number or 'auto', got {value!r}") from None
    if size < 1:
        raise UserError(f"--batch-size must be at least 1, got {size}")
    return size


def fitting_batch(per_image: int, free: int, left: int, *, headroom: float = AUTO_HEADROOM) -> int:
    """The most images of ``per_image`` bytes in ``headroom`` of ``free`` bytes, between 1 and
    ``min(left, AUTO_MOST)``."""
    if per_image <= 0:
        return max(1, min(left, AUTO_MOST))
    return max(1, min(left, AUTO_MOST, int(free * headroom // per_image)))


@dataclass
class Probe:
    """What :func:`probe_memory` measured: bytes one call needed above what was allocated
    before it (``needed``), and bytes free after it (``free``). None off CUDA."""

    needed: int | None = None
    free: int | None = None

    def batch_for(self, images: int, left: int) -> int:
        """The batch size for the remaining ``left`` images, from a call of ``images``."""
        if self.needed is None or self.free is None:
            return max(1, min(left, AUTO_OTHER))
        return fitting_batch(self.needed // max(1, images), self.free, left)


@contextlib.contextmanager
def probe_memory(device: str) -> Iterator[Probe]:
    """Measure the CUDA memory the calls inside the block need (see :class:`Probe`)."""
    import torch

    probe = Probe()
    target = torch.device(device)
    if target.type != "cuda" or not torch.cuda.is_available():
        yield probe
        return
    torch.cuda.synchronize(target)
    torch.cuda.reset_peak_memory_stats(target)
    before = torch.cuda.memory_allocated(target)
    yield probe
    torch.cuda.synchronize(target)
    probe.needed = torch.cuda.max_memory_allocated(target) - before
    cached = torch.cuda.memory_reserved(target) - torch.cuda.memory_allocated(target)
    probe.free = torch.cuda.mem_get_info(target)[0] + cached
