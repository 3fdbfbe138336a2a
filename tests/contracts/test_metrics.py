"""metrics.csv + metrics.json: the tidy table round-trips, and a malformed one is refused."""

from __future__ import annotations

import json

import pytest

from hprune.contracts.manifest import ManifestRow
from hprune.contracts.metrics import (
    METRIC_COLUMNS,
    MetricInfo,
    metric_rows,
    metrics_info_path,
    read_metric_infos,
    read_metrics,
    write_metrics,
)
from hprune.errors import UserError

HPS = MetricInfo("hpsv2.1", True, version="2.1", scale="0-1", source="test")


def rows(n: int = 2) -> list[ManifestRow]:
    return [
        ManifestRow(
            f"img{i}",
            f"images/img{i}.png",
            "0" * 64,
            "v",
            f"p{i}",
            "a cat",
            "",
            0,
            8,
            8,
            1,
            0.0,
            "fp",
            "2025-01-01T00:00:00Z",
        )
        for i in range(n)
    ]


def test_write_and_read_back_the_tidy_table_and_its_description(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics(path, metric_rows(rows(), [0.25, 1 / 3], HPS), [HPS])
    assert path.read_text().splitlines() == [
        ",".join(METRIC_COLUMNS),
        "img0,v,p0,hpsv2.1,0.25,true",
        "img1,v,p1,hpsv2.1,0.3333333333,true",
    ]
    table = read_metrics(path)
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert table["higher_is_better"].tolist() == [True, True]
    assert read_metric_infos(path) == {"hpsv2.1": HPS}
    assert json.loads(metrics_info_path(path).read_text())["metrics"]["hpsv2.1"]["scale"] == "0-1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_id,variant,prompt_id,metric,value\n", "missing column"),
        ("image_id,variant,prompt_id,metric,value,higher_is_better\na,v,p,m,x,true\n", ":2: value"),
        ("image_id,variant,prompt_id,metric,value,higher_is_better\na,v,p,m,1,maybe\n", "true or"),
    ],
)
def test_a_malformed_table_is_refused_with_one_line(tmp_path, text, message):
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_metrics(path)


def test_writing_refuses_twice_the_same_image_and_metric_and_non_finite_values(tmp_path):
    twice = metric_rows(rows(1), [0.5], HPS) * 2
    with pytest.raises(UserError, match="given twice for image img0"):
        write_metrics(tmp_path / "m.csv", twice, [HPS])
    with pytest.raises(ValueError, match="finite"):
        write_metrics(tmp_path / "m.csv", metric_rows(rows(1), [float("nan")], HPS), [HPS])
    with pytest.raises(ValueError, match="MetricInfo"):
        write_metrics(tmp_path / "m.csv", metric_rows(rows(1), [0.5], HPS), [])
    assert not (tmp_path / "m.csv").exists()
