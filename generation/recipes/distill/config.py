"""What a distillation run depends on (``DistillConfig``, the CLI's options) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hprune.errors import UserError


@dataclass
class DistillConfig:
    """Everything a distillation run depends on (the CLI's options, with the reference defaults)."""

    teacher: str
    student: str
    data: str
    out: str
    steps: int
    freeze: str = "auto"
    weighting: str = "binary"
    contrib: str | None = None
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    warmup_steps: int = 0
    lambda_out: float = 1.0
    lambda_feat: float = 1e-4
    lambda_task: float = 0.0
    resolution: int | None = None
    max_sequence_length: int | None = None
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    noise_levels: str = "scheduler"
    features: str = "blocks"
    guidance: float = 3.5
    seed: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    shared_prefix: bool = True
    checkpoint_every: int = 500
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 1
    resume: bool = False
    stop_after: int | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    log_every: int = 10
    overwrite: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.stop_after is not None and self.stop_after < 1:
            raise UserError("--stop-after must be at least 1")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise UserError("--mixed-precision must be auto, no, bf16 or fp16")
        if self.noise_levels not in ("scheduler", "unshifted"):
            raise UserError("--noise-levels must be scheduler or unshifted")
        unknown = set(self.feature_kinds) - {"blocks", "attn", "attn2"}
        if unknown or not self.feature_kinds:
            raise UserError(
                f"--features {self.features!r}: give a comma list of blocks, attn and attn2"
            )

    @property
    def feature_kinds(self) -> tuple[str, ...]:
        """What feature distillation compares: block outputs, attention outputs, or both."""
        return tuple(dict.fromkeys(k.strip() for k in self.features.split(",") if k.strip()))

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(f"{self.out}.checkpoints")


@dataclass
class DistillResult:
    """What a run did: the output (None when stopped early), the last step, and the loss history."""

    out: Path | None
    step: int
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    main_process: bool = True  # False in the other processes of a multi-process run
