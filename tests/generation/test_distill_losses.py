"""The distillation losses' edges: recording stops at ``stop()``, a block must return two
streams, a missing teacher feature or stream count is named, a stream only one side has does
not count, and the task term names what it lacks."""

from __future__ import annotations

import pytest
import torch

from generation.recipes.distill import losses
from tests.generation.test_distill_parts import _Block


def test_nothing_is_recorded_after_stop() -> None:
    block = _Block()
    h, c = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    with losses.BlockFeatures({(3, "block"): block}) as rec:
        rec.start()
        block(h, c)
        got = rec.stop()
        expected = block.lin(h)
        block(h * 0, c * 0)
        assert torch.equal(got[3, "block"][1], expected)
        assert torch.equal(got[3, "block"][0], c * 2)


class _Returns(torch.nn.Module):
    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output


@pytest.mark.parametrize(
    "output",
    [torch.zeros(2, 4), (torch.zeros(1), torch.zeros(1), torch.zeros(1))],
    ids=["tensor-of-two-rows", "three-streams"],
)
def test_a_block_must_return_two_streams(output) -> None:
    module = _Returns(output)
    with losses.BlockFeatures({(5, "block"): module}) as rec:
        rec.start()
        with pytest.raises(TypeError, match=r"^block 5 \(_Returns\) returned (Tensor|tuple); "
                           r"expected \(encoder_hidden_states, hidden_states\)$"):  # fmt: skip
            module(torch.zeros(1))
    with losses.BlockFeatures({(5, "attn"): module}) as rec:  # other features: any output
        rec.start()
        module(torch.zeros(1))
        assert rec.stop()[5, "attn"] is output


def test_feature_losses_name_what_the_teacher_lacks() -> None:
    x = torch.ones(2, 3)
    with pytest.raises(KeyError, match="no recorded attn output for original block 5"):
        losses.feature_losses({(5, "attn"): x}, {(5, "block"): (x, x)})
    with pytest.raises(ValueError):  # a student and a teacher with different stream counts
        losses.feature_losses({(5, "block"): (x, x)}, {(5, "block"): (x, x, x)})


def test_a_stream_only_one_side_has_does_not_count() -> None:
    x = torch.zeros(2, 3)
    student = {(5, "block"): (None, x + 2)}
    teacher = {(5, "block"): (x, x)}
    assert losses.feature_losses(student, teacher)[5, "block"].item() == pytest.approx(4.0)
    assert losses.feature_losses(teacher, student)[5, "block"].item() == pytest.approx(4.0)


@pytest.mark.parametrize("missing", ["x0", "x_t", "sigmas"])
def test_the_task_term_names_what_it_lacks(missing) -> None:
    v = torch.zeros(2, 4, 2, 2)
    given = {"x0": v, "x_t": v, "sigmas": torch.full((2,), 0.5)}
    given[missing] = None
    with pytest.raises(ValueError, match=r"^the task term needs x0, x_t and sigmas$"):
        losses.distillation_loss(v, v, {}, {}, {}, losses.LossWeights(task=1.0), **given)
    given[missing] = v if missing != "sigmas" else torch.full((2,), 0.5)
    _, terms = losses.distillation_loss(v, v, {}, {}, {}, losses.LossWeights(task=1.0), **given)
    assert terms["task_x0"] == pytest.approx(0.0)
