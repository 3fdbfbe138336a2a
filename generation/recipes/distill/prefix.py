"""Run the preserved prefix once: the student starts where the teacher's frozen prefix ends.

Under PWP the student's embedders and blocks 0..K−1 are frozen copies of the teacher's, and
both models see the same x_t, σ and text. The student's prefix would therefore recompute,
bit for bit, what the teacher has just computed. ``SharedPrefix`` skips that: a hook records
the inputs of the teacher's block K, the student's prefix blocks pass their inputs through
unchanged, and a hook hands the recorded teacher activations to the student's block K.
The student's embedders still run (they are cheap and give the time embedding the later
blocks need).

For SD3.5-Large-Turbo at 20% (K = 25 of 38 blocks, 30 kept) the student's forward shrinks
from 30 blocks to 5, about a third of a step's compute. It applies only when the prefix
really is shared: embedders frozen, the student's first blocks being the teacher's blocks
0..K−1 with no subcomponent removed, and equal weights (checked tensor by tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


def shared_prefix_length(
    kept: Sequence[int],
    frozen: set[int],
    freeze_embedders: bool,
    removed_component_blocks: set[int],
    teacher_blocks: Mapping[int, nn.Module],
    student_blocks: Mapping[int, nn.Module],
    teacher: nn.Module,
    student: nn.Module,
    block_list_names: Sequence[str],
) -> int:
    """How many leading student blocks can be skipped (0 when the prefix is not shared)."""
    if not freeze_embedders:
        return 0
    length = 0
    for position, index in enumerate(kept):
        if index != position or index not in frozen or index in removed_component_blocks:
            break
        length += 1
    if length == 0 or length == len(kept) or not any(i >= length for i in teacher_blocks):
        return 0
    prefixes = tuple(f"{n}." for n in block_list_names)
    t_params = dict(teacher.named_parameters())
    for name, param in student.named_parameters():
        if name.startswith(prefixes) or name.startswith(("norm_out.", "proj_out.")):
            continue
        if name not in t_params or not _same(param, t_params[name]):
            return 0
    for index in kept[:length]:
        t_block = dict(teacher_blocks[index].named_parameters())
        for name, param in student_blocks[index].named_parameters():
            if name not in t_block or not _same(param, t_block[name]):
                return 0
    return length


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, allowing the teacher to be stored in a lower precision (bf16 on a GPU)."""
    if a.shape != b.shape:
        return False
    return torch.equal(a.detach().to(b.dtype), b.detach())


class SharedPrefix:
    """Context manager: while active, the student's first ``length`` blocks reuse the teacher's activations."""

    def __init__(
        self,
        teacher_block: nn.Module,
        student_prefix: Sequence[nn.Module],
        student_block: nn.Module,
    ):
        self.teacher_block = teacher_block
        self.student_prefix = list(student_prefix)
        self.student_block = student_block
        self._inputs: tuple[torch.Tensor | None, torch.Tensor] | None = None
        self._handles: list = []

    def __enter__(self) -> SharedPrefix:
        self._handles.append(
            self.teacher_block.register_forward_pre_hook(self._record, with_kwargs=True)
        )
        self._handles.append(
            self.student_block.register_forward_pre_hook(self._inject, with_kwargs=True)
        )
        for block in self.student_prefix:
            block.forward = _pass_through
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for block in self.student_prefix:
            del block.forward
        self._inputs = None

    def _record(self, module, args, kwargs) -> None:
        hidden, context = _block_inputs(args, kwargs)
        self._inputs = (context.detach() if context is not None else None, hidden.detach())

    def _inject(self, module, args, kwargs):
        if self._inputs is None:
            raise RuntimeError("the teacher must run before the student when the prefix is shared")
        context, hidden = self._inputs
        if "hidden_states" in kwargs:
            kwargs = {**kwargs, "hidden_states": hidden, "encoder_hidden_states": context}
        else:
            args = (hidden, context, *args[2:])
        return args, kwargs


def _block_inputs(args, kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden_states, encoder_hidden_states) of a diffusers block call, by keyword or position."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    if "encoder_hidden_states" in kwargs:
        context = kwargs["encoder_hidden_states"]
    else:
        context = args[1] if len(args) > 1 else None
    return hidden, context


def _pass_through(*args, **kwargs):
    hidden, context = _block_inputs(args, kwargs)
    return context, hidden
