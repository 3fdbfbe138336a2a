"""The distillation run behind ``hprune distill``: PWP freezing plus SGDistill, on accelerate.

Read ``distill`` top to bottom: load the teacher and the pruned student, freeze the preserved
prefix, weight the blocks, encode the data once, build AdamW, restore a checkpoint if asked,
then the loop (same x_t and text for both models, teacher without gradients, student's loss,
clip, step), then save the student as a normal self-describing pruned model.

One GPU, several GPUs (DDP) and DeepSpeed ZeRO-2 are a launch choice, not code:
``accelerate launch [--multi_gpu | --use_deepspeed --zero_stage 2] -m hprune.cli distill ...``.

Exact resume. Everything random in a step (which samples, σ, ε) is a pure function of
(seed, step, micro-batch slot), so the data position is the step counter itself, and N
processes draw what one process with N accumulation steps draws.
accelerate's ``save_state`` keeps the student, AdamW's moments, the scheduler and the RNG
states; ``progress.json`` beside it keeps the step. A run resumed from step k therefore
computes bit for bit what an uninterrupted run computes (on deterministic hardware, e.g.
the CPU). SIGINT/SIGTERM stop at the next step boundary with a checkpoint, so a pre-empted
job loses nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from generation.adapters.encoding import TEXT_KEYS, predict_velocity
from generation.flow_matching import noisy_latents, sample_sigmas
from generation.recipes.distill import cache as cache_mod
from generation.recipes.distill.data import ImagePolicy, dataset_fingerprint, read_captioned_images
from generation.recipes.distill.freeze import apply_freeze, frozen_blocks, parse_freeze
from generation.recipes.distill.losses import BlockFeatures, LossWeights, distillation_loss
from generation.recipes.distill.pair import DistillPair, load_pair, read_sensitivity, save_student
from generation.recipes.distill.prefix import SharedPrefix, shared_prefix_length
from generation.recipes.distill.weighting import block_weights, parameter_groups
from hprune.errors import UserError
from hprune.fileio import atomic_output_dir, atomic_write_text

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


def distill(config: DistillConfig) -> DistillResult:
    """Run (or resume) one distillation; write ``config.out`` when ``config.steps`` are done."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    ckpt_root = config.checkpoints
    start = _check_resume(config, ckpt_root)
    pairs = read_captioned_images(config.data)  # cheap, so bad data fails before models load
    data_fingerprint = dataset_fingerprint(pairs)

    mixed_precision = config.mixed_precision
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    # A run owns accelerate's process-wide settings (mixed precision): forget an earlier run's,
    # so that several runs can share one process (a notebook, the tests); the process group stays.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # CPU processes (gloo) under torchrun/accelerate launch
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
    )
    set_seed(config.seed)
    device = accelerator.device
    teacher_dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float32

    # --- the two models ------------------------------------------------------------------
    pair = load_pair(config.teacher, config.student, device=device, teacher_dtype=teacher_dtype)

    # --- PWP and SGDistill: what trains, how fast, against what ----------------------------
    trainee = prepare_training(pair, config, accelerator)
    lambdas, weights = trainee.lambdas, trainee.weights

    # --- data: encoded once (or live), addressed by a stateless sample stream -------------
    policy = ImagePolicy(config.resolution or pair.default_resolution)
    max_len = config.max_sequence_length or pair.default_max_sequence_length
    source = _data_source(config, pair, pairs, data_fingerprint, policy, max_len, accelerator)
    if not config.no_cache:
        pair.drop_encoders()  # text encoders and VAE are no longer needed in memory

    run_log = _RunLog(ckpt_root, accelerator.is_main_process)
    if start:
        _check_same_inputs(run_log.config, pair.teacher_fingerprint, data_fingerprint)
        accelerator.load_state(str(_checkpoint_path(ckpt_root, start)))
    if accelerator.is_main_process:
        run_log.write_config(
            config,
            start,
            extra={
                "image_policy": policy.describe(),
                "max_sequence_length": max_len,
                "dataset": {
                    "source": str(config.data),
                    "images": len(pairs),
                    "fingerprint": data_fingerprint,
                },
                "mixed_precision": accelerator.mixed_precision,
                "num_processes": accelerator.num_processes,
                "first_pruned": pair.first_pruned,
                "frozen_blocks": sorted(trainee.frozen),
                "frozen_embedders": trainee.freeze_embedders,
                "shared_prefix_blocks": trainee.shared_prefix_length,
                "trainable_parameters": sum(p.numel() for p in trainee.trainable),
                "frozen_parameter_names": trainee.frozen_names,
                "block_weights": {str(i): w for i, w in weights.items()},
                "teacher_fingerprint": pair.teacher_fingerprint,
            },
        )

    # --- the loop -------------------------------------------------------------------------
    end = min(config.steps, config.stop_after) if config.stop_after else config.steps
    per_step = config.batch_size * config.grad_accum * accelerator.num_processes
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc="distill",
        unit="step",
        disable=not (config.show_progress and accelerator.is_main_process),
    )
    window = _pending_losses(ckpt_root, start)  # a resumed run finishes the interrupted log window
    step = start
    with trainee, _StopRequest() as stop:
        while step < end and not stop.requested:
            for micro in range(config.grad_accum):
                slot = micro * accelerator.num_processes + accelerator.process_index
                indices = sample_indices(
                    config.seed,
                    len(source),
                    step * per_step + slot * config.batch_size,
                    config.batch_size,
                )
                generator = torch.Generator().manual_seed(step_seed(config.seed, step, slot))
                window.append(training_step(trainee, source.batch(indices), generator))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]['total']:.4g}", out=f"{window[-1]['output_kd']:.4g}")
            if step % config.log_every == 0 or step == config.steps:
                run_log.append_losses(step, window)
                window = []
            if (
                step % config.checkpoint_every == 0
                or (step == end < config.steps)
                or stop.requested
            ):
                _save_checkpoint(accelerator, ckpt_root, step, config.keep_checkpoints, window)
    bar.close()
    student = trainee.student

    if step < config.steps:
        accelerator.wait_for_everyone()
        return DistillResult(
            None, step, run_log.history, stop.requested, accelerator.is_main_process
        )

    # --- the result: a normal self-describing pruned model --------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(student)
        entry = {
            "stage": "distill",
            "teacher_fingerprint": pair.teacher_fingerprint,
            "steps": config.steps,
            "freeze": parse_freeze(config.freeze).describe(),
            "frozen_blocks": sorted(trainee.frozen),
            "weighting": config.weighting,
            "block_weights": {str(i): w for i, w in weights.items()},
            "lambdas": dataclasses.asdict(lambdas),
            "lr": config.lr,
            "batch_size_global": per_step,
            "dataset_fingerprint": data_fingerprint,
            "image_policy": policy.describe(),
            "seed": config.seed,
            "final_losses": run_log.history[-1] if run_log.history else {},
        }
        with atomic_output_dir(out, overwrite=config.overwrite) as tmp:
            save_student(pair, final, tmp, entry)
            atomic_write_text(tmp / "distill_log.json", json.dumps(run_log.as_dict(), indent=1))
    accelerator.wait_for_everyone()
    return DistillResult(out, step, run_log.history, False, accelerator.is_main_process)


# --- one training step ---------------------------------------------------------------------


@dataclass
class Trainee:
    """The student being trained and everything one step needs; a context manager for the feature hooks."""

    accelerator: object
    teacher: torch.nn.Module
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    trainable: list[torch.nn.Parameter]
    weights: dict[int, float]
    lambdas: LossWeights
    frozen: set[int]
    freeze_embedders: bool
    frozen_names: list[str]
    teacher_features: BlockFeatures
    student_features: BlockFeatures
    grad_clip: float
    guidance: float
    sigma_mean: float = 0.0
    sigma_std: float = 1.0
    shared_prefix: SharedPrefix | None = None
    shared_prefix_length: int = 0

    def __enter__(self) -> Trainee:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.teacher_features)
        self._stack.enter_context(self.student_features)
        if self.shared_prefix is not None:
            self._stack.enter_context(self.shared_prefix)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def prepare_training(pair: DistillPair, config: DistillConfig, accelerator) -> Trainee:
    """PWP freezing, SGDistill block weights, AdamW groups, the schedule, accelerate's wrapping."""
    teacher, student = pair.teacher, pair.student
    teacher.eval().requires_grad_(False)
    student.train()
    if config.gradient_checkpointing:
        student.enable_gradient_checkpointing()

    spec = parse_freeze(config.freeze)
    frozen, freeze_embedders = frozen_blocks(spec, pair.kept, pair.first_pruned)
    summary = apply_freeze(
        student, pair.student_blocks, pair.block_list_names, frozen, freeze_embedders
    )
    trainable_blocks = [i for i in pair.kept if i not in frozen]
    if accelerator.mixed_precision in ("bf16", "fp16"):
        store_frozen_in(
            student, torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float16
        )
    sensitivity = read_sensitivity(config.contrib, pair) if config.contrib else None
    weights = block_weights(config.weighting, trainable_blocks, sensitivity)

    groups = parameter_groups(
        pair.student_blocks, student, weights, lr=config.lr, weight_decay=config.weight_decay
    )
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    length = 0
    if config.shared_prefix:
        length = shared_prefix_length(
            pair.kept, frozen, freeze_embedders,
            {e["block"] for e in pair.student_record.removed_subcomponents},
            pair.teacher_blocks, pair.student_blocks, teacher, student, pair.block_list_names,
        )  # fmt: skip
    shared = None
    if (
        length
    ):  # the student's block `length` continues from where the teacher's block length-1 ends
        shared = SharedPrefix(
            pair.teacher_blocks[min(i for i in pair.teacher_blocks if i >= length)],
            [pair.student_blocks[i] for i in pair.kept[:length]],
            pair.student_blocks[pair.kept[length]],
        )
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None and deepspeed.is_auto("train_micro_batch_size_per_gpu"):
        # accelerate reads DeepSpeed's batch size from a prepared DataLoader; this loop has none
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    return Trainee(
        accelerator=accelerator,
        teacher=teacher,
        student=student,
        optimizer=optimizer,
        scheduler=scheduler,
        trainable=[p for p in student.parameters() if p.requires_grad],
        weights=weights,
        lambdas=LossWeights(config.lambda_out, config.lambda_feat, config.lambda_task),
        frozen=frozen,
        freeze_embedders=freeze_embedders,
        frozen_names=summary["frozen"],
        teacher_features=BlockFeatures({i: pair.teacher_blocks[i] for i in weights}),
        student_features=BlockFeatures({i: pair.student_blocks[i] for i in weights}),
        grad_clip=config.grad_clip,
        guidance=config.guidance,
        sigma_mean=config.sigma_mean,
        sigma_std=config.sigma_std,
        shared_prefix=shared,
        shared_prefix_length=length,
    )


def store_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Keep frozen parameters in the compute dtype where that is lossless; return how many were cast.

    Frozen weights are never updated, so an fp32 master copy only costs memory (11 GB for
    SD3.5-Large-Turbo's preserved prefix). A weight that bf16 cannot hold exactly stays as it is,
    so the saved model's frozen tensors remain bit-identical to the student's.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad or param.dtype == dtype or not param.is_floating_point():
            continue
        low = param.data.to(dtype)
        if torch.equal(low.to(param.dtype), param.data):
            param.data = low
            cast += 1
    return cast


def training_step(
    t: Trainee, batch: dict[str, torch.Tensor], generator: torch.Generator
) -> dict[str, float]:
    """One micro-batch: noise it, run the teacher (no gradients) and the student on the same x_t, step.

    The optimizer really steps only on the last micro-batch of an accumulation (accelerate).
    """
    device = t.accelerator.device
    x0 = batch["latents"].to(device).float()
    text = {k: batch[k].to(device) for k in TEXT_KEYS}
    sigmas = sample_sigmas(x0.shape[0], generator, mean=t.sigma_mean, std=t.sigma_std)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    x_t = noisy_latents(x0, noise, sigmas)

    with torch.no_grad():
        t.teacher_features.start()
        v_teacher = predict_velocity(t.teacher, x_t, sigmas, text, guidance=t.guidance)
        teacher_features = t.teacher_features.stop()

    with t.accelerator.accumulate(t.student):
        t.student_features.start()
        v_student = predict_velocity(t.student, x_t, sigmas, text, guidance=t.guidance)
        student_features = t.student_features.stop()
        loss, terms = distillation_loss(
            v_student,
            v_teacher,
            student_features,
            teacher_features,
            t.weights,
            t.lambdas,
            x0=x0,
            noise=noise,
        )
        t.accelerator.backward(loss)
        if t.accelerator.sync_gradients:
            norm = t.accelerator.clip_grad_norm_(t.trainable, t.grad_clip)
            if norm is not None:  # DeepSpeed clips inside its own step and reports nothing here
                terms["grad_norm"] = float(norm)
        t.optimizer.step()
        if t.accelerator.sync_gradients:
            t.scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
    return terms


# --- pure helpers ---------------------------------------------------------------------------


def sample_indices(seed: int, n: int, first: int, count: int) -> list[int]:
    """Positions ``first .. first+count−1`` of the endless stream of seeded epoch permutations of range(n).

    Epoch e is ``torch.randperm(n)`` under seed (seed, e), so the data position of any step is
    known without state, on every process, after any resume.
    """
    out = []
    position = first
    while len(out) < count:
        epoch, offset = divmod(position, n)
        perm = _epoch_permutation(seed, epoch, n)
        take = min(count - len(out), n - offset)
        out.extend(perm[offset : offset + take])
        position += take
    return out


@functools.lru_cache(maxsize=2)  # consecutive steps read the same epoch (or the next)
def _epoch_permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(step_seed(seed, epoch, -1))
    return tuple(torch.randperm(n, generator=g).tolist())


def step_seed(seed: int, step: int, slot: int) -> int:
    """A well-mixed 63-bit seed for one micro-batch slot of a step.

    ``slot`` = micro-batch × processes + process: N processes with batch b draw exactly the data
    and noise that one process with N accumulation steps of batch b draws, so a run's numbers do
    not depend on how its global batch is spread over GPUs.
    """
    state = np.random.SeedSequence([seed, step, slot + 1]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


# --- data ---------------------------------------------------------------------------------


def _data_source(config, pair, pairs, data_fingerprint, policy, max_len, accelerator):
    """The encoded data: the latent cache (the encoders are loaded only to build it), or live."""
    if config.no_cache:
        pair.load_encoders()
        return cache_mod.LiveEncoder(pair.teacher_pipe, pairs, policy, max_sequence_length=max_len)
    root = Path(config.cache_dir) if config.cache_dir else default_cache_root()
    key = cache_mod.cache_key(
        pair.teacher_pipe,
        pair.teacher_dir,
        data_fingerprint,
        policy,
        max_sequence_length=max_len,
    )
    with accelerator.main_process_first():
        if not cache_mod.is_built(root, key):
            pair.load_encoders()
        return cache_mod.build_cache(
            pair.teacher_pipe,
            pairs,
            policy,
            root,
            key,
            show_progress=config.show_progress and accelerator.is_main_process,
        )


def default_cache_root() -> Path:
    """``$HPRUNE_CACHE_DIR/distill``, else ``$XDG_CACHE_HOME/hprune/distill``, else ``~/.cache/hprune/distill``."""
    if os.environ.get("HPRUNE_CACHE_DIR"):
        return Path(os.environ["HPRUNE_CACHE_DIR"]) / "distill"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hprune" / "distill"


# --- checkpoints --------------------------------------------------------------------------


def _checkpoint_path(root: Path, step: int) -> Path:
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


def _check_resume(config: DistillConfig, root: Path) -> int:
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


def _check_same_inputs(saved: dict, teacher_fingerprint: str, dataset: str) -> None:
    """A resumed run must see the same teacher weights and the same data as the run it continues."""
    if saved.get("teacher_fingerprint") != teacher_fingerprint:
        raise UserError("--resume: the teacher's weights changed since the checkpoints were made")
    if saved.get("dataset", {}).get("fingerprint") != dataset:
        raise UserError("--resume: the training data changed since the checkpoints were made")


def _pending_losses(root: Path, step: int) -> list[dict]:
    """The losses of the unfinished log window saved with the checkpoint of ``step`` (none for a fresh run)."""
    if not step:
        return []
    return json.loads((_checkpoint_path(root, step) / "progress.json").read_text())[
        "pending_losses"
    ]


def _save_checkpoint(accelerator, root: Path, step: int, keep: int, pending: list[dict]) -> None:
    """Save the full training state for ``step``, atomically; keep the newest ``keep`` checkpoints."""
    path = _checkpoint_path(root, step)
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
            shutil.rmtree(_checkpoint_path(root, old), ignore_errors=True)
    accelerator.wait_for_everyone()


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and returns at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
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


class _RunLog:
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
