"""Automatic image scorers, found by name.

``get_scorer(name, **options)`` builds one; ``available_scorers()`` lists them.
Each built-in scorer lives in its own module and registers itself on import;
the list below is the whole set of built-ins (no entry points).
"""

from __future__ import annotations

from generation.measurement.scorers.base import (
    Scorer,
    available_scorers,
    get_scorer,
    register_scorer,
)

# Built-in scorer modules (each registers its scorers when imported).
from generation.measurement.scorers import fidelity  # noqa: F401  isort: skip
from generation.measurement.scorers import reference_metrics  # noqa: F401  isort: skip
from generation.measurement.scorers import learned  # noqa: F401  isort: skip
from generation.measurement.scorers import mini_geneval  # noqa: F401  isort: skip

__all__ = ["Scorer", "available_scorers", "get_scorer", "register_scorer"]
