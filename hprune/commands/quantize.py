"""``hprune quantize``: bitsandbytes weight quantisation of a model's transformer."""

from __future__ import annotations

import click

from hprune.commands.options import overwrite_option, scheme_option


@click.command("quantize")
@click.option(
    "--model", required=True, help="Pipeline directory (or transformer directory, or hub id)."
)
@scheme_option(
    "nf4/fp4: 4-bit blockwise (QLoRA) weights, one absmax per 64 weights; "
    "int8: LLM.int8() row-wise int8 weights with outlier threshold 6.",
    required=True,
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Output model directory."
)
@click.option(
    "--dtype",
    default=None,
    help="Compute dtype, the pipeline's dtype (bfloat16, float16, float32); "
    "default: the dtype the transformer is stored in.",
)
@click.option(
    "--double-quant/--no-double-quant",
    default=True,
    show_default=True,
    help="nf4/fp4: quantise the per-block scales to 8 bits too (QLoRA's double quantisation, "
    "bitsandbytes' default and the paper's reference): ~0.516 instead of 0.5625 bytes per weight.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where to quantise: cpu, cuda, cuda:N or auto. The saved model loads on either.",
)
@overwrite_option
def quantize(
    model: str,
    scheme: str,
    out: str,
    dtype: str | None,
    double_quant: bool,
    device: str,
    overwrite: bool,
) -> None:
    """Quantise every nn.Linear of the transformer with bitsandbytes and save the model.

    The other pipeline components are linked (or copied) unchanged; the model record gets
    the recipe and a history entry. Load the result with hprune's loader (every hprune
    command does), which rebuilds the quantised layers on the CPU or on CUDA.
    """
    from generation.recipes.quantize import quantize_model

    result = quantize_model(
        model,
        out,
        scheme=scheme,
        dtype=dtype,
        device=device,
        double_quant=double_quant,
        overwrite=overwrite,
    )
    double = ", double quantisation" if result.double_quant else ""
    click.echo(
        f"wrote {result.path}: {result.layers} linear layers to {result.scheme}{double} "
        f"(compute {result.compute_dtype}); transformer weights "
        f"{result.bytes_before / 1e6:,.1f} MB -> {result.bytes_after / 1e6:,.1f} MB "
        f"({result.bytes_after / result.bytes_before:.1%})"
    )
