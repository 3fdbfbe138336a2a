"""Architecture adapters: block lists, subcomponents, identity replacement and surgery.

``get_adapter(transformer)`` picks the adapter for a diffusers transformer;
``record_for_transformer`` is the model record such a transformer starts with. The
bottom layer of ``generation``: it knows architectures, not model folders or files.
"""

from __future__ import annotations

from torch import nn

from generation.adapters.base import (
    ABLATIONS,
    BLOCK,
    DEFAULT_ABLATION,
    ModelAdapter,
    Part,
    check_ablation,
)
from generation.adapters.flux import FluxAdapter
from generation.adapters.sd3 import SD3Adapter
from generation.model_record import ModelRecord
from hprune.errors import UserError

ADAPTERS: tuple[type[ModelAdapter], ...] = (SD3Adapter, FluxAdapter)


def adapter_class(class_name: str) -> type[ModelAdapter]:
    """The adapter for a transformer class name (as ``_class_name`` in its config.json)."""
    for cls in ADAPTERS:
        if cls.transformer_class == class_name:
            return cls
    supported = ", ".join(cls.transformer_class for cls in ADAPTERS)
    raise UserError(f"unsupported transformer {class_name!r}: hprune supports {supported}")


def get_adapter(transformer: nn.Module, ablation: str | None = None) -> ModelAdapter:
    """The adapter that knows ``transformer``'s blocks and subcomponents.

    ``ablation``: what removed subcomponents compute (``identity`` or ``zero``); default: what
    the transformer was pruned with, else ``identity`` (``generation.adapters.base``).
    """
    for cls in type(transformer).__mro__:
        for adapter in ADAPTERS:
            if adapter.transformer_class == cls.__name__:
                return adapter(transformer, ablation)
    return adapter_class(type(transformer).__name__)(transformer)  # raises the UserError


def record_for_transformer(transformer, *, parent_fingerprint: str | None = None) -> ModelRecord:
    """The record of an unpruned transformer: every block kept, nothing removed."""
    adapter = get_adapter(transformer)
    return ModelRecord(
        family=adapter.family,
        original_block_counts=adapter.config_counts(),
        original_parameters=adapter.total_params(),
        kept_blocks=list(range(adapter.num_blocks)),
        parent_fingerprint=parent_fingerprint,
    )


__all__ = [
    "ABLATIONS",
    "ADAPTERS",
    "BLOCK",
    "DEFAULT_ABLATION",
    "ModelAdapter",
    "Part",
    "adapter_class",
    "check_ablation",
    "get_adapter",
    "record_for_transformer",
]
