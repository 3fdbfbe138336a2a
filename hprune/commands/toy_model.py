"""``hprune toy-model``: a tiny random-weight pipeline to try every tool without downloading weights."""

from __future__ import annotations

import click

from hprune.commands.options import overwrite_option


@click.command("toy-model")
@click.option(
    "--arch",
    type=click.Choice(["sd3", "sd35", "flux"]),
    required=True,
    help="sd3: 8 joint blocks; sd35: the same with MMDiT-X dual attention in blocks 0-2 and "
    "RMS q/k norm; flux: 4 double + 8 single blocks.",
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Output pipeline directory."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@overwrite_option
def toy_model(arch: str, out: str, seed: int, overwrite: bool) -> None:
    """Build a tiny random-weight but complete diffusers pipeline (text encoders, locally built
    tokenizers, VAE, scheduler, transformer), offline. It loads with
    DiffusionPipeline.from_pretrained(OUT) and renders 64x64 images in a fraction of a second."""
    from generation.adapters import get_adapter
    from generation.store.loading import load_transformer
    from generation.store.toy_models import save_toy_pipeline

    path = save_toy_pipeline(arch, out, seed=seed, overwrite=overwrite)
    adapter = get_adapter(load_transformer(path))
    counts = ", ".join(f"{n} {name}" for name, n in adapter.config_counts().items())
    click.echo(
        f"wrote {arch} toy pipeline to {path} ({counts}; {adapter.total_params():,} transformer parameters)"
    )
