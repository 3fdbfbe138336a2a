"""SD3 and SD3.5 (``SD3Transformer2DModel``): one list of joint (MMDiT) blocks.

SD3.5 Medium's first blocks are MMDiT-X blocks with a second, image-only
attention (``dual_attention_layers``); ``attn`` removes both attentions, as the
reference does.
The last block is built with ``context_pre_only=True`` (no text-stream output,
no ``ff_context``), so it cannot be deleted: whichever block ends up last would
need that structure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from generation.adapters.base import (
    ModelAdapter,
    _Swaps,
    mmdit_components,
    mmdit_params,
    mmdit_replace,
)


class SD3Adapter(ModelAdapter):
    family = "sd3"
    transformer_class = "SD3Transformer2DModel"

    def block_list_names(self) -> tuple[str, ...]:
        return ("transformer_blocks",)

    def block_kind(self, index: int) -> str:
        self.check_block_index(index)
        return "joint"

    def all_components(self, index: int) -> tuple[str, ...]:
        return mmdit_components(self.block(index))

    def component_params(self, index: int, name: str) -> int:
        self.check_part((index, name))
        return mmdit_params(self.block(index), name)

    def removable_blocks(self) -> list[int]:
        return list(range(self.num_blocks - 1))

    def _not_removable_message(self, indices: Sequence[int]) -> str:
        return (
            f"block {self.num_blocks - 1} is the last block of this SD3 model (context_pre_only) "
            "and must stay last; it cannot be removed"
        )

    def _replace_component(self, swaps: _Swaps, index: int, name: str, *, structural: bool) -> None:
        mmdit_replace(swaps, self.block(index), name, self.ablation)

    def _ablate_blocks(self, swaps: _Swaps, indices: Sequence[int]):
        """Whole blocks through diffusers' own ``skip_layers``, which equals deleting them."""
        if not indices:
            return contextlib.nullcontext()
        skip = list(indices)

        def add_skip_layers(module, args, kwargs):
            kwargs["skip_layers"] = sorted({*(kwargs.get("skip_layers") or ()), *skip})
            return args, kwargs

        handle = self.transformer.register_forward_pre_hook(add_skip_layers, with_kwargs=True)
        return contextlib.closing(_Handle(handle))

    def _update_config_after_block_removal(self, kept: Sequence[int]) -> None:
        dual = set(self.transformer.config.dual_attention_layers or ())
        self.transformer.register_to_config(
            num_layers=len(kept),
            dual_attention_layers=tuple(new for new, old in enumerate(kept) if old in dual),
        )


class _Handle:
    """Adapts a hook handle to ``contextlib.closing``."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def close(self) -> None:
        self.handle.remove()
