"""Train the mini teacher on the shapes world, from a seed, on a CPU.

Three stages, read top to bottom in :func:`train`:

1. **VAE.** The ``AutoencoderKL`` learns to reconstruct freshly drawn shapes images
   (L1 + MSE, a small KL term). Its latent mean and spread then set the VAE's
   ``shift_factor`` and ``scaling_factor``, as SD3's were set, so the transformer sees
   latents of zero mean and unit variance.
2. **Latents.** ``num_samples`` captioned scenes are drawn and encoded once (the
   posterior's mode, ``generation.adapters.encoding.encode_pixels``).
3. **MMDiT.** Rectified-flow matching (``generation.flow_matching``): σ from a logit-normal,
   x_t = σ·ε + (1−σ)·x0, regress the velocity ε − x0. ``caption_dropout`` of the captions
   are replaced by "" so that classifier-free guidance has an unconditional branch that the
   pipeline's empty negative prompt reaches. AdamW, linear warm-up and cosine decay,
   gradient clipping, and an exponential moving average of the weights, which is what
   gets saved.

The three text encoders stay at their seeded random initialisation. Trained jointly with
the MMDiT they learnt to tell shapes and counts apart but folded the six colour words
together (at 3,000 steps the flow-matching loss with the wrong colour in the caption was
within 1% of the right one's, and colours followed the noise, not the prompt); frozen, a
random encoder keeps every word distinct and the MMDiT learns to read them (docs/benchmarks.md,
"Mini world"). A frozen encoder also lets every caption be encoded once, before training.

Every random draw comes from generators seeded by ``TrainConfig.seed``, so a run is
reproducible on the same machine and library versions. mini-GenEval on the held-out
prompts is logged every ``eval_every`` steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from generation.flow_matching import flow_matching_loss, noisy_latents, sample_sigmas
from generation.mini import EVALUATION_PROMPTS
from generation.mini.teacher import TEXT_LENGTH, build_teacher, teacher_variant, write_info
from generation.shapes_world import shapes

DEFAULT_WEIGHTS = {
    "single_object": 0.5,
    "two_object": 1.0,
    "counting": 1.5,
    "colors": 1.0,
    "position": 2.0,
    "color_attr": 1.5,
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved beside the model as train_config.json)."""

    seed: int = 0
    threads: int = 1  # one thread: reproducible, and fastest on a busy shared machine
    # stage 1: VAE
    vae_steps: int = 700
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    # stage 2: data
    num_samples: int = 30_000
    category_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # stage 3: MMDiT
    steps: int = 9_000
    batch_size: int = 16
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    sigma_mean: float = 0.0  # logit-normal noise levels: sigmoid(N(mean, std²))
    sigma_std: float = 1.0
    # logging
    log_every: int = 50
    eval_every: int = 3000
    eval_seeds: int = 1


# ---------------------------------------------------------------------------- helpers


def to_pixels(images) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1]."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def cosine_lr(step: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio · lr`` at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    ratio = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * progress)
    )
    return config.lr * ratio


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    torch._foreach_mul_(ema, decay)
    torch._foreach_add_(ema, params, alpha=1 - decay)


def evaluate_heldout(pipe, *, seeds: int = 1, **options):
    """mini-GenEval (``generation.mini.benchmark.Evaluation``) of ``pipe`` on the held-out prompts."""
    from generation.mini.benchmark import evaluate_pipeline
    from hprune.contracts.prompts import read_prompts

    prompts = read_prompts(EVALUATION_PROMPTS)
    return evaluate_pipeline(pipe, teacher_variant(**options), prompts, list(range(seeds)))


class _Log:
    """JSON lines to a file, and the same dicts kept in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.start = time.time()
        self.cpu_start = time.process_time()

    def __call__(self, **row) -> None:
        row = {
            "wall_s": round(time.time() - self.start, 1),
            "cpu_s": round(time.process_time() - self.cpu_start, 1),
            **row,
        }
        self.rows.append(row)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------- stage 1: VAE


def train_vae(vae, config: TrainConfig, log: Callable[..., None]) -> None:
    """Fit the autoencoder to fresh shapes images, then set its latent shift and scale."""
    from generation.adapters.encoding import encode_pixels

    stream = shapes.iter_samples(config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    vae.train()
    bar = tqdm(range(config.vae_steps), desc="vae", unit="step")
    for step in bar:
        lr = (
            config.vae_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / config.vae_steps))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        pixels = to_pixels([next(stream).image() for _ in range(config.vae_batch)])
        posterior = vae.encode(pixels).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(z).sample
        error = reconstruction - pixels
        loss = error.abs().mean() + (error**2).mean() + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % config.log_every == 0 or step == config.vae_steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log(stage="vae", step=step, loss=round(loss.item(), 5), lr=lr)
    vae.eval()
    # SD3 normalises latents as (z - shift) * scale before the transformer sees them.
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    sample = to_pixels([s.image() for s in shapes.training_samples(512, config.seed + 2)])
    z = encode_pixels(vae, sample)
    shift, scale = float(z.mean()), float(1.0 / z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    log(stage="vae", event="latent_normalisation", shift_factor=shift, scaling_factor=scale)


@torch.no_grad()
def vae_roundtrip_score(vae, n: int, seed: int) -> float:
    """Share of ground-truth images that still satisfy their captions after encode -> decode."""
    from generation.adapters.encoding import encode_pixels
    from generation.shapes_world.geneval import evaluate_image

    samples = shapes.training_samples(n, seed)
    z = encode_pixels(vae, to_pixels([s.image() for s in samples]))
    decoded = vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample
    array = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    from PIL import Image

    ok = [
        evaluate_image(Image.fromarray(a), s.prompt, s.metadata)["correct"]
        for a, s in zip(array, samples, strict=True)
    ]
    return float(np.mean(ok))


# ---------------------------------------------------------------------------- stage 2: data


@torch.no_grad()
def encode_dataset(vae, config: TrainConfig) -> tuple[torch.Tensor, list[str]]:
    """Latents (N, C, h, w) and captions of ``num_samples`` scenes drawn from the training stream."""
    from generation.adapters.encoding import encode_pixels

    samples = shapes.training_samples(
        config.num_samples, config.seed + 3, weights=config.category_weights
    )
    latents = []
    for start in tqdm(range(0, len(samples), 256), desc="encoding", unit="batch"):
        chunk = samples[start : start + 256]
        latents.append(encode_pixels(vae, to_pixels([s.image() for s in chunk])))
    return torch.cat(latents), [s.prompt for s in samples]


# ---------------------------------------------------------------------------- stage 3: MMDiT


class CaptionTable:
    """The text embeddings of every distinct caption (and of ""), computed once by the frozen encoders."""

    def __init__(self, pipe, captions: list[str]) -> None:
        from generation.adapters.encoding import encode_text

        self.captions = sorted(set(captions) | {""})
        self.index = {caption: i for i, caption in enumerate(self.captions)}
        with torch.no_grad():
            self.text = encode_text(pipe, self.captions, max_sequence_length=TEXT_LENGTH)

    def lookup(self, captions: list[str]) -> dict[str, torch.Tensor]:
        rows = torch.tensor([self.index[c] for c in captions])
        return {key: value[rows] for key, value in self.text.items()}


@torch.no_grad()
def validation_loss(
    transformer,
    latents: torch.Tensor,
    captions: list[str],
    table: CaptionTable,
    *,
    n: int = 64,
    seed: int = 0,
) -> float:
    """Flow-matching loss on a fixed batch, fixed noise and an even grid of σ: comparable across steps."""
    from generation.adapters.encoding import predict_velocity

    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(captions), generator=generator)[:n]
    x0 = latents[index]
    noise = torch.randn(x0.shape, generator=generator)
    sigmas = torch.linspace(0.05, 0.95, len(index))
    text = table.lookup([captions[i] for i in index.tolist()])
    velocity = predict_velocity(transformer, noisy_latents(x0, noise, sigmas), sigmas, text)
    return float(flow_matching_loss(velocity, x0, noise))


def train_transformer(pipe, latents, captions, config: TrainConfig, log) -> list[dict]:
    """Flow-matching training of the MMDiT; the EMA weights end up in ``pipe.transformer``."""
    from generation.adapters.encoding import predict_velocity

    table = CaptionTable(pipe, captions)
    transformer = pipe.transformer
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.99),
    )
    generator = torch.Generator().manual_seed(config.seed + 4)
    evaluations = []
    running = []
    bar = tqdm(range(config.steps), desc="mmdit", unit="step")
    for step in bar:
        lr = cosine_lr(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(len(captions), (config.batch_size,), generator=generator)
        drop = torch.rand(config.batch_size, generator=generator) < config.caption_dropout
        batch_captions = [
            "" if d else captions[i] for i, d in zip(index.tolist(), drop.tolist(), strict=True)
        ]
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=generator)
        sigmas = sample_sigmas(
            config.batch_size, generator, mean=config.sigma_mean, std=config.sigma_std
        )
        text = table.lookup(batch_captions)
        velocity = predict_velocity(transformer, noisy_latents(x0, noise, sigmas), sigmas, text)
        loss = flow_matching_loss(velocity, x0, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        ema_update(
            ema, [p.detach() for p in params], min(config.ema_decay, (1 + step) / (10 + step))
        )
        running.append(loss.item())
        if (step + 1) % config.log_every == 0 or step == config.steps - 1:
            mean_loss = float(np.mean(running))
            running = []
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            log(
                stage="mmdit",
                step=step + 1,
                loss=round(mean_loss, 5),
                lr=lr,
                grad_norm=round(float(grad_norm), 3),
            )
        if config.eval_every and ((step + 1) % config.eval_every == 0 or step == config.steps - 1):
            with _swapped_in(ema, params, [transformer]):
                val_loss = validation_loss(transformer, latents, captions, table, seed=config.seed)
                scores = evaluate_heldout(pipe, seeds=config.eval_seeds).scores()
            scores = {k: round(v, 4) for k, v in scores.items()}
            row = {"step": step + 1, "val_loss": round(val_loss, 5), "mini_geneval": scores}
            log(stage="mmdit", event="eval", **row)
            evaluations.append(row)
    with torch.no_grad():
        torch._foreach_copy_(params, ema)
    transformer.eval()
    return evaluations


@contextlib.contextmanager
def _swapped_in(ema: list[torch.Tensor], params: list[torch.Tensor], modules) -> Iterator[None]:
    """The EMA weights in the modules (in eval mode) for the block; the training weights after it."""
    backup = [p.detach().clone() for p in params]
    with torch.no_grad():
        torch._foreach_copy_(params, ema)
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, backup)
        for module in modules:
            module.train()


# ---------------------------------------------------------------------------- the run


def train(config: TrainConfig, *, log_path: str | Path | None = None):
    """Build the teacher from ``config.seed`` and train all three stages.

    Returns ``(pipe, summary, log_rows)``; ``log_path`` also receives the log rows as they come.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    log = _Log(Path(log_path) if log_path else None)
    pipe = build_teacher(seed=config.seed)
    train_vae(pipe.vae, config, log)
    roundtrip = vae_roundtrip_score(pipe.vae, 300, config.seed + 5)
    log(stage="vae", event="roundtrip_mini_geneval", accuracy=roundtrip)
    latents, captions = encode_dataset(pipe.vae, config)
    log(stage="data", samples=len(captions), latent_shape=list(latents.shape[1:]))
    evaluations = train_transformer(pipe, latents, captions, config, log)
    pipe.set_progress_bar_config(disable=True)
    summary = {
        "vae_roundtrip_mini_geneval": roundtrip,
        "evaluations": evaluations,
        "wall_s": round(time.time() - log.start, 1),
        "cpu_s": round(time.process_time() - log.cpu_start, 1),
        "torch_threads": config.threads,
    }
    return pipe, summary, log.rows


def save_teacher(
    pipe,
    out: str | Path,
    config: TrainConfig,
    summary: dict,
    log_rows: list[dict],
    *,
    overwrite: bool = False,
) -> None:
    """Write the trained pipeline with train_config.json, train_log.jsonl and mini_teacher.json."""
    from hprune.fileio import atomic_output_dir

    with atomic_output_dir(out, overwrite=overwrite) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        (staging / "train_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        (staging / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
        write_info(staging, {"training": summary})
