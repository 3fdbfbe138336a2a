"""Stage lines on stdout while a large analysis runs (which stage, how far, how long).

A million responses take minutes; these lines say what is running. They go to stdout only,
never into the report, and only when enabled (``hprune analyze`` enables them for studies
large enough that a stage takes seconds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Prints ``analyze: <stage> ...`` when a stage starts and its time when it ends."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def note(self, text: str) -> None:
        if self.enabled:
            print(f"analyze: {text}", flush=True)

    @contextmanager
    def stage(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.note(f"{text} ...")
        start = time.perf_counter()
        yield
        self.note(f"{text}: done in {time.perf_counter() - start:.1f} s")
