"""Toy models: parameter counts, and CPU latency of pruned variants against the original.

For each toy architecture (``hprune toy-model``), runs the contribution analysis
(fidelity/SSIM, one prompt, one seed), then prunes to ``--budget`` with HPP (critical
fraction 0.75: random weights give flat drops) and the
BK-SDM and KOALA baselines, and measures, interleaved round by round so that all
variants see the same machine load:

- transformer parameters (as hprune's loader holds them) and the fraction of the original;
- one transformer forward pass (batch 1, the latent of a 64x64 image), median over rounds;
- one whole 64x64 image (text encoders, ``--steps`` denoising steps, VAE decode), median;
- SSIM of the variant's image to the original's at the same seed (random weights: this says
  how far the cut moves the output, not how good the images are).

    .venv/bin/python benchmarks/toy_models.py --rounds 15

Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from generation.adapters import get_adapter
from generation.measurement.contrib import read_contrib, render, run_contrib
from generation.measurement.scorers import get_scorer
from generation.planning import HPPRule, bk_sdm_plan, hpp_plan, koala_plan
from generation.recipes.prune import prune_model
from generation.store.loading import load_pipeline
from generation.store.toy_models import save_toy_pipeline
from hprune.contracts.prompts import Prompt
from hprune.contracts.variants import PipelineOptions

PROMPT = Prompt(prompt_id="p", text="a photo of two red circles", category="", metadata={})


def component_params(pipe) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }


def transformer_call(pipe, options: PipelineOptions):
    """A closure running one transformer forward pass on the latent of one image."""
    transformer = pipe.transformer
    latent_side = options.height // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    if type(transformer).__name__.startswith("Flux"):
        tokens = (latent_side // 2) ** 2
        inputs = dict(
            hidden_states=torch.randn(1, tokens, transformer.config.in_channels, generator=g),
            encoder_hidden_states=torch.randn(
                1, 32, transformer.config.joint_attention_dim, generator=g
            ),
            pooled_projections=torch.randn(
                1, transformer.config.pooled_projection_dim, generator=g
            ),
            timestep=torch.tensor([0.5]),
            img_ids=torch.zeros(tokens, 3),
            txt_ids=torch.zeros(32, 3),
        )
    else:
        channels = transformer.config.in_channels
        inputs = dict(
            hidden_states=torch.randn(1, channels, latent_side, latent_side, generator=g),
            encoder_hidden_states=torch.randn(
                1, 32 + 77, transformer.config.joint_attention_dim, generator=g
            ),
            pooled_projections=torch.randn(
                1, transformer.config.pooled_projection_dim, generator=g
            ),
            timestep=torch.tensor([500.0]),
        )

    def call() -> None:
        with torch.inference_mode():
            transformer(**inputs, return_dict=False)

    return call


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = PipelineOptions(
        steps=args.steps, guidance=0.0, height=64, width=64, max_sequence_length=32
    )
    items = [(PROMPT.text, 0)]
    ssim = get_scorer("fidelity")

    size_rows, speed_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("sd3", "sd35", "flux"):
            root = Path(tmp) / arch
            original = save_toy_pipeline(arch, root / "original")
            contrib = root / "contrib.json"
            run_contrib(
                original,
                [PROMPT],
                [0],
                contrib,
                steps=args.steps,
                height=64,
                width=64,
                max_sequence_length=32,
                progress=False,
            )
            contribution = read_contrib(contrib)
            plans = {
                # random weights give flat drops: at the paper's critical fraction (0.25 of
                # the largest) every block would be critical (docs/hpp-rule.md)
                "hpp": lambda a, o, c=contribution: hpp_plan(
                    a, c, args.budget, original_parameters=o, rule=HPPRule(critical_fraction=0.75)
                ),
                "bk-sdm": lambda a, o: bk_sdm_plan(a, args.budget, original_parameters=o),
                "koala": lambda a, o, c=contribution: koala_plan(
                    a, c, args.budget, original_parameters=o
                ),
            }
            dirs = {"original": original}
            removed = {"original": "-"}
            for name, make in plans.items():
                plan, _ = prune_model(original, root / name, make)
                dirs[name] = root / name
                parts = [str(b) for b in plan.block_indices()] + [
                    f"{b}:{c}" for b, c in plan.component_parts()
                ]
                removed[name] = ", ".join(parts)
            pipes = {name: load_pipeline(d) for name, d in dirs.items()}

            counts = component_params(pipes["original"])
            adapter = get_adapter(pipes["original"].transformer)
            kinds = {}
            for index in range(adapter.num_blocks):
                kinds.setdefault(adapter.block_kind(index), adapter.block_params(index))
            size_rows.append(
                f"| {arch} | {adapter.config_counts()} | {counts['transformer']:,} | "
                + ", ".join(f"{k} {v:,}" for k, v in kinds.items())
                + f" | {sum(v for k, v in counts.items() if k.startswith('text_encoder')):,} | {counts['vae']:,} |"
            )

            reference = render(pipes["original"], items, options, batch_size=1)
            calls = {name: transformer_call(pipe, options) for name, pipe in pipes.items()}
            forward = {name: [] for name in pipes}
            image = {name: [] for name in pipes}
            for name in pipes:  # warm-up
                calls[name]()
                render(pipes[name], items, options, batch_size=1)
            for _ in range(args.rounds):
                for name, pipe in pipes.items():
                    forward[name].append(timed(calls[name]))
                    image[name].append(
                        timed(lambda pipe=pipe: render(pipe, items, options, batch_size=1))
                    )
            base_forward = statistics.median(forward["original"])
            base_image = statistics.median(image["original"])
            base_params = get_adapter(pipes["original"].transformer).total_params()
            for name, pipe in pipes.items():
                params = get_adapter(pipe.transformer).total_params()
                similarity = ssim.score(
                    render(pipe, items, options, batch_size=1), [PROMPT], reference
                )[0]
                f, i = statistics.median(forward[name]), statistics.median(image[name])
                speed_rows.append(
                    f"| {arch} | {name} | {removed[name]} | {params:,} ({params / base_params:.1%}) | "
                    f"{f * 1000:.2f} ({f / base_forward:.2f}x) | {i * 1000:.1f} ({i / base_image:.2f}x) | "
                    f"{similarity:.3f} |"
                )

    print("| arch | blocks | transformer params | params per block | text encoders | VAE |")
    print("|---|---|---:|---|---:|---:|")
    print("\n".join(size_rows))
    print()
    print(
        f"| arch | variant (budget {args.budget:g}) | removed | transformer params | "
        "transformer forward ms | 64x64 image ms | SSIM vs original |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    print("\n".join(speed_rows))


if __name__ == "__main__":
    main()
