"""The distillation parts that need no pruned model: data reading, losses, block weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from generation.recipes.distill import data as dd
from generation.recipes.distill import losses, weighting
from hprune.errors import UserError


def _image(path: Path, size=(40, 24), colour=(255, 0, 0), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


# --- data -------------------------------------------------------------------------------


def test_sidecar_folder_with_txt_and_json_captions(tmp_path: Path) -> None:
    _image(tmp_path / "b.png")
    (tmp_path / "b.txt").write_text("a red square\n")
    _image(tmp_path / "sub" / "a.jpg")
    (tmp_path / "sub" / "a.json").write_text(json.dumps({"text": "a blue circle"}))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "stray.txt").write_text("ignored")
    pairs = dd.read_captioned_images(tmp_path)
    assert [(p.key, p.caption) for p in pairs] == [
        ("b.png", "a red square"),
        ("sub/a.jpg", "a blue circle"),
    ]
    assert dd.dataset_fingerprint(pairs) == dd.dataset_fingerprint(
        dd.read_captioned_images(tmp_path)
    )
    (tmp_path / "b.txt").write_text("a green square")
    assert dd.dataset_fingerprint(pairs) != dd.dataset_fingerprint(
        dd.read_captioned_images(tmp_path)
    )


@pytest.mark.parametrize("kind", ["csv", "parquet", "metadata.jsonl"])
def test_listings(tmp_path: Path, kind: str) -> None:
    _image(tmp_path / "img" / "x.png")
    _image(tmp_path / "img" / "y.png")
    frame = pd.DataFrame({"file_name": ["img/y.png", "img/x.png"], "caption": ["two", "one"]})
    if kind == "csv":
        source = tmp_path / "list.csv"
        frame.to_csv(source, index=False)
    elif kind == "parquet":
        source = tmp_path / "list.parquet"
        frame.to_parquet(source)
    else:
        frame.to_json(tmp_path / "metadata.jsonl", orient="records", lines=True)
        source = tmp_path
    pairs = dd.read_captioned_images(source)
    assert [(p.key, p.caption) for p in pairs] == [("img/x.png", "one"), ("img/y.png", "two")]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "holds no captioned images"),
        (lambda d: (d / "orphan.txt").write_text("a cat"), "has no image beside it"),
        (lambda d: _image(d / "lonely.png"), "has no caption file"),
        (lambda d: (_image(d / "e.png"), (d / "e.txt").write_text("  ")), "is empty"),
        (lambda d: (_image(d / "j.png"), (d / "j.json").write_text("{bad")), "not valid JSON"),
        (
            lambda d: (
                _image(d / "t.png"),
                (d / "t.txt").write_text("x"),
                (d / "t.json").write_text("{}"),
            ),
            "two caption files",
        ),
        (
            lambda d: (d / "list.csv").write_text("file_name,caption\nnope.png,a dog\n"),
            "does not exist",
        ),
        (
            lambda d: (d / "list.csv").write_text("name,words\na.png,a dog\n"),
            "needs an image column",
        ),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    source = root / "list.csv" if (root / "list.csv").exists() else root
    with pytest.raises(UserError, match=message):
        dd.read_captioned_images(source)


def test_missing_data_and_unreadable_image(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        dd.read_captioned_images(tmp_path / "nothing")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="cannot be read"):
        dd.load_image(broken, dd.ImagePolicy(16))
    with pytest.raises(UserError, match="multiple of 8"):
        dd.ImagePolicy(12)


def test_image_policy_resizes_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    # 60x20: left third black, middle third white, right third black. Resized to 48x16, the
    # 16x16 centre crop is the white middle.
    im = Image.new("RGB", (60, 20), (0, 0, 0))
    im.paste((255, 255, 255), (20, 0, 40, 20))
    im.save(tmp_path / "wide.png")
    pixels = dd.load_image(tmp_path / "wide.png", dd.ImagePolicy(16))
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[:, :, 2:14].mean() > 0.95
    # transparency is composited on white
    _image(tmp_path / "clear.png", size=(16, 16), colour=(0, 0, 0, 0), mode="RGBA")
    assert dd.load_image(tmp_path / "clear.png", dd.ImagePolicy(16)).min() == 1.0
    assert dd.ImagePolicy(16).describe()["crop"] == "center"


# --- losses ---------------------------------------------------------------------------------


class _Block(nn.Module):
    """Returns (encoder_hidden_states, hidden_states) like the diffusers MMDiT blocks."""

    def __init__(self, last: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.last = last

    def forward(self, hidden_states, encoder_hidden_states):
        return (None if self.last else encoder_hidden_states * 2), self.lin(hidden_states)


def test_block_features_record_only_while_started() -> None:
    blocks = {3: _Block(), 7: _Block(last=True)}
    h, c = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    keys = {(3, "block"): blocks[3], (7, "block"): blocks[7], (3, "attn"): blocks[3].lin}
    with losses.BlockFeatures(keys) as rec:
        blocks[3](h, c)
        assert rec.outputs == {}
        rec.start()
        blocks[3](h, c)
        blocks[7](h, c)
        got = rec.stop()
        blocks[3](h * 0, c)  # e.g. checkpoint re-computation: must not overwrite
        assert set(got) == {(3, "block"), (7, "block"), (3, "attn")} and got[7, "block"][0] is None
        assert torch.equal(got[3, "block"][0], c * 2)
        assert torch.equal(got[3, "attn"], got[3, "block"][1])  # a module's tensor output
    assert not blocks[3]._forward_hooks


def test_distillation_loss_terms() -> None:
    g = torch.Generator().manual_seed(0)
    vt = torch.randn(2, 4, 4, generator=g)
    vs = vt + 1.0
    h = torch.randn(2, 5, 4, generator=g)
    c = torch.randn(2, 3, 4, generator=g)
    teacher = {(0, "block"): (c, h), (1, "block"): (c, h), (2, "block"): (None, h)}
    teacher[1, "attn"] = (h, c)
    student = {(1, "block"): (c + 2, h + 1), (2, "block"): (None, h + 3), (1, "attn"): (h, c + 1)}
    lam = losses.LossWeights(output=1.0, feature=0.5, task=0.0)
    total, terms = losses.distillation_loss(vs, vt, student, teacher, {1: 1.0, 2: 0.5}, lam)
    # block 1: 1 + 4 = 5, its attention 0 + 1 = 1; block 2: 9 (no text stream);
    # weighted 5 + 1 + 0.5*9 = 10.5
    assert terms["output_kd"] == pytest.approx(1.0)
    assert terms["feature_kd/1"] == pytest.approx(5.0)
    assert terms["feature_kd/1/attn"] == pytest.approx(1.0)
    assert terms["feature_kd/2"] == pytest.approx(9.0)
    assert terms["feature_kd"] == pytest.approx(10.5)
    assert total.item() == pytest.approx(1.0 + 0.5 * 10.5)
    # blocks without a weight do not count; the task term needs x0, x_t and sigmas
    _, terms = losses.distillation_loss(vs, vt, student, teacher, {}, lam)
    assert "feature_kd" not in terms
    with pytest.raises(ValueError):
        losses.distillation_loss(vs, vt, {}, teacher, {}, losses.LossWeights(task=1.0))


def test_the_task_loss_is_in_x0_space_as_the_reference_computes_it() -> None:
    """‖(x_t − σ·v_s) − x0‖² = σ² ‖v_s − (ε − x0)‖² per sample: noisy levels weigh more."""
    from generation.flow_matching import noisy_latents

    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    sigmas = torch.tensor([0.2, 0.9])
    x_t = noisy_latents(x0, noise, sigmas)
    v_s = (noise - x0) + torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)  # errors 1 and 2
    task = losses.task_loss(v_s, x_t, sigmas, x0)
    assert task.item() == pytest.approx((0.2**2 * 1 + 0.9**2 * 4) / 2)
    total, terms = losses.distillation_loss(
        v_s, v_s, {}, {}, {}, losses.LossWeights(1.0, 0.0, 2.0), x0=x0, x_t=x_t, sigmas=sigmas
    )
    assert terms["task_x0"] == pytest.approx(task.item()) and total.item() == pytest.approx(
        2 * task.item()
    )


def test_sigmas_come_from_the_schedulers_shifted_table() -> None:
    """u ~ logit-normal(0, 1) indexes the scheduler's table: for shift s the median sigma is
    s/(1+s) (0.75 at SD3.x's 3.0), against 0.5 for the unshifted draw."""
    from generation.recipes.distill.sampling import draw_sigmas, noise_level_table

    table = noise_level_table({"shift": 3.0})
    assert table.shape == (1000,) and table[0] == 1.0 and table[500] == pytest.approx(0.75)
    g = torch.Generator().manual_seed(0)
    shifted = draw_sigmas(20_000, g, table=table)
    unshifted = draw_sigmas(20_000, g, table=None)
    assert shifted.median().item() == pytest.approx(3 / 4, abs=0.01)
    assert unshifted.median().item() == pytest.approx(0.5, abs=0.01)
    assert set(shifted.unique().tolist()) <= set(table.tolist())  # only the table's levels
    # shift 1 (the mini teacher's, FLUX.1-schnell's) leaves the levels where u puts them
    assert noise_level_table({"shift": 1.0})[500] == pytest.approx(0.5)
    # FLUX.1-dev shifts at sampling time; its table at construction is unshifted
    assert noise_level_table({"shift": 3.0, "use_dynamic_shifting": True})[500] == 0.5


# --- weighting --------------------------------------------------------------------------------


def test_binary_and_inverse_weights() -> None:
    assert weighting.block_weights("binary", [4, 5]) == {4: 1.0, 5: 1.0}
    sens = {0: 9.0, 4: 2.0, 5: 0.5, 6: 1.0, 7: -0.3}
    w = weighting.block_weights("inverse", [4, 5, 6], sens)
    assert w == pytest.approx({4: 0.25, 5: 1.0, 6: 0.5})
    # a non-positive drop is floored, so the least sensitive gets 1 and the others stay > 0
    w = weighting.inverse_weights(sens, [4, 7], floor_fraction=0.1)
    assert w == pytest.approx({4: 0.1, 7: 1.0})
    assert weighting.inverse_weights({1: 0.0, 2: -1.0}, [1, 2]) == {1: 1.0, 2: 1.0}
    with pytest.raises(UserError, match="no block score"):
        weighting.inverse_weights(sens, [4, 11])
    with pytest.raises(UserError, match="needs --contrib"):
        weighting.block_weights("inverse", [4])
    with pytest.raises(UserError, match="unknown weighting"):
        weighting.block_weights("softmax", [4])


def test_parameter_groups_scale_learning_rates() -> None:
    model = nn.ModuleDict({"b0": nn.Linear(2, 2), "b1": nn.Linear(2, 2), "out": nn.Linear(2, 1)})
    model["b0"].requires_grad_(False)
    blocks = {10: model["b0"], 11: model["b1"]}
    groups = weighting.parameter_groups(
        blocks, model, {10: 1.0, 11: 0.25}, lr=1e-3, weight_decay=0.1
    )
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [
        ("block11", 2.5e-4, 2),
        ("other", 1e-3, 2),
    ]
    torch.optim.AdamW(groups)  # accepted as-is


# --- PWP freezing ---------------------------------------------------------------------------


def test_parse_freeze() -> None:
    from generation.recipes.distill.freeze import FreezeSpec, parse_freeze

    assert parse_freeze("auto") == FreezeSpec("auto")
    assert parse_freeze("None") == FreezeSpec("none")
    assert parse_freeze("25") == FreezeSpec("prefix", k=25)
    spec = parse_freeze("0-2, 5")
    assert spec.blocks == {0, 1, 2, 5} and spec.describe() == "0,1,2,5"
    for bad in ("first", "3-1", "1-x", "-2"):
        with pytest.raises(UserError):
            parse_freeze(bad)


def test_frozen_blocks_by_original_index() -> None:
    from generation.recipes.distill.freeze import (
        FreezePlan,
        first_pruned_index,
        frozen_blocks,
        parse_freeze,
    )

    kept = [0, 1, 2, 3, 6, 7]  # blocks 4 and 5 removed, a subcomponent of 3 removed
    k = first_pruned_index([4, 5], [3])
    assert k == 3 and first_pruned_index([], []) is None
    # auto: 0-2 whole and block 3 up to its first removed part, as the reference
    assert frozen_blocks(parse_freeze("auto"), kept, k) == FreezePlan(frozenset({0, 1, 2}), True, 3)
    assert frozen_blocks(parse_freeze("auto"), kept, 4).partial is None  # a whole block first
    assert frozen_blocks(parse_freeze("5"), kept, k) == FreezePlan(frozenset({0, 1, 2, 3}), True)
    assert frozen_blocks(parse_freeze("0,6"), kept, k) == FreezePlan(frozenset({0, 6}), True)
    assert frozen_blocks(parse_freeze("none"), kept, k) == FreezePlan(frozenset(), False)
    with pytest.raises(UserError, match=r"does not have \(it kept 0-3,6-7\)"):
        frozen_blocks(parse_freeze("4-5"), kept, k)
    with pytest.raises(UserError, match="nothing pruned"):
        frozen_blocks(parse_freeze("auto"), kept, None)


def test_apply_freeze_splits_embedders_blocks_and_head() -> None:
    from generation.recipes.distill.freeze import FreezePlan, apply_freeze

    model = nn.Module()
    model.x_embedder = nn.Linear(2, 2)
    model.transformer_blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    model.norm_out = nn.LayerNorm(2)
    model.proj_out = nn.Linear(2, 2)
    blocks = {
        0: model.transformer_blocks[0],
        1: model.transformer_blocks[1],
        5: model.transformer_blocks[2],
    }
    summary = apply_freeze(
        model, blocks, ["transformer_blocks"], FreezePlan(frozenset({0, 1}), True)
    )
    assert summary["frozen"] == [
        "x_embedder.weight", "x_embedder.bias",
        "transformer_blocks.0.weight", "transformer_blocks.0.bias",
        "transformer_blocks.1.weight", "transformer_blocks.1.bias",
    ]  # fmt: skip
    assert set(summary["trainable"]) == {n for n, _ in model.named_parameters()} - set(
        summary["frozen"]
    )
    assert not model.x_embedder.weight.requires_grad and model.proj_out.weight.requires_grad
    summary = apply_freeze(model, blocks, ["transformer_blocks"], FreezePlan(frozenset(), False))
    assert summary["frozen"] == []


# --- encoding conventions -------------------------------------------------------------------


def test_flux_packing_matches_the_diffusers_pipeline() -> None:
    from diffusers import FluxPipeline

    from generation.adapters import encoding

    x = torch.randn(2, 4, 6, 8)
    packed = encoding.pack_latents(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 4, 6, 8))
    assert torch.equal(encoding.unpack_latents(packed, 6, 8), x)
    ids = FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32)
    assert torch.equal(encoding.latent_image_ids(6, 8), ids)


# --- the stateless sample stream ---------------------------------------------------------------


def test_sample_stream_is_stateless_epoch_permutations() -> None:
    from generation.recipes.distill.sampling import sample_indices, step_seed

    stream = sample_indices(7, 10, 0, 30)
    assert [sorted(stream[e * 10 : e * 10 + 10]) for e in range(3)] == [list(range(10))] * 3
    assert stream[:10] != stream[10:20]
    # any window, from any position (a resumed run, another process), is the same slice
    assert sample_indices(7, 10, 8, 5) == stream[8:13]
    assert sample_indices(8, 10, 0, 10) != stream[:10]
    seeds = {step_seed(0, step, slot) for step in range(50) for slot in range(4)}
    assert len(seeds) == 200


def test_reads_the_mini_world_data_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hprune.cli import main

    result = CliRunner().invoke(main, ["mini", "data", "--out", str(tmp_path / "mini"), "-n", "3"])
    assert result.exit_code == 0, result.output
    pairs = dd.read_captioned_images(tmp_path / "mini")
    assert [p.key for p in pairs] == ["images/00000.png", "images/00001.png", "images/00002.png"]
    rows = [
        json.loads(line) for line in (tmp_path / "mini" / "metadata.jsonl").read_text().splitlines()
    ]
    assert [p.caption for p in pairs] == [row["prompt"] for row in rows]
    assert dd.load_image(pairs[0].path, dd.ImagePolicy(64)).shape == (3, 64, 64)
