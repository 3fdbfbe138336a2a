"""Profiling: full-size parameter counts and bytes (meta device), the memory method, and
``hprune profile`` on a toy pipeline and on full-size configs."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from generation.measurement.profiling.memory import peak_memory
from generation.store.architectures import build_from_config, read_arch_config
from generation.transforms.footprint import (
    expected_bytes,
    linear_parameter_fraction,
    parameter_count,
)
from hprune.cli import main

GB = 1e9
GIB = 2**30

# (config file, parameters in billions as the configs define them)
FULL_SIZE = [
    ("stable-diffusion-3.5-large", 8.06),
    ("stable-diffusion-3.5-large-turbo", 8.06),
    ("stable-diffusion-3.5-medium", 2.24),
    ("FLUX.1-schnell", 11.89),
    ("FLUX.1-dev", 11.90),
]
QUICK = ("--device", "cpu", "--warmup", "0", "--repeats", "1")  # one timed run, no warm-up
PAPER_CUT_20 = [25, 26, 27, 28, 31, 32, 33, 34]  # HierarchicalPrune's released SD3.5-LT cut


def hprune(*args):
    """Run the hprune CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def arch_dir(shared_data):
    return shared_data / "architectures"


def meta_model(arch_dir, name):
    return build_from_config(read_arch_config(arch_dir / f"{name}.json"))


@pytest.mark.parametrize(("name", "billions"), FULL_SIZE)
def test_full_size_parameter_counts_match_the_configs(arch_dir, name, billions):
    model = meta_model(arch_dir, name)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert round(parameter_count(model) / 1e9, 2) == billions
    # quantisation reaches nearly everything: the Linear layers hold > 99.9% of the weights
    assert linear_parameter_fraction(model) > 0.999


def test_bf16_bytes_equal_the_published_checkpoint_size(arch_dir):
    """The SD3.5 Large (Turbo) transformer's safetensors index states total_size 16292561536
    (SOURCE.md): the bf16 parameters plus the stored positional-embedding buffer."""
    model = meta_model(arch_dir, "stable-diffusion-3.5-large-turbo")
    stored = expected_bytes(model, None, torch.bfloat16)
    assert stored.total == 16_292_561_536
    assert stored.weights == 2 * parameter_count(model)
    assert stored.buffers == 2 * 192 * 192 * 2432  # pos_embed: max 192x192 patches x width


def test_nf4_is_under_30_percent_of_bf16_at_full_size(arch_dir):
    for name, _ in FULL_SIZE:
        model = meta_model(arch_dir, name)
        bf16 = expected_bytes(model, None).weights
        nf4 = expected_bytes(model, "nf4").weights
        assert linear_parameter_fraction(model) >= 0.95
        assert nf4 <= 0.30 * bf16, name


PAPER_CUT_30 = "25-28,31-34," + ",".join(
    [f"{i}:{c}" for i in range(13, 19) for c in ("ff", "ff_context")]
    + [f"{i}:norm1_context" for i in (14, 15, 16)]
)


def test_released_cuts_plus_double_quantised_nf4_stored_bytes(arch_dir):
    """The bytes docs/benchmarks.md sets beside the paper's 3.56 / 3.24 GiB (peak of one
    forward, so stored bytes plus activations): SD3.5-LT at 20% + NF4 stores 3.22 GiB
    (weights 3.06 GiB + the bf16 position table 0.17 GiB), at 30% 2.90 GiB; without double
    quantisation 3.50 / 3.14 GiB."""
    from generation.adapters import get_adapter
    from generation.transforms.plan import explicit_plan
    from generation.transforms.surgery import apply_plan

    full = meta_model(arch_dir, "stable-diffusion-3.5-large-turbo")
    found = {}
    for level, spec in (("20", ",".join(map(str, PAPER_CUT_20))), ("30", PAPER_CUT_30)):
        cut = meta_model(arch_dir, "stable-diffusion-3.5-large-turbo")
        adapter = get_adapter(cut)
        apply_plan(adapter, explicit_plan(adapter, spec, original_parameters=0))
        kept = round(parameter_count(cut) / parameter_count(full), 4)
        for double_quant in (True, False):
            nf4 = expected_bytes(cut, "nf4", double_quant=double_quant)
            found[level, double_quant] = (
                kept,
                round(nf4.weights / GIB, 2),
                round(nf4.total / GIB, 2),
            )
    assert found == {
        ("20", True): (0.7885, 3.06, 3.22),
        ("20", False): (0.7885, 3.33, 3.50),
        ("30", True): (0.7048, 2.73, 2.90),
        ("30", False): (0.7048, 2.98, 3.14),
    }
    bf16 = expected_bytes(full, None)
    assert round(bf16.total / GIB, 2) == 15.17  # the paper's original peak: 15.80 GiB


def test_flux_text_tokens_default_to_what_each_pipeline_feeds(arch_dir):
    from generation.measurement.profiling.command import default_text_tokens

    def config(name):
        return read_arch_config(arch_dir / f"{name}.json")

    assert default_text_tokens(config("FLUX.1-schnell")) == 256  # its pipeline's maximum
    assert default_text_tokens(config("FLUX.1-dev")) == 512
    assert default_text_tokens(config("stable-diffusion-3.5-large-turbo")) == 333


def test_cpu_peak_memory_sees_torch_allocations():
    """The CPU method replays the allocator: 8 MB live at once, then 4 MB -> peak 8 MB."""
    with peak_memory("cpu") as peak:
        a = torch.ones(2_000_000)  # 8 MB
        b = a * 2  # 8 MB more while a is alive -> 16 MB
        del a, b
        c = torch.ones(1_000_000)  # 4 MB
        del c
    assert 16_000_000 <= peak.above_start_bytes < 16_100_000
    assert peak.method.startswith("torch.profiler")


def test_cpu_peak_memory_counts_resident_modules():
    layer = torch.nn.Linear(100, 100)
    with peak_memory("cpu", layer) as peak:
        layer(torch.ones(1, 100))
    assert peak.start_bytes == (100 * 100 + 100) * 4
    assert peak.total_bytes > peak.start_bytes


def test_profile_command_on_a_toy_pipeline(sd3_toy_dir, tmp_path):
    out = tmp_path / "profile.json"
    result = hprune("profile", "--model", sd3_toy_dir, *QUICK, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["architecture"] == "SD3Transformer2DModel"
    assert report["device"] == "cpu"
    assert report["quantization"] is None
    assert report["parameters"] > 0
    assert report["weights_bytes"] == 4 * report["parameters"]  # fp32 toy
    assert report["stored_bytes"] == report["weights_bytes"] + report["buffers_bytes"]
    assert report["step"]["batch"] == 2  # classifier-free guidance doubles the batch
    for name in ("step", "image"):
        entry = report[name]
        assert entry["latency_ms_median"] > 0
        assert entry["peak_memory_bytes"] > entry["peak_memory_above_start_bytes"] > 0
    # a whole image holds the text encoders and the VAE as well as the transformer
    assert report["image"]["peak_memory_bytes"] > report["step"]["peak_memory_bytes"]
    assert sum(report["pipeline_stored_bytes"].values()) > report["stored_bytes"]
    assert report["source"]["fingerprint"]
    assert "SD3Transformer2DModel" in result.output


def test_profile_command_counts_a_full_size_config(arch_dir, tmp_path):
    out = tmp_path / "p.json"
    args = ["profile", "--arch-config", str(arch_dir / "stable-diffusion-3.5-large-turbo.json")]
    result = hprune(*args, "--remove", "25-28,31-34", "--scheme", "nf4", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["device"] == "meta"
    assert report["source"]["removed"] == {"blocks": PAPER_CUT_20, "subcomponents": []}
    assert 0.78 < report["parameters"] / report["source"]["original_parameters"] < 0.80
    assert report["quantization"] == "nf4" and report["double_quant"] is True
    assert report["weights_bytes"] < 0.3 * report["unquantized_weights_bytes"]
    assert "step" not in report  # counting only: nothing ran
    assert (
        "nf4, double quantisation" in result.output
        and "stored 3.460 GB = 3.223 GiB" in result.output
    )
    plain = hprune(*args, "--remove", "25-28,31-34", "--scheme", "nf4", "--no-double-quant",
                   "--out", tmp_path / "plain.json")  # fmt: skip
    assert plain.exit_code == 0 and "stored 3.756 GB = 3.498 GiB" in plain.output


def test_profile_command_times_a_random_weight_transformer_from_a_config(tmp_path):
    """The timing path of --arch-config, on a small config (full size is for a GPU)."""
    config = tmp_path / "small.json"
    config.write_text(
        json.dumps(
            {
                "_class_name": "FluxTransformer2DModel",
                "attention_head_dim": 16,
                "axes_dims_rope": [4, 6, 6],
                "guidance_embeds": True,
                "in_channels": 16,
                "joint_attention_dim": 32,
                "num_attention_heads": 2,
                "num_layers": 2,
                "num_single_layers": 2,
                "pooled_projection_dim": 32,
            }
        )
    )
    out = tmp_path / "p.json"
    options = "--scheme nf4 --dtype float32 --latent-size 8 --text-tokens 5 --steps 2 --remove 1"
    result = hprune("profile", "--arch-config", config, *QUICK, *options.split(), "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["quantization"] == "nf4"
    assert report["image"]["transformer_only"] is True
    assert report["step"]["peak_memory_bytes"] > 0


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, t: ["--model", str(t / "nowhere")], "does not exist"),
        (lambda d, t: ["--arch-config", str(t / "nowhere.json")], "does not exist"),
        (lambda d, t: ["--arch-config", str(t / "corrupt.json")], "not valid JSON"),
        (lambda d, t: ["--arch-config", str(t / "unet.json")], "unsupported transformer"),
        (lambda d, t: ["--arch-config", str(t / "nameless.json")], "_class_name"),
        (lambda d, t: ["--arch-config", str(t / "badvalues.json")], "cannot build"),
        (lambda d, t: ["--model", str(d), "--arch-config", str(t / "x.json")], "exactly one"),
        (lambda d, t: ["--model", str(d), "--scheme", "nf4"], "--arch-config"),
        (lambda d, t: ["--model", str(d), "--repeats", "0"], "--repeats"),
        (lambda d, t: ["--arch-config", str(t / "flux.json"), "--scheme", "nf5"], "unknown"),
        (lambda d, t: ["--arch-config", str(t / "flux.json"), "--remove", "0-99"], "out of range"),
        (lambda d, t: ["--model", str(d), "--out", str(t / "exists.json")], "already exists"),
    ],
)
def test_profile_bad_input_is_one_line(sd3_toy_dir, arch_dir, tmp_path, make_args, message):
    (tmp_path / "corrupt.json").write_text('{"_class_name": "SD3Tr')
    (tmp_path / "unet.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    (tmp_path / "nameless.json").write_text('{"num_layers": 3}')
    (tmp_path / "badvalues.json").write_text(
        '{"_class_name": "SD3Transformer2DModel", "num_layers": "many"}'
    )
    (tmp_path / "flux.json").write_text((arch_dir / "FLUX.1-schnell.json").read_text())
    (tmp_path / "exists.json").write_text("keep me")
    args = make_args(sd3_toy_dir, tmp_path)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "new.json")]
    result = hprune("profile", *args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert message in lines[0]
    assert not (tmp_path / "new.json").exists()
    assert (tmp_path / "exists.json").read_text() == "keep me"
