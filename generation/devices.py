"""Device and dtype names as users type them, turned into torch objects with clear errors."""

from __future__ import annotations

import torch

from hprune.errors import UserError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``, ``"float32"``, a ``torch.dtype`` or None (keep the stored dtype)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (CUDA if present, else CPU)."""
    if isinstance(device, torch.device):
        return device
    name = (device or "cpu").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {device!r} (use cpu, cuda, cuda:N, mps or auto)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} asked for, but no CUDA GPU is available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} GPUs exist"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked for, but MPS is not available here")
    return resolved
