"""Rendering matched stimulus sets from toy SD3 and FLUX pipelines (random weights, 32x32, 2 steps)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from hprune.cli import main as cli
from hprune.contracts.manifest import (
    COLUMNS,
    read_manifest,
    read_render_info,
    read_stimulus_prompts,
    reference_name,
    verify_manifest,
)
from hprune.contracts.prompts import read_prompts
from hprune.contracts.variants import read_variants
from hprune.errors import UserError

SEEDS = [0, 1]


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind)
        pos += 12 + length
    return chunks


def render_cli(variants_file: Path, prompts_file: Path, seeds: str, out: Path):
    return CliRunner().invoke(
        cli,
        [
            "render",
            "--variants",
            variants_file,
            "--prompts",
            prompts_file,
            "--seeds",
            seeds,
            "--out",
            out,
        ],
    )


def variants_yaml(folder: Path, sd3: Path, flux: Path, *, copy_steps: int = 2) -> Path:
    """original (reference), an identical copy, SD3 with CFG and another scheduler shift, and FLUX."""
    path = folder / "variants.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            - name: original
              model: {sd3}
              reference: true
              pipeline: {{steps: 2, guidance: 0.0, resolution: 32}}
            - name: copy
              model: {sd3}
              pipeline: {{steps: {copy_steps}, guidance: 0.0, resolution: 32}}
            - name: cfg
              model: {sd3}
              pipeline:
                steps: 2
                guidance: 4.0
                resolution: 32
                max_sequence_length: 16
                scheduler: {{class: FlowMatchEulerDiscreteScheduler, shift: 1.0}}
            - name: flux
              model: {flux}
              pipeline: {{steps: 2, guidance: 0.0, resolution: 32}}
            """
        )
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sd3_toy_dir, flux_toy_dir):
    folder = tmp_path_factory.mktemp("render")
    prompts = folder / "prompts.txt"
    prompts.write_text("a red circle above a blue square\n")
    return folder, variants_yaml(folder, sd3_toy_dir, flux_toy_dir), prompts


@pytest.fixture(scope="module")
def rendered(setup):
    """One complete set, rendered once for the module; tests copy it before changing anything."""
    from generation.measurement.rendering.stimuli import render_stimuli

    folder, variants_file, prompts_file = setup
    out = folder / "stimuli"
    summary = render_stimuli(
        read_variants(variants_file),
        read_prompts(prompts_file),
        SEEDS,
        out,
        batch_size=2,
        progress=False,
    )
    assert (summary.total, summary.rendered, summary.complete) == (8, 8, True)
    return out


def copy_set(rendered: Path, tmp_path: Path) -> Path:
    out = tmp_path / "stimuli"
    shutil.copytree(rendered, out)
    return out


def by_item(stimuli: Path) -> dict[tuple[str, str, int], str]:
    return {row.item: row.sha256 for row in verify_manifest(stimuli)}


def test_identical_variants_render_identical_images(rendered):
    images = by_item(rendered)
    prompts = {pid for _, pid, _ in images}
    for prompt_id in prompts:
        for seed in SEEDS:
            assert images["original", prompt_id, seed] == images["copy", prompt_id, seed]
            assert images["original", prompt_id, seed] != images["cfg", prompt_id, seed]
        assert images["original", prompt_id, 0] != images["original", prompt_id, 1]


def test_initial_noise_depends_only_on_the_seed(sd3_toy_dir, flux_toy_dir):
    from generation.measurement.rendering.batches import initial_latents
    from generation.store.loading import load_pipeline

    for directory, shape in ((sd3_toy_dir, (4, 4, 4)), (flux_toy_dir, (4, 16))):
        pipe = load_pipeline(directory)
        batch = initial_latents(pipe, [5, 7], 32, 32)
        assert batch.shape[1:] == shape and batch.dtype == torch.float32
        assert torch.equal(batch[1], initial_latents(pipe, [7], 32, 32)[0])
        assert torch.equal(batch[0], initial_latents(pipe, [3, 5], 32, 32)[1])
        assert not torch.equal(batch[0], batch[1])


def test_manifest_rows_match_files_and_say_nothing_in_names_or_chunks(rendered, sd3_toy_dir):
    from generation.store.fingerprints import model_fingerprint

    assert tuple((rendered / "manifest.csv").read_text().splitlines()[0].split(",")) == COLUMNS
    rows = verify_manifest(rendered)
    assert len(rows) == 8 and len({row.item for row in rows}) == 8
    for row in rows:
        assert re.fullmatch(r"images/[0-9a-f]{16}\.png", row.file) and row.image_id in row.file
        data = (rendered / row.file).read_bytes()
        assert set(png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}
        assert row.variant.encode() not in data and row.prompt.encode() not in data
        assert (row.width, row.height, row.steps) == (32, 32, 2)
    cfg = next(row for row in rows if row.variant == "cfg")
    assert cfg.guidance == 4.0
    original = next(row for row in rows if row.variant == "original")
    assert original.model_fingerprint == model_fingerprint(sd3_toy_dir)
    assert {p.name for p in (rendered / "images").iterdir()} == {Path(r.file).name for r in rows}
    assert reference_name(rendered) == "original"
    assert set(read_stimulus_prompts(rendered)) == {row.prompt_id for row in rows}
    assert read_render_info(rendered)["complete"] is True
    assert not (rendered / ".journal").exists()


def test_interrupted_render_resumes_without_duplicates(setup, tmp_path, monkeypatch):
    from generation.measurement.rendering import stimuli

    _, variants_file, prompts_file = setup
    variants = read_variants(variants_file)[:1]
    prompts = read_prompts(prompts_file)
    seeds = [0, 1, 2, 3]
    out = tmp_path / "stimuli"
    real_append = stimuli.append_journal
    calls = {"n": 0}

    def crash_on_third(journal, row):
        calls["n"] += 1
        if calls["n"] == 3:  # the image is written, its journal line is not
            raise KeyboardInterrupt
        real_append(journal, row)

    monkeypatch.setattr(stimuli, "append_journal", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        stimuli.render_stimuli(variants, prompts, seeds, out, progress=False)
    first = {row.item: row for row in verify_manifest(out)}  # the orphan image is gone
    assert len(first) == 2 and read_render_info(out)["complete"] is False

    monkeypatch.setattr(stimuli, "append_journal", real_append)
    summary = stimuli.render_stimuli(variants, prompts, seeds, out, progress=False)
    assert (summary.already_done, summary.rendered, summary.complete) == (2, 2, True)
    rows = verify_manifest(out)
    assert len(rows) == 4 and len({row.item for row in rows}) == 4
    assert all(row in rows for row in first.values())  # kept as they were: same ids, bytes, times
    again = stimuli.render_stimuli(variants, prompts, seeds, out, progress=False)
    assert again.rendered == 0 and read_manifest(out) == rows


def test_changed_variant_or_weights_are_refused_then_forced(
    setup, rendered, tmp_path, sd3_toy_dir, flux_toy_dir
):
    from generation.measurement.rendering.stimuli import render_stimuli

    _, _, prompts_file = setup
    prompts = read_prompts(prompts_file)
    out = copy_set(rendered, tmp_path)
    before = (out / "manifest.csv").read_bytes()
    changed = read_variants(variants_yaml(tmp_path, sd3_toy_dir, flux_toy_dir, copy_steps=3))
    with pytest.raises(UserError, match=r"variant 'copy' changed in variants\.yaml"):
        render_stimuli(changed, prompts, SEEDS, out, progress=False)
    assert (out / "manifest.csv").read_bytes() == before

    summary = render_stimuli(changed, prompts, SEEDS, out, force=True, progress=False)
    assert summary.rendered == 2
    old, new = by_item(rendered), by_item(out)
    assert all(new[item] == old[item] for item in old if item[0] != "copy")
    assert all(new[item] != old[item] for item in old if item[0] == "copy")  # 3 steps now


def test_changed_model_weights_are_refused(setup, tmp_path, sd3_toy_dir):
    """Same variants.yaml, same model path, different files: the model fingerprint tells."""
    from generation.measurement.rendering.stimuli import render_stimuli

    _, _, prompts_file = setup
    model = tmp_path / "model"
    shutil.copytree(sd3_toy_dir, model)
    (tmp_path / "variants.yaml").write_text(
        f"- {{name: only, model: {model}, pipeline: {{steps: 1, guidance: 0.0, resolution: 32}}}}\n"
    )
    variants = read_variants(tmp_path / "variants.yaml")
    prompts = read_prompts(prompts_file)[:1]
    render_stimuli(variants, prompts, [0], tmp_path / "stimuli", progress=False)
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "shift": 2.0}))
    with pytest.raises(UserError, match="variant 'only' has different model weights"):
        render_stimuli(variants, prompts, [0, 1], tmp_path / "stimuli", progress=False)
    assert len(verify_manifest(tmp_path / "stimuli")) == 1


def test_manifest_that_disagrees_with_files_is_refused(rendered, setup, tmp_path):
    _, variants_file, prompts_file = setup
    out = copy_set(rendered, tmp_path)
    victim = read_manifest(out)[0].file
    (out / victim).unlink()
    before = sorted(p.name for p in (out / "images").iterdir())
    result = render_cli(variants_file, prompts_file, "0-1", out)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {out / 'manifest.csv'} disagrees with the files: {victim} is missing"
    ]
    assert sorted(p.name for p in (out / "images").iterdir()) == before


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("seeds", "runs backwards"),
        ("duplicate", "duplicate variant name 'original'"),
        ("missing-model", "does not exist"),
        ("prompt-format", "unknown prompt format"),
        ("empty-prompts", "no prompts"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_set_alone(
    rendered, setup, tmp_path, flux_toy_dir, problem, message
):
    _, variants_file, prompts_file = setup
    out = copy_set(rendered, tmp_path)
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    seeds = "3-1" if problem == "seeds" else "0-1"
    if problem in ("duplicate", "missing-model"):
        text = variants_file.read_text()
        if problem == "duplicate":
            text = text.replace("name: copy", "name: original")
        else:
            text = text.replace(f"model: {flux_toy_dir}", "model: /nonexistent/model")
        variants_file = tmp_path / "variants.yaml"
        variants_file.write_text(text)
    if problem == "prompt-format":
        prompts_file = tmp_path / "prompts.docx"
        prompts_file.write_text("a cat\n")
    if problem == "empty-prompts":
        prompts_file = tmp_path / "prompts.txt"
        prompts_file.write_text("\n\n")
    result = render_cli(variants_file, prompts_file, seeds, out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and re.search(message, lines[0])
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot


def test_a_failed_first_run_leaves_no_folder(setup, tmp_path):
    from generation.measurement.rendering.stimuli import render_stimuli

    _, variants_file, prompts_file = setup
    variants = read_variants(variants_file)
    bad = [
        replace(variants[0], pipeline=replace(variants[0].pipeline, scheduler="NoSuchScheduler"))
    ]
    with pytest.raises(UserError, match="not a diffusers scheduler"):
        render_stimuli(bad, read_prompts(prompts_file), SEEDS, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a stimuli folder"):
        render_stimuli(
            variants[:1], read_prompts(prompts_file), SEEDS, tmp_path / "taken", progress=False
        )
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_parse_seeds():
    from generation.measurement.rendering.stimuli import parse_seeds

    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("7, 0,2-3,2") == [0, 2, 3, 7]
    for bad in ("3-1", "-1", "", "a", "1-", "0-3x"):
        with pytest.raises(UserError):
            parse_seeds(bad)


@pytest.mark.slow
def test_sharded_render_over_two_processes_equals_one_process(setup, rendered, tmp_path):
    """``torchrun`` (what ``accelerate launch`` runs) with 2 CPU processes: the same images, no more, no fewer."""
    _, variants_file, prompts_file = setup
    variants = yaml.safe_load(variants_file.read_text())
    two = tmp_path / "variants.yaml"  # SD3 and FLUX: each process renders one of them
    two.write_text(yaml.safe_dump([v for v in variants if v["name"] in ("original", "flux")]))
    out = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--standalone",  # the rendezvous binds a free port itself (no pick-then-bind race)
        "-m", "hprune.cli", "render", "--variants", str(two), "--prompts", str(prompts_file),
        "--seeds", "0-1", "--out", str(out), "--batch-size", "2",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 images" in result.stdout and "2 rendered here" in result.stdout
    assert result.stdout.count("images/s") == 1  # only the main process reports
    single = {
        item: sha for item, sha in by_item(rendered).items() if item[0] in ("original", "flux")
    }
    assert by_item(out) == single
    assert len(list((out / "images").iterdir())) == 4


def test_pruned_and_quantised_models_are_variants(sd3_toy_dir, tmp_path):
    """Models written by ``hprune prune`` and ``hprune quantize``, and a variant quantised on load."""
    from generation.measurement.rendering.stimuli import render_stimuli

    pruned, nf4 = tmp_path / "pruned", tmp_path / "pruned-nf4"
    for args in (
        ["prune", "--model", str(sd3_toy_dir), "--remove", "5-6", "--out", str(pruned)],
        ["quantize", "--model", str(pruned), "--scheme", "nf4", "--out", str(nf4)],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    options = "pipeline: {steps: 2, guidance: 0.0, resolution: 32}"
    (tmp_path / "variants.yaml").write_text(
        f"- {{name: original, model: {sd3_toy_dir}, reference: true, {options}}}\n"
        f"- {{name: pruned, model: pruned, {options}}}\n"
        f"- {{name: pruned-nf4, model: pruned-nf4, {options}}}\n"
        f"- {{name: pruned-nf4-on-load, model: pruned, quantization: nf4, {options}}}\n"
    )
    variants = read_variants(tmp_path / "variants.yaml")
    prompt = [read_prompts_text(tmp_path, "a red circle")]
    summary = render_stimuli(variants, prompt, [0], tmp_path / "stimuli", progress=False)
    assert summary.complete and summary.rendered == 4
    rows = {row.variant: row for row in verify_manifest(tmp_path / "stimuli")}
    assert rows["original"].sha256 != rows["pruned"].sha256 != rows["pruned-nf4"].sha256
    fingerprints = {name: row.model_fingerprint for name, row in rows.items()}
    assert len({fingerprints["original"], fingerprints["pruned"], fingerprints["pruned-nf4"]}) == 3
    assert (
        fingerprints["pruned-nf4-on-load"] == fingerprints["pruned"]
    )  # same files, quantised in memory
    # a saved nf4 model and the same model quantised on load draw the same image
    assert rows["pruned-nf4"].sha256 == rows["pruned-nf4-on-load"].sha256


def read_prompts_text(folder: Path, text: str):
    (folder / "prompts.txt").write_text(text + "\n")
    return read_prompts(folder / "prompts.txt")[0]
