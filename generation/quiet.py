"""Keep the libraries' own output out of hprune's: their progress bars, and two notices about
optional packages hprune goes without.

hprune draws its own tqdm bars around loading, rendering, training and saving, so diffusers'
"Loading pipeline components", transformers' "Loading weights" and "Writing model shards",
and a pipeline's per-call denoising bar only clutter them (``quiet_progress``; pipelines
loaded by ``generation.store.loading`` have their denoising bar switched off).

Warnings and errors are left alone, except two notices, dropped by logger name and text:

- transformers: "``<X>ImageProcessor`` requires torchvision (not installed); falling back to
  ``<X>ImageProcessorPil``": the PIL fallback is what hprune uses; torchvision from PyPI does
  not import beside the CPU torch build (design.md), so it is absent on purpose.
- bitsandbytes: "Failed to load CPU gemm_4bit_forward from kernels-community": an optional
  kernel fetched from the hub; hprune never downloads code or weights behind the user's back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

OPTIONAL_PACKAGE_NOTICES = {
    "transformers.utils.import_utils": "requires torchvision (not installed)",
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
}


class _DropNotice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def drop_optional_package_notices() -> None:
    """Filter the notices above from their loggers (idempotent; before the libraries log them)."""
    for name, text in OPTIONAL_PACKAGE_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.text == text for f in logger.filters):
            logger.addFilter(_DropNotice(text))


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide diffusers' and transformers' progress bars (loading, saving) inside the block."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    modules = [m for m in (diffusers_logging, transformers_logging) if m.is_progress_bar_enabled()]
    for module in modules:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module in modules:
            module.enable_progress_bar()
