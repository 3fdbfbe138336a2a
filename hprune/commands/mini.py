"""``hprune mini``: the shapes world, its checker, its teacher model and the method run on it."""

from __future__ import annotations

from pathlib import Path

import click

from hprune.errors import UserError


@click.group()
def mini() -> None:
    """The mini world: a small real text-to-image model shipped with hprune, and its benchmark."""


@mini.command("data")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "-n", "--num-images", default=1000, show_default=True, help="Training images to draw."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the training stream.")
@click.option(
    "--holdout-seed",
    default=0,
    show_default=True,
    help="Seed of the held-out evaluation prompts (their color_attr pairs never appear in training).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def data(out: Path, num_images: int, seed: int, holdout_seed: int, overwrite: bool) -> None:
    """Draw shapes images with exact GenEval-style captions.

    Writes OUT/images/*.png, OUT/metadata.jsonl (prompt, tag, include/exclude clauses and the
    drawn objects per image) and OUT/evaluation_metadata.jsonl (the held-out prompts in
    GenEval's format, readable by every hprune command that takes --prompts).
    """
    import json

    from tqdm import tqdm

    from generation.mini import shapes
    from hprune.fileio import atomic_output_dir, atomic_write_text

    if num_images < 0:
        raise UserError(f"--num-images must be >= 0, got {num_images}")
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        records = []
        stream = shapes.iter_samples(seed, holdout_seed=holdout_seed)
        for index in tqdm(range(num_images), desc="drawing", unit="img"):
            sample = next(stream)
            file = f"images/{index:05d}.png"
            sample.image().save(tmp / file)
            records.append(json.dumps(shapes.sample_record(sample, file)))
        atomic_write_text(tmp / "metadata.jsonl", "".join(line + "\n" for line in records))
        shapes.write_evaluation_metadata(tmp / "evaluation_metadata.jsonl", holdout_seed)
    click.echo(f"wrote {num_images} images and the held-out prompts to {out}")
