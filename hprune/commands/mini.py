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

    from generation.shapes_world import shapes
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


@mini.command("train")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output pipeline folder."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the weights and of every draw.")
@click.option(
    "--steps", type=int, default=None, help="MMDiT training steps (default: TrainConfig's)."
)
@click.option("--vae-steps", type=int, default=None, help="VAE training steps.")
@click.option("--samples", type=int, default=None, help="Captioned scenes encoded for the MMDiT.")
@click.option("--batch-size", type=int, default=None, help="MMDiT batch size.")
@click.option(
    "--eval-every",
    type=int,
    default=None,
    help="Steps between held-out mini-GenEval evaluations during training (0: none).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="torch CPU threads (1 is fastest on a busy shared machine).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also append the log here as it is written.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def train(
    out,
    seed,
    steps,
    vae_steps,
    samples,
    batch_size,
    eval_every,
    threads,
    log_path,
    overwrite,
) -> None:
    """Train the mini teacher (VAE, then the MMDiT; the text encoders stay frozen) from a seed, on the CPU.

    Writes a StableDiffusion3Pipeline folder with train_config.json, train_log.jsonl and
    mini_teacher.json (sizes, render settings, timings, held-out mini-GenEval scores).
    """
    from dataclasses import replace

    from generation.mini.train import TrainConfig, save_teacher
    from generation.mini.train import train as run_training

    if out.exists() and not overwrite:
        raise UserError(f"output directory {out} already exists (pass --overwrite to replace it)")
    config = TrainConfig(seed=seed)
    overrides = {
        "steps": steps,
        "vae_steps": vae_steps,
        "num_samples": samples,
        "batch_size": batch_size,
        "eval_every": eval_every,
        "threads": threads,
    }
    for name, value in overrides.items():
        if value is not None and value < (0 if name == "eval_every" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    pipe, summary, rows = run_training(config, log_path=log_path)
    save_teacher(pipe, out, config, summary, rows, overwrite=overwrite)
    last = summary["evaluations"][-1]["mini_geneval"] if summary["evaluations"] else None
    click.echo(
        f"trained in {summary['wall_s']:.0f} s ({summary['cpu_s']:.0f} CPU-s); saved to {out}"
    )
    if last:
        click.echo(f"held-out mini-GenEval (1 seed): {last['overall']:.3f}")


@mini.command("eval")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Pipeline folder to render and judge (default: the shipped teacher).",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="A stimuli folder (hprune render output) to judge instead of rendering.",
)
@click.option(
    "--prompts",
    type=click.Path(path_type=Path),
    default=None,
    help="Prompt file (default: the shipped held-out prompts).",
)
@click.option("--seeds", default="0-3", show_default=True, help="Seeds per prompt, e.g. 0-3.")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the teacher's).")
@click.option(
    "--guidance",
    type=float,
    default=None,
    help="Classifier-free guidance scale (default: the teacher's).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write images and results.jsonl in GenEval's folder layout here.",
)
def eval_(model, images, prompts, seeds, steps, guidance, out) -> None:
    """mini-GenEval: judge a model's images (or a stimuli folder) against their prompts.

    With no arguments, renders the shipped teacher on the held-out prompts (4 seeds) and
    prints the overall score (mean of the six task means) and each task's accuracy.
    """
    from generation.mini import benchmark

    if images is not None:
        if model is not None or out is not None:
            raise UserError("--images judges existing images: it does not take --model or --out")
        if not (images / "manifest.csv").is_file():
            raise UserError(f"{images} is not a stimuli folder (no manifest.csv)")
        evaluations = benchmark.evaluate_stimuli(images)
        click.echo(benchmark.format_scores({v: e.scores() for v, e in evaluations.items()}))
        return

    from generation.measurement.rendering.stimuli import parse_seeds
    from generation.mini import EVALUATION_PROMPTS
    from generation.mini.teacher import TEACHER_DIR, read_info, teacher_variant
    from generation.store.loading import load_pipeline
    from hprune.contracts.prompts import read_prompts

    model = model or TEACHER_DIR
    prompt_list = read_prompts(prompts or EVALUATION_PROMPTS)
    seed_list = parse_seeds(seeds)
    options = dict(read_info(model).get("render", {}))
    if steps is not None:
        options["steps"] = steps
    if guidance is not None:
        options["guidance"] = guidance
    variant = teacher_variant(model, **options)
    pipe = load_pipeline(model)
    evaluation = benchmark.evaluate_pipeline(pipe, variant, prompt_list, seed_list, progress=True)
    if out is not None:
        benchmark.write_geneval_folder(out, evaluation, prompt_list)
    click.echo(f"model {model}: {len(prompt_list)} prompts x {len(seed_list)} seeds")
    click.echo(benchmark.format_scores({"mini-geneval": evaluation.scores()}))


@mini.command("latency")
@click.option(
    "--variants",
    "variants_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="variants.yaml: the models to time.",
)
@click.option("--repeats", type=click.IntRange(1, 1000), default=9, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="latency.json")
def latency(variants_file: Path, repeats: int, device: str, out: Path) -> None:
    """Image latency of every variant, interleaved in one process (median and quartiles).

    Every variant is loaded once; each round renders one image with each of them, in an
    order rotated every round, so the machine's drift falls on all variants alike.
    """
    from generation.mini.latency import measure_variants

    summary = measure_variants(variants_file, out, repeats=repeats, device=device)
    for name, row in summary.items():
        click.echo(f"{name}: {row['median_ms']:.0f} ms (IQR {row['q1_ms']:.0f}-{row['q3_ms']:.0f})")
    click.echo(f"wrote {out}")


# The two chain commands share where the chain lives and how many of its steps run at once.
work_option = click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=Path("runs/mini-paper"),
    show_default=True,
    help="Folder of the mini paper chain: every intermediate model, stimuli and table.",
)
jobs_option = click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Steps of one stage run side by side, one torch thread each (logs in WORK/logs/).",
)


@mini.command("paper")
@work_option
@click.option(
    "--only",
    multiple=True,
    help="Run only the steps whose name starts with this (repeatable), e.g. contrib, prune.",
)
@click.option("--report/--no-report", default=True, help="Write the report at the end.")
@click.option(
    "--report-out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where the report goes (default: docs/mini-results.md; a small trial run should "
    "write elsewhere).",
)
@click.option(
    "--eval-per-category",
    type=click.IntRange(1),
    default=None,
    help="Held-out prompts per category to evaluate (default: all 84 prompts).",
)
@click.option("--eval-seeds", default="0-3", show_default=True, help="Evaluation seeds.")
@click.option("--data-images", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--distill-steps", type=click.IntRange(1), default=200, show_default=True)
@click.option("--contrib-per-category", type=click.IntRange(1), default=2, show_default=True)
@click.option("--profile-repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--latency-repeats", type=click.IntRange(1), default=9, show_default=True)
@click.option(
    "--second-seed/--no-second-seed",
    default=True,
    show_default=True,
    help="Distil the headline variants again from seed 1 (seed-to-seed variation).",
)
@jobs_option
@click.option("--dry-run", is_flag=True, help="Print the command chain and stop.")
def paper(
    work: Path,
    only: tuple[str, ...],
    report: bool,
    report_out: Path | None,
    eval_per_category: int | None,
    eval_seeds: str,
    data_images: int,
    distill_steps: int,
    contrib_per_category: int,
    profile_repeats: int,
    latency_repeats: int,
    second_seed: bool,
    dry_run: bool,
    jobs: int,
) -> None:
    """HierarchicalPrune in miniature: contrib -> HPP -> PWP -> SGDistill -> NF4 and the baselines.

    Runs hprune's own commands on the shipped mini teacher, one subprocess per step (a step
    whose output exists is skipped, so an interrupted run continues), renders every variant
    on the held-out prompts, scores them, profiles them, times their images interleaved, and
    writes the report (mini-GenEval with bootstrap intervals, the paper's claims as paired
    tests with Holm's correction, each stage's wall time) and the contribution heatmap.
    """
    from dataclasses import replace

    from generation.mini import paper as chain

    config = replace(
        chain.PaperConfig(work=work),
        eval_per_category=eval_per_category,
        eval_seeds=eval_seeds,
        data_images=data_images,
        distill_steps=distill_steps,
        contrib_per_category=contrib_per_category,
        profile_repeats=profile_repeats,
        latency_repeats=latency_repeats,
        **({} if second_seed else {"second_seed": ()}),
    )
    if dry_run:
        for step in chain.plan(config):
            click.echo(f"hprune {' '.join(step.args)}")
        return
    chain.run(config, echo=click.echo, only=only or None, jobs=jobs)
    timings = work / "timings.json"
    if timings.exists():
        import json

        stages = json.loads(timings.read_text())["stages"]
        click.echo("stage wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))
    if report and not only:
        from generation.mini.report import write_report

        out = report_out or chain.DOCS / "mini-results.md"
        write_report(config, out)
        click.echo(f"wrote {out}")


@mini.command("demo-stimuli")
@work_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Stimuli folder to write (default: the repository's demo/stimuli).",
)
@jobs_option
def demo_stimuli(work: Path, out: Path | None, jobs: int) -> None:
    """Render and score the stimulus set that `make demo` serves.

    The original, HPP+PWP+NF4 (20%), HPP+PWP+SGDistill+NF4 (30%), and BK-SDM and KOALA
    (+KD, +NF4) at 30%, on 4 held-out prompts per category at seeds 0-1. The models come
    from the `hprune mini paper` chain in WORK (steps whose output exists are skipped).
    """
    from generation.mini import paper as chain

    out = out or chain.DEMO_DIR
    if (out / "manifest.csv").exists() and (out / "metrics.csv").exists():
        raise UserError(f"{out} already holds a scored stimulus set (remove it to render again)")
    chain.run_demo(chain.PaperConfig(work=work), out, echo=click.echo, jobs=jobs)
    click.echo(f"wrote the demo stimuli to {out}")
