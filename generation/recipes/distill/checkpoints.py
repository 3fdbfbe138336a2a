"""Checkpoints, exact resume and the run log of a distillation run.

accelerate's ``save_state`` keeps the student, AdamW's moments, the scheduler and the RNG
states; ``progress.json`` beside it keeps the step (and the unfinished log window). The
checkpoint folder also holds ``config.json`` and ``losses.jsonl``, which survive a resume.
SIGINT/SIGTERM stop the loop at the next step boundary (:class:`StopRequest`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from generation.recipes.distill.config import DistillConfig
from hprune.errors import UserError
from hprune.fileio import atomic_write_text

# Settings that may change when a run is resumed; every other one must match the checkpoint.
RESUMABLE_CHANGES = (
    "steps",
    "stop_after",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "out",
    "overwrite",
    "show_progress",
    "cache_dir",
)


def checkpoint_path(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def completed_checkpoints(root: Path) -> list[int]:
    """Steps with a complete checkpoint (``progress.json`` is written last), oldest first."""
    if not root.is_dir():
        return []
    steps = []
    for path in root.glob("step-*"):
        if (path / "progress.json").is_file():
            steps.append(json.loads((path / "progress.json").read_text())["step"])
    return sorted(steps)


def check_resume(config: DistillConfig, root: Path) -> int:
    """The step to start from: 0 for a fresh run, the latest checkpoint's step with --resume."""
    steps = completed_checkpoints(root)
    saved_config = root / "config.json"
    if not config.resume:
        if steps:
            raise UserError(
                f"checkpoints of an earlier run are in {root}: pass --resume to continue it, or remove them"
            )
        return 0
    if not steps:
        raise UserError(f"--resume: no complete checkpoint in {root}")
    saved = json.loads(saved_config.read_text())["config"]
    current = dataclasses.asdict(config)
    changed = [
        k for k in current if k not in (*RESUMABLE_CHANGES, "resume") and saved.get(k) != current[k]
    ]
    if changed:
        raise UserError(
            f"--resume: the checkpoints in {root} were made with different settings ({', '.join(changed)})"
        )
    if steps[-1] > config.steps:
        raise UserError(
            f"--resume: the checkpoint is at step {steps[-1]}, beyond --steps {config.steps}"
        )
    return steps[-1]


def check_same_inputs(saved: dict, teacher_fingerprint: str, dataset: str) -> None:
    """A resumed run must see the same teacher weights and the same data as the run it continues."""
    if saved.get("teacher_fingerprint") != teacher_fingerprint:
        raise UserError("--resume: the teacher's weights changed since the checkpoints were made")
    if saved.get("dataset", {}).get("fingerprint") != dataset:
        raise UserError("--resume: the training data changed since the checkpoints were made")


def pending_losses(root: Path, step: int) -> list[dict]:
    """The losses of the unfinished log window saved with the checkpoint of ``step`` (none for a fresh run)."""
    if not step:
        return []
    return json.loads((checkpoint_path(root, step) / "progress.json").read_text())["pending_losses"]


def save_checkpoint(accelerator, root: Path, step: int, keep: int, pending: list[dict]) -> None:
    """Save the full training state for ``step``, atomically; keep the newest ``keep`` checkpoints."""
    path = checkpoint_path(root, step)
    tmp = root / f".{path.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(
            tmp / "progress.json",
            json.dumps({"step": step, "saved_at": time.time(), "pending_losses": pending}),
        )
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        for old in completed_checkpoints(root)[:-keep]:
            shutil.rmtree(checkpoint_path(root, old), ignore_errors=True)
    accelerator.wait_for_everyone()


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and returns at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # signals can be set only in the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True


# --- the run log ----------------------------------------------------------------------------


class RunLog:
    """config.json and losses.jsonl in the checkpoint folder (they survive a resume); merged at the end."""

    def __init__(self, root: Path, writer: bool) -> None:
        self.root, self.writer = root, writer
        self.config: dict = {}
        self.history: list[dict] = []
        if (root / "config.json").is_file():
            self.config = json.loads((root / "config.json").read_text())
        if (root / "losses.jsonl").is_file():
            self.history = [
                json.loads(line)
                for line in (root / "losses.jsonl").read_text().splitlines()
                if line
            ]

    def write_config(self, config: DistillConfig, start: int, extra: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        runs = self.config.get("runs", [])
        runs.append(
            {
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "from_step": start,
                "git_commit": git_commit(),
            }
        )
        self.config = {"config": dataclasses.asdict(config), **extra, "runs": runs}
        self.history = [h for h in self.history if h["step"] <= start]
        atomic_write_text(self.root / "config.json", json.dumps(self.config, indent=1))
        atomic_write_text(
            self.root / "losses.jsonl", "".join(json.dumps(h) + "\n" for h in self.history)
        )

    def append_losses(self, step: int, window: list[dict]) -> None:
        if not window:
            return
        keys = sorted({k for terms in window for k in terms})
        mean = {k: float(np.mean([t[k] for t in window if k in t])) for k in keys}
        row = {"step": step, "time": time.time(), **mean}
        self.history.append(row)
        if self.writer:
            with open(self.root / "losses.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def as_dict(self) -> dict:
        return {**self.config, "losses": self.history}


def git_commit() -> str | None:
    """The commit of the hprune checkout running this, if it is one."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
