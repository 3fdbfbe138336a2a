"""Interleaved latency: every variant once per round, the order rotated, medians and quartiles."""

from __future__ import annotations

import pytest

from generation.mini.latency import interleaved, summarise


def test_rounds_interleave_and_rotate() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved(runners, repeats=4, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # the untimed warm-up round
    assert calls[3:] == list("abcbcacababc")  # each round starts one further on
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    summary = summarise({"a": [0.004, 0.001, 0.003, 0.002, 0.1]})["a"]
    assert (summary["median_ms"], summary["q1_ms"], summary["q3_ms"]) == pytest.approx((3, 2, 4))
    with pytest.raises(ValueError, match="repeats"):
        interleaved(runners, repeats=0)
