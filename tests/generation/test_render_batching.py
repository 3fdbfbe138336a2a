"""Batched rendering: a batch gives the images of batch-1 renders of the same seeds, and
``--batch-size auto`` picks a size (from CUDA memory; a fixed default elsewhere).

Tolerance: batching changes only the floating-point summation order of the matmuls, so the
final latents agree to 1e-5 (float32) and the 8-bit images to one grey level on at most 1%
of their values (measured: 0 to 4 values of 3072 differ, by 1)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from generation.measurement.rendering.sizing import (
    AUTO_MOST,
    AUTO_OTHER,
    Probe,
    fitting_batch,
    parse_batch_size,
)
from hprune.cli import main as cli
from hprune.contracts.manifest import verify_manifest
from hprune.contracts.variants import PipelineOptions, Variant
from hprune.errors import UserError

ITEMS = [("a red circle", 0), ("a blue square left of a circle", 1), ("two triangles", 2)]


@pytest.mark.parametrize(
    ("arch", "guidance"), [("sd3", 3.0), ("flux", 0.0)]
)  # SD3 under classifier-free guidance: the pipeline doubles the batch inside
def test_a_batch_renders_what_single_renders_do(arch, guidance, sd3_toy_dir, flux_toy_dir) -> None:
    from generation.measurement.rendering.batches import load_variant_pipeline, render_batch

    model = sd3_toy_dir if arch == "sd3" else flux_toy_dir
    options = PipelineOptions(steps=2, guidance=guidance, height=32, width=32)
    variant = Variant(name=arch, model=str(model), pipeline=options)
    pipe = load_variant_pipeline(variant)
    alone = [render_batch(pipe, variant, [item], output_type="latent")[0] for item in ITEMS]
    together = render_batch(pipe, variant, ITEMS, output_type="latent")
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= 1e-5
    assert float((together[0] - together[1]).abs().max()) > 0.1  # the seeds differ

    alone_px = [np.asarray(render_batch(pipe, variant, [item])[0], dtype=int) for item in ITEMS]
    together_px = [np.asarray(im, dtype=int) for im in render_batch(pipe, variant, ITEMS)]
    for a, b in zip(alone_px, together_px, strict=True):
        assert np.abs(a - b).max() <= 1
        assert np.mean(a != b) <= 0.01


def test_batch_size_parsing_and_fitting() -> None:
    assert parse_batch_size("auto") == parse_batch_size(" AUTO ") == "auto"
    assert parse_batch_size("8") == parse_batch_size(8) == 8
    for bad, message in (("0", "at least 1"), ("x", "whole number or 'auto'"), ("2.5", "whole")):
        with pytest.raises(UserError, match=message):
            parse_batch_size(bad)
    # 100 bytes an image, 1000 free: 80% of it holds 8 images, capped by what is left
    assert fitting_batch(100, 1000, left=50) == 8
    assert fitting_batch(100, 1000, left=3) == 3
    assert fitting_batch(100, 10, left=50) == 1  # never below one
    assert fitting_batch(1, 10**12, left=10**6) == AUTO_MOST
    assert Probe(needed=400, free=1000).batch_for(images=2, left=50) == 4  # 200 an image
    assert Probe().batch_for(images=1, left=50) == AUTO_OTHER  # no CUDA memory to read
    assert Probe().batch_for(images=1, left=2) == 2


def test_render_command_takes_auto(sd3_toy_dir, tmp_path) -> None:
    (tmp_path / "variants.yaml").write_text(
        f"- {{name: original, model: {sd3_toy_dir}, pipeline: {{steps: 2, guidance: 0.0, "
        "resolution: 32}}\n"
    )
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\na green triangle\n")
    args = ["render", "--variants", tmp_path / "variants.yaml", "--prompts"]
    args += [tmp_path / "prompts.txt", "--seeds", "0-1", "--out", tmp_path / "out", "--device"]
    result = CliRunner().invoke(cli, [*args, "cpu", "--batch-size", "auto"])
    assert result.exit_code == 0, result.output
    # the first image alone, then the CPU's default for the other five
    assert f"batch size auto: original {AUTO_OTHER}" in result.output
    assert len(verify_manifest(tmp_path / "out")) == 6
    bad = CliRunner().invoke(cli, [*args, "cpu", "--batch-size", "0"])
    assert bad.exit_code == 2 and "--batch-size must be at least 1, got 0" in bad.output
