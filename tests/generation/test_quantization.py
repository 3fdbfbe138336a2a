"""Quantisation: bitsandbytes layers on the CPU, the byte layout, save -> load round trips
through the project's loader, pipelines that render, and ``hprune quantize``'s bad input."""

from __future__ import annotations

import copy
import shutil

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from bitsandbytes.functional import has_avx512bf16
from click.testing import CliRunner

from generation.adapters.encoding import predict_velocity
from generation.measurement.profiling.command import run_profile
from generation.model_record import read_record
from generation.store import quantized
from generation.store.loading import load_pipeline, load_transformer
from generation.transforms import quantization
from generation.transforms.footprint import (
    linear_parameter_fraction,
    parameter_count,
    stored_bytes,
    tensor_bytes,
)
from hprune.cli import main
from hprune.errors import UserError

ARCHS = ["sd3", "sd35", "flux"]


def hprune(*args):
    """Run the hprune CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


# How far the quantised transformer's output may move, relative L2 over the output tensor.
# Blockwise 4-bit rounding of Gaussian weights has a relative RMS error of ~9% (NF4) and
# ~12% (FP4) per weight; int8 row-wise with outlier columns in 16-bit, under 1%. On the
# random-weight toys the output error tracks the weight error (measured 0.09-0.12 for
# 4-bit, ~0.01 for int8), so twice the per-weight error is a loose but meaningful bound:
# a broken layer (scales in the wrong order, a dropped bias) moves the output by ~100%.
OUTPUT_TOLERANCE = {"nf4": 0.20, "fp4": 0.25, "int8": 0.03}


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output.float() - reference.float()).norm() / reference.float().norm())


def denoising_inputs(transformer, *, seed=0, batch=2, size=8, tokens=7):
    """Deterministic noisy latents, sigmas and text embeddings for one call of ``transformer``."""
    config = transformer.config
    channels = (
        config.in_channels // 4 if "Flux" in type(transformer).__name__ else config.in_channels
    )
    g = torch.Generator().manual_seed(seed)
    text = {
        "prompt_embeds": torch.randn(batch, tokens, config.joint_attention_dim, generator=g),
        "pooled_prompt_embeds": torch.randn(batch, config.pooled_projection_dim, generator=g),
    }
    latents = torch.randn(batch, channels, size, size, generator=g)
    return latents, torch.tensor([0.3, 0.8][:batch]), text


def run(transformer, inputs):
    with torch.inference_mode():
        return predict_velocity(transformer, *inputs)


def render(pipe, seed=0):
    out = pipe(
        "a red circle above a blue square",
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return out.images[0]


@pytest.fixture(scope="module")
def quantized_dirs(toy_model_dir, tmp_path_factory):
    """(arch, scheme) -> directory written by ``hprune quantize`` (built on first use)."""
    built = {}

    def get(arch, scheme="nf4"):
        if (arch, scheme) not in built:
            out = tmp_path_factory.mktemp(f"q-{arch}-{scheme}") / "model"
            result = hprune(
                "quantize", "--model", toy_model_dir(arch), "--scheme", scheme, "--out", out
            )
            assert result.exit_code == 0, result.output
            built[arch, scheme] = out
        return built[arch, scheme]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_transformer_is_close_to_the_original(toy_model_dir, arch):
    original = load_transformer(toy_model_dir(arch))
    inputs = denoising_inputs(original)
    reference = run(original, inputs)
    for scheme in quantization.SCHEMES:
        model = copy.deepcopy(original)
        spec = quantization.quantize_transformer(model, scheme, progress=False)
        linears = [m for m in original.modules() if isinstance(m, torch.nn.Linear)]
        assert len(spec.modules) == len(linears)
        assert not list(quantization.quantizable_linears(model))  # every nn.Linear replaced
        assert parameter_count(model) == parameter_count(original)
        error = relative_error(run(model, inputs), reference)
        assert 0 < error < OUTPUT_TOLERANCE[scheme], (scheme, error)


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_model_reloads_to_the_same_output_and_renders(toy_model_dir, quantized_dirs, arch):
    directory = quantized_dirs(arch)
    # the in-memory model the command saved: the same quantisation of the same weights
    in_memory = load_transformer(toy_model_dir(arch))
    quantization.quantize_transformer(in_memory, "nf4", progress=False)
    pipe = load_pipeline(directory)
    reloaded = pipe.transformer
    assert isinstance(reloaded.hprune_quantization, quantization.QuantizationSpec)
    assert quantization.is_quantized(reloaded)
    inputs = denoising_inputs(in_memory)
    assert torch.equal(run(reloaded, inputs), run(in_memory, inputs))
    # usable inside the pipeline: a 2-step render, the same as with the in-memory model
    image = render(pipe)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    pipe.transformer = in_memory
    np.testing.assert_array_equal(render(pipe), image)
    record = read_record(directory)
    assert record.quantization["scheme"] == "nf4" and record.quantization["double_quant"]
    assert all(s.nested for s in quant_states(reloaded))
    assert record.history[-1]["stage"] == "quantize"


def test_int8_and_fp4_round_trip(toy_model_dir, quantized_dirs):
    for scheme in ("int8", "fp4"):
        in_memory = load_transformer(toy_model_dir("sd3"))
        quantization.quantize_transformer(in_memory, scheme, progress=False)
        reloaded = load_transformer(quantized_dirs("sd3", scheme))
        assert reloaded.hprune_quantization.scheme == scheme
        inputs = denoising_inputs(in_memory)
        assert torch.equal(run(reloaded, inputs), run(in_memory, inputs))


def test_pruned_model_quantises_and_reloads(toy_model_dir, tmp_path):
    """prune -> quantize: the pruned class rebuilds the subcomponent removal before the
    weights load (a FLUX single block without attention and MLP has no proj_out left)."""
    pruned, quantized = tmp_path / "pruned", tmp_path / "quantized"
    spec = "1,2:ff,6:attn,6:mlp,7:norm"
    result = hprune("prune", "--model", toy_model_dir("flux"), "--remove", spec, "--out", pruned)
    assert result.exit_code == 0, result.output
    result = hprune("quantize", "--model", pruned, "--scheme", "nf4", "--out", quantized)
    assert result.exit_code == 0, result.output
    in_memory = load_transformer(pruned)
    quantization.quantize_transformer(in_memory, "nf4", progress=False)
    pipe = load_pipeline(quantized)
    inputs = denoising_inputs(in_memory)
    assert torch.equal(run(pipe.transformer, inputs), run(in_memory, inputs))
    assert np.isfinite(render(pipe)).all()
    record = read_record(quantized)
    assert [entry["stage"] for entry in record.history][-2:] == ["prune", "quantize"]
    assert len(record.removed_subcomponents) == 4 and record.removed_blocks == [1]


def test_other_components_are_linked_not_rewritten(toy_model_dir, quantized_dirs):
    source, directory = toy_model_dir("sd3"), quantized_dirs("sd3")
    for path in (source / "vae").iterdir():
        copy_ = directory / "vae" / path.name
        assert copy_.read_bytes() == path.read_bytes()
    assert (directory / "model_index.json").is_file()


def layout(state):
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


@pytest.mark.parametrize("double_quant", [True, False])
def test_stored_layout_matches_the_meta_device_prediction(toy_model_dir, double_quant):
    """What expected_state() predicts (used for full-size byte counts) is what bnb stores, key
    by key, including a layer whose size is no multiple of the 64-weight block (33 x 7).

    A double-quantised layer writes its offset into a packed JSON description, so the
    prediction is exact given the real offsets; with the assumed one, each description is
    within 20 bytes (the decimal form of one number; bf16 weights give shorter ones) and
    everything else is exact.
    """
    for dtype in (torch.float32, torch.bfloat16):
        for scheme in quantization.SCHEMES:
            model = load_transformer(toy_model_dir("flux"), dtype=dtype)
            model.odd = torch.nn.Linear(33, 7).to(dtype)  # stored and quantised like the rest
            unquantized = copy.deepcopy(model)
            typical = quantization.expected_state(model, scheme, dtype, double_quant=double_quant)
            quantization.quantize_transformer(
                model, scheme, double_quant=double_quant, progress=False
            )
            stored = layout(quantization.quantized_state_dict(model))
            offsets = quantization.double_quant_offsets(model)
            assert bool(offsets) == (double_quant and scheme != "int8")
            exact = quantization.expected_state(
                unquantized, scheme, dtype, double_quant=double_quant, offsets=offsets
            )
            assert stored == layout(exact)
            assert stored["odd.weight"] == ((116, 1), torch.uint8) if scheme != "int8" else True
            assert stored.keys() == typical.keys()
            for key, (shape, tensor_dtype) in layout(typical).items():
                assert tensor_dtype == stored[key][1]
                if key.endswith(("bitsandbytes__nf4", "bitsandbytes__fp4")) and double_quant:
                    assert abs(shape[0] - stored[key][0][0]) <= 20, key
                else:
                    assert shape == stored[key][0], key


def test_double_quantisation_is_the_default_and_its_bytes_per_weight(toy_model_dir, tmp_path):
    """~0.516 bytes per weight with double quantisation, 0.5625 without (blocks of 64)."""
    with torch.device("meta"):
        layer = torch.nn.Linear(2432, 9728, bias=False)  # an SD3.5-Large feed-forward layer
    per_weight = {
        double_quant: tensor_bytes(
            quantization.quantized_linear_state(layer, "nf4", double_quant=double_quant)
        )
        / layer.weight.numel()
        for double_quant in (True, False)
    }
    assert per_weight[True] == pytest.approx(0.5 + 1 / 64 + 4 / 64 / 256, abs=1e-4)
    assert per_weight[False] == pytest.approx(0.5 + 4 / 64, abs=1e-4)
    result = hprune("quantize", "--model", toy_model_dir("sd3"), "--scheme", "nf4",
                    "--no-double-quant", "--out", tmp_path / "plain")  # fmt: skip
    assert result.exit_code == 0 and "double quantisation" not in result.output
    assert read_record(tmp_path / "plain").quantization["double_quant"] is False
    reloaded = load_transformer(tmp_path / "plain")
    assert not reloaded.hprune_quantization.double_quant
    assert not any(s.nested for s in quant_states(reloaded))
    spec = {**read_record(tmp_path / "plain").quantization}
    spec.pop("double_quant")  # a record from before the flag existed
    assert quantization.QuantizationSpec.from_dict(spec).double_quant is False


def wide_transformer(dtype):
    """An SD3 transformer wide enough for bnb's AVX512-BF16 CPU kernel (width 256) and with
    realistic layer sizes: the Linear layers hold > 95% of the parameters."""
    from generation.store.toy_models import ToySpec, build_sd3_transformer

    torch.manual_seed(0)
    spec = ToySpec(num_layers=2, num_attention_heads=4, attention_head_dim=64, t5_d_model=256)
    return build_sd3_transformer(spec).to(dtype).eval()


def test_nf4_weights_are_at_most_30_percent_of_bf16(tmp_path):
    """Bytes of the stored tensors, read back from the two saved files (buffers such as
    SD3's position table are no weights and are left out of both)."""
    from safetensors.torch import load_file

    model = wide_transformer(torch.bfloat16)
    assert linear_parameter_fraction(model) >= 0.95
    buffers = {name for name, _ in model.named_buffers()}
    model.save_pretrained(tmp_path / "bf16")
    quantization.quantize_transformer(model, "nf4", progress=False)
    quantized.save_quantized_transformer(model, tmp_path / "nf4")

    def weight_bytes(directory):
        state = load_file(directory / quantized.WEIGHTS_FILE)
        return tensor_bytes({k: v for k, v in state.items() if k not in buffers})

    bf16, nf4 = weight_bytes(tmp_path / "bf16"), weight_bytes(tmp_path / "nf4")
    assert nf4 <= 0.30 * bf16, nf4 / bf16
    assert nf4 == stored_bytes(model).weights


def quant_states(model):
    return [m.weight.quant_state for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


@pytest.mark.parametrize("double_quant", [False, True])
def test_cpu_kernel_layout_survives_saving(tmp_path, double_quant):
    """bitsandbytes repacks bf16 4-bit weights for its AVX512-BF16 CPU kernel on the first
    call; its own state_dict() then leaves the scales transposed, which corrupts both the
    saved file and the in-memory layer. quantized_state_dict() must give the exact state.
    With double quantisation the kernel stays off (its repacking re-quantises the scales)."""
    from generation.adapters import record_for_transformer

    model = wide_transformer(torch.bfloat16)
    record = record_for_transformer(model)
    quantization.quantize_transformer(model, "nf4", double_quant=double_quant, progress=False)
    inputs = denoising_inputs(model, size=16)
    first = run(model, inputs)  # repacks where the CPU has the kernel
    packed = any(getattr(s, "packing_format_for_cpu", False) for s in quant_states(model))
    assert packed == (has_avx512bf16() and not double_quant)
    quantized.save_quantized_transformer(model, tmp_path)
    assert torch.equal(run(model, inputs), first)  # saving did not change the layer
    record.quantization = model.hprune_quantization.to_dict()
    reloaded = quantized.load_quantized_transformer(tmp_path, record)
    assert torch.equal(run(reloaded, inputs), first)


def test_reload_in_another_dtype_is_explicit(quantized_dirs):
    """The compute dtype is applied to every unquantised parameter on load (never fp16 by accident)."""
    directory = quantized_dirs("sd35")
    default = load_transformer(directory)
    assert {p.dtype for p in default.parameters() if p.is_floating_point()} == {torch.float32}
    bf16 = load_transformer(directory, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters() if p.is_floating_point()} == {torch.bfloat16}
    assert bf16.hprune_quantization.compute_dtype == "bfloat16"
    inputs = denoising_inputs(default)
    error = relative_error(run(bf16, inputs), run(default, inputs))
    assert error < 0.05


def test_quantize_refuses_meta_and_quantised_models(toy_model_dir):
    model = load_transformer(toy_model_dir("sd3"))
    quantization.quantize_transformer(model, "nf4", progress=False)
    with pytest.raises(UserError, match="already quantised"):
        quantization.quantize_transformer(model, "nf4", progress=False)
    with pytest.raises(UserError, match="unknown quantisation scheme"):
        quantization.quantize_transformer(model, "nf2", progress=False)


def _corrupt_weights(directory):
    path = directory / "transformer" / quantized.WEIGHTS_FILE
    path.unlink()  # the source's file may be a hard link shared with other tests
    path.write_bytes(b"\x00" * 64)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("not-a-model", "not a model directory"),
        ("unknown-scheme", "unknown quantisation scheme"),
        ("already-quantised", "already quantised"),
        ("out-exists", "already exists"),
        ("bad-dtype", "unknown dtype"),
        ("corrupt-config", "corrupt"),
    ],
)
def test_quantize_bad_input_is_one_line(toy_model_dir, quantized_dirs, tmp_path, case, message):
    model = toy_model_dir("sd3")
    out = tmp_path / "out"
    args = ["--scheme", "nf4"]
    if case == "missing":
        model = tmp_path / "nowhere"
    elif case == "not-a-model":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "unknown-scheme":
        args = ["--scheme", "nf3"]
    elif case == "already-quantised":
        model = quantized_dirs("sd3")
    elif case == "out-exists":
        out.mkdir()
        (out / "keep.txt").write_text("keep me")
    elif case == "bad-dtype":
        args += ["--dtype", "float8"]
    elif case == "corrupt-config":
        model = tmp_path / "copy"
        shutil.copytree(toy_model_dir("sd3"), model)
        (model / "transformer" / "config.json").write_text("{not json")
    result = hprune("quantize", "--model", model, *args, "--out", out)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert message in lines[0]
    if case == "out-exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left


def test_corrupt_quantised_weights_are_one_line(quantized_dirs, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(quantized_dirs("sd3"), directory)
    _corrupt_weights(directory)
    with pytest.raises(UserError):
        load_pipeline(directory)
    result = hprune("profile", "--model", directory, "--out", tmp_path / "p.json")
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_profile_of_a_quantised_model(toy_model_dir, quantized_dirs, tmp_path):
    report = run_profile(
        model=str(quantized_dirs("flux")),
        arch_config=None,
        out=tmp_path / "p.json",
        device="cpu",
        warmup=0,
        repeats=1,
    )
    original = load_transformer(toy_model_dir("flux"))
    assert report["quantization"] == "nf4"
    assert report["parameters"] == parameter_count(original)
    assert report["double_quant"] is True
    assert report["weights_bytes"] == stored_bytes(load_transformer(quantized_dirs("flux"))).weights
    # toy layers are small: each carries its fixed quantisation state (1 KB of nested code
    # book with double quantisation), so NF4 is ~27% of fp32 here, not the ~13% of full size
    assert report["weights_bytes"] < stored_bytes(original).weights / 3
