"""`hprune distill` end to end on toy SD3 and FLUX models (CPU, a few dozen steps, 32x32 images).

One uninterrupted SD3 run is the reference the others are compared with: a run stopped and
resumed, a run without the shared prefix, a run with inverse weighting.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from hprune.cli import main

STEPS = 12
COMMON = [
    "--steps", str(STEPS), "--batch-size", "2", "--resolution", "32", "--max-sequence-length", "8",
    "--lr", "2e-3", "--log-every", "2", "--checkpoint-every", "4", "--seed", "3",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Two threads per op on a shared 2-core machine are several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hprune(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok and result.exit_code != 0:
        raise AssertionError(
            f"hprune {' '.join(map(str, args))} failed:\n{result.output}"
        ) from result.exception
    return result


def make_data(folder: Path, n: int = 8) -> Path:
    """Tiny captioned images: coloured squares on a grey background, with exact captions."""
    colours = {
        "red": (220, 30, 30),
        "green": (30, 200, 60),
        "blue": (40, 60, 220),
        "yellow": (230, 220, 40),
    }
    folder.mkdir(parents=True)
    for i in range(n):
        name, rgb = list(colours.items())[i % 4]
        im = Image.new("RGB", (40, 32), (128, 128, 128))
        left = 4 + 3 * i
        im.paste(rgb, (left, 8, left + 14, 22))
        im.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a {name} square")
    return folder


def weights(model: Path) -> dict[str, torch.Tensor]:
    return load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def world(tmp_path_factory, toy_model_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill")
    teacher = toy_model_dir("sd3")  # 8 joint blocks
    student = root / "student"
    hprune("prune", "--model", teacher, "--remove", "3-4", "--out", student)  # kept 0-2,5-7; K = 3
    return {
        "root": root,
        "teacher": teacher,
        "student": student,
        "data": make_data(root / "data"),
        "cache": root / "cache",
    }


def run(world, out: str, *extra: str, ok: bool = True):
    return hprune(
        "distill", "--teacher", world["teacher"], "--student", world["student"], "--data", world["data"],
        "--cache-dir", world["cache"], "--out", world["root"] / out, *COMMON, *extra, ok=ok,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(world) -> Path:
    run(world, "ref")
    return world["root"] / "ref"


def test_distilled_student_learns_keeps_frozen_prefix_and_reloads(world, reference) -> None:
    from diffusers import DiffusionPipeline

    from generation.model_record import read_record
    from generation.store.loading import load_pipeline

    assert not Path(f"{reference}.checkpoints").exists()  # the default checkpoints go with success
    log = json.loads((reference / "distill_log.json").read_text())
    losses = [row["output_kd"] for row in log["losses"]]
    assert len(losses) == STEPS // 2
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
    assert all("feature_kd/5" in row and "feature_kd/7" in row for row in log["losses"])
    assert log["config"]["seed"] == 3 and log["frozen_blocks"] == [0, 1, 2]
    assert log["noise_levels"] == "scheduler" and log["features"] == ["blocks"]
    assert log["noise_level_median"] == pytest.approx(0.75, abs=1e-3)  # the toy's shift 3
    assert log["frozen_up_to_first_removed_part"] is None  # the first cut is a whole block
    assert log["shared_prefix_blocks"] == 3 and "git_commit" in log["runs"][0]

    before, after = weights(world["student"]), weights(reference)
    assert before.keys() == after.keys()
    frozen = [
        k for k in before if k.startswith(("pos_embed.", "time_text_embed.", "context_embedder."))
    ]
    frozen += [k for k in before if k.split(".")[:2] in (["transformer_blocks", "0"], ["transformer_blocks", "1"], ["transformer_blocks", "2"])]  # fmt: skip
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    trainable = [k for k in before if k not in frozen]
    changed = [k for k in trainable if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.9 * len(trainable)
    assert any(k.startswith("proj_out.") for k in changed)

    record = read_record(reference)
    assert record.kept_blocks == [0, 1, 2, 5, 6, 7]
    assert record.history[-1]["stage"] == "distill" and record.history[-1]["frozen_blocks"] == [
        0,
        1,
        2,
    ]
    plain = DiffusionPipeline.from_pretrained(reference)
    assert plain.transformer.config.num_layers == 6
    pipe = load_pipeline(reference)
    image = pipe("a red square", num_inference_steps=2, height=32, width=32, max_sequence_length=8,
                 generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip
    assert image.size == (32, 32)
    # the next stage takes it as it takes any pruned model
    quantized = world["root"] / "ref-nf4"
    hprune("quantize", "--model", reference, "--scheme", "nf4", "--out", quantized)
    stages = [h["stage"] for h in read_record(quantized).history]
    assert stages[-2:] == ["distill", "quantize"]


def test_resume_after_a_forced_stop_is_exact(world, reference) -> None:
    stopped = run(world, "resumed", "--stop-after", "5")
    assert "stopped at step 5" in stopped.output
    assert not (world["root"] / "resumed").exists()
    again = run(world, "resumed", ok=False)
    assert again.exit_code == 2 and "--resume" in again.output
    run(world, "resumed", "--resume")
    assert not (world["root"] / "resumed.checkpoints").exists()
    ref, resumed = weights(reference), weights(world["root"] / "resumed")
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
    log = json.loads((world["root"] / "resumed" / "distill_log.json").read_text())
    ref_log = json.loads((reference / "distill_log.json").read_text())
    assert [r["total"] for r in log["losses"]] == [r["total"] for r in ref_log["losses"]]
    assert [r["from_step"] for r in log["runs"]] == [0, 5]


def test_checkpoints_in_a_named_folder_are_kept(world, tmp_path) -> None:
    run(
        world,
        "kept",
        "--checkpoint-dir",
        tmp_path / "ckpt",
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
    )
    assert (world["root"] / "kept").is_dir() and (tmp_path / "ckpt" / "losses.jsonl").is_file()
    assert (tmp_path / "ckpt" / "step-00000002" / "progress.json").is_file()


def test_shared_prefix_computes_exactly_what_the_full_student_computes(world, reference) -> None:
    run(world, "unshared", "--no-shared-prefix")
    ref, unshared = weights(reference), weights(world["root"] / "unshared")
    assert all(torch.equal(ref[k], unshared[k]) for k in ref)


def _block_change(before, after, block: int) -> float:
    """Relative change ‖Δθ‖/‖θ‖ of one block (current position) of the student."""
    keys = [k for k in before if k.startswith(f"transformer_blocks.{block}.")]
    delta = sum(((after[k] - before[k]) ** 2).sum() for k in keys) ** 0.5
    norm = sum((before[k] ** 2).sum() for k in keys) ** 0.5
    return float(delta / norm)


def test_inverse_weighting_moves_sensitive_blocks_less(world, reference) -> None:
    from generation.store.fingerprints import model_fingerprint

    contrib = world["root"] / "contrib.json"
    write_contrib(contrib, model_fingerprint(world["teacher"]), {5: 2.0, 6: 0.2, 7: 0.02}, n=8)
    run(world, "inverse", "--weighting", "inverse", "--contrib", contrib)
    log = json.loads((world["root"] / "inverse" / "distill_log.json").read_text())
    assert log["block_weights"] == pytest.approx({"5": 0.01, "6": 0.1, "7": 1.0})
    before = weights(world["student"])
    binary, inverse = weights(reference), weights(world["root"] / "inverse")
    # current positions 3, 4, 5 are original blocks 5 (most sensitive), 6, 7 (least)
    b = [_block_change(before, binary, i) for i in (3, 4, 5)]
    w = [_block_change(before, inverse, i) for i in (3, 4, 5)]
    assert w[0] < w[1] < w[2]
    assert w[0] / w[2] < 0.3 * (b[0] / b[2])


def test_the_encoders_are_loaded_only_to_build_the_cache(world, reference, monkeypatch) -> None:
    """With the latent cache built, the teacher's text encoders and VAE (about 10 GB at full
    size) are not loaded; a fresh cache loads them, and encodes exactly what the first did."""
    import generation.recipes.distill.pair as pair
    from generation.recipes.distill.pair import ENCODERS

    loaded: list[list[str]] = []
    real = pair.load_pipeline

    def spy(*args, **kwargs):
        pipe = real(*args, **kwargs)
        loaded.append(sorted(n for n, c in pipe.components.items() if n in ENCODERS and c))
        return pipe

    monkeypatch.setattr(pair, "load_pipeline", spy)
    run(world, "cached", "--stop-after", "1")  # the reference run built the cache
    assert loaded == [[]]
    loaded.clear()
    fresh = world["root"] / "fresh-cache"
    run(world, "uncached", "--stop-after", "1", "--cache-dir", fresh)
    assert loaded == [[], ["text_encoder", "text_encoder_2", "text_encoder_3", "vae"]]
    [built] = fresh.iterdir()
    for shard in built.glob("*.safetensors"):
        first, again = load_file(world["cache"] / built.name / shard.name), load_file(shard)
        assert first.keys() == again.keys()
        assert all(torch.equal(first[k], again[k]) for k in first)


def test_flux_distils_and_reloads(tmp_path, toy_model_dir) -> None:
    from diffusers import DiffusionPipeline

    teacher = toy_model_dir("flux")  # 4 double + 8 single blocks
    student = tmp_path / "student"
    hprune("prune", "--model", teacher, "--remove", "6-8,10:mlp", "--out", student)
    out = tmp_path / "out"
    result = hprune(
        "distill", "--teacher", teacher, "--student", student, "--data", make_data(tmp_path / "data", 4),
        "--out", out, "--no-cache", "--steps", "4", "--batch-size", "2", "--resolution", "32",
        "--max-sequence-length", "8", "--lr", "2e-3", "--log-every", "2", "--mixed-precision", "bf16",
        "--features", "blocks,attn", "--lambda-task", "0.5", "--noise-levels", "unshifted",
    )  # fmt: skip
    assert "wrote the distilled model" in result.output
    log = json.loads((out / "distill_log.json").read_text())
    assert log["frozen_blocks"] == [0, 1, 2, 3, 4, 5] and log["shared_prefix_blocks"] == 6
    assert log["mixed_precision"] == "bf16" and log["noise_levels"] == "unshifted"
    row = log["losses"][-1]
    assert {"task_x0", "feature_kd/9", "feature_kd/9/attn", "feature_kd/10/attn"} <= set(row)
    before, after = weights(student), weights(out)
    assert all(
        torch.equal(before[k], after[k]) for k in before if k.startswith("transformer_blocks.")
    )
    assert not torch.equal(before["proj_out.weight"], after["proj_out.weight"])
    from generation.transforms import pruned_classes  # names the class of the saved transformer

    reloaded = DiffusionPipeline.from_pretrained(out).transformer
    assert type(reloaded) is pruned_classes.PrunedFluxTransformer2DModel
    assert reloaded.config.num_single_layers == 5
    assert reloaded.config.removed_subcomponents == [[7, "mlp"]]


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def write_contrib(path: Path, fingerprint: str, drops: dict[int, float], n: int) -> None:
    """A contrib.json (generation.measurement.contrib's format) with chosen block drops for an ``n``-block SD3 model."""
    from generation.measurement.contrib import CONTRIB_FORMAT, CONTRIB_VERSION

    entries = [{"block": i, "component": "block", "drop": drops.get(i, 0.5)} for i in range(n)]
    path.write_text(json.dumps({
        "format": CONTRIB_FORMAT, "version": CONTRIB_VERSION, "model_fingerprint": fingerprint,
        "family": "sd3", "num_blocks": n, "original_indices": list(range(n)),
        "scorer": {"name": "fidelity", "higher_is_better": True}, "entries": entries,
    }))  # fmt: skip


@pytest.mark.parametrize(
    "case", ["not-descendant", "empty-data", "orphan-caption", "foreign-contrib", "unpruned"]
)
def test_bad_input(world, toy_model_dir, tmp_path, case) -> None:
    args = {"--teacher": world["teacher"], "--student": world["student"], "--data": world["data"]}
    extra: list[str] = []
    if case == "not-descendant":
        args["--teacher"] = toy_model_dir("sd35")
    elif case == "empty-data":
        args["--data"] = tmp_path / "empty"
        args["--data"].mkdir()
    elif case == "orphan-caption":
        data = shutil.copytree(world["data"], tmp_path / "data")
        (data / "img9.txt").write_text("a lonely caption")
        args["--data"] = data
    elif case == "foreign-contrib":
        write_contrib(tmp_path / "contrib.json", "0" * 16, {5: 1.0, 6: 1.0, 7: 1.0}, n=8)
        extra = ["--weighting", "inverse", "--contrib", str(tmp_path / "contrib.json")]
    elif case == "unpruned":
        args["--student"] = world["teacher"]
    out = tmp_path / "out"
    flat = [str(x) for kv in args.items() for x in kv]
    result = hprune(
        "distill", *flat, "--out", out, "--cache-dir", tmp_path / "cache", *COMMON, *extra, ok=False
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.output
    assert not out.exists() and not Path(f"{out}.checkpoints").exists()


@pytest.mark.slow
def test_two_processes_equal_one_process_accumulating(world, tmp_path) -> None:
    """DDP under torchrun (what `accelerate launch` runs), 2 CPU processes x batch 1, against one
    process with 2 accumulation steps of batch 1: the same samples and noise, the same update."""
    import os
    import socket
    import subprocess
    import sys

    args = [
        "distill", "--teacher", world["teacher"], "--student", world["student"], "--data", world["data"],
        "--cache-dir", world["cache"], "--steps", "3", "--batch-size", "1", "--resolution", "32",
        "--max-sequence-length", "8", "--lr", "2e-3", "--log-every", "1",
    ]  # fmt: skip
    hprune(*args, "--grad-accum", "2", "--out", tmp_path / "one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), "-m", "hprune.cli", *map(str, args), "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote the distilled model") == 1
    log = json.loads((tmp_path / "two" / "distill_log.json").read_text())
    assert log["num_processes"] == 2
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    before = weights(world["student"])
    moved = [k for k in one if not torch.equal(one[k], before[k])]
    assert moved and all(torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-6) for k in one)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_the_run_resumes(world, tmp_path) -> None:
    """SIGINT (Ctrl-C, or a scheduler's pre-emption with SIGTERM) stops at a step boundary with a checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "long"
    args = [
        "distill", "--teacher", world["teacher"], "--student", world["student"], "--data", world["data"],
        "--cache-dir", world["cache"], "--out", out, "--steps", "100000", "--batch-size", "1",
        "--resolution", "32", "--max-sequence-length", "8", "--log-every", "1", "--checkpoint-every", "100000",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hprune.cli", *map(str, args)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    losses = Path(f"{out}.checkpoints") / "losses.jsonl"
    deadline = time.monotonic() + 300
    while not (losses.is_file() and losses.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    step = int(stdout.split("stopped at step ")[1].split()[0])
    assert 2 <= step < 100000 and not out.exists()
    assert (Path(f"{out}.checkpoints") / f"step-{step:08d}" / "progress.json").is_file()
    again = hprune(*args, "--resume", "--stop-after", str(step + 2))
    assert f"stopped at step {step + 2}" in again.output


def test_a_student_of_other_shapes_is_refused() -> None:
    """Same family and block counts, but not the teacher's weights' shapes: refused before training."""
    from generation.adapters import get_adapter, record_for_transformer
    from generation.recipes.distill.pair import make_pair
    from generation.recipes.prune import pruned_record
    from generation.store.toy_models import ToySpec, build_sd3_transformer
    from generation.transforms.plan import explicit_plan
    from generation.transforms.surgery import apply_plan
    from hprune.errors import UserError

    teacher = build_sd3_transformer(ToySpec())
    student = build_sd3_transformer(ToySpec(attention_head_dim=8))
    adapter = get_adapter(student)
    base = record_for_transformer(student)
    plan = explicit_plan(adapter, "3-4", original_parameters=base.original_parameters)
    record = pruned_record(base, plan, apply_plan(adapter, plan), parent_fingerprint="x")
    with pytest.raises(UserError, match="not a pruned descendant"):
        make_pair(
            None,
            student,
            record_for_transformer(teacher),
            record,
            teacher_fingerprint="x",
            teacher=teacher,
        )
