"""variants.yaml: parsing, defaults, and one-line errors for every bad field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hprune.contracts.variants import read_variants, reference_variant
from hprune.errors import UserError


def write_yaml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "models" / "original").mkdir(parents=True, exist_ok=True)
    (tmp_path / "models" / "pruned").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "variants.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
- name: original
  model: models/original
  reference: true
  dtype: bfloat16
  pipeline: {steps: 4, guidance: 0.0, resolution: 64, max_sequence_length: 77}
- name: pruned-20
  model: models/pruned
  quantization: nf4
  pipeline:
    steps: 2
    guidance: 3.5
    resolution: [32, 48]
    scheduler: {class: FlowMatchEulerDiscreteScheduler, shift: 3.0}
"""


def test_reads_variants_with_resolved_models_and_reference(tmp_path):
    variants = read_variants(write_yaml(tmp_path, GOOD))
    original, pruned = variants
    assert original.model == str((tmp_path / "models" / "original").resolve())
    assert (original.dtype, original.quantization, original.reference) == ("bfloat16", None, True)
    assert (original.pipeline.height, original.pipeline.width) == (64, 64)
    assert original.pipeline.max_sequence_length == 77
    assert (pruned.pipeline.height, pruned.pipeline.width) == (32, 48)
    assert pruned.pipeline.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert pruned.pipeline.scheduler_options == {"shift": 3.0}
    assert (pruned.dtype, pruned.quantization) == ("float32", "nf4")
    assert reference_variant(variants) is original


def test_definition_hash_changes_with_anything_that_changes_images(tmp_path):
    path = write_yaml(tmp_path, GOOD)
    before = [v.definition_hash() for v in read_variants(path)]
    assert before == [v.definition_hash() for v in read_variants(path)]
    path.write_text(GOOD.replace("steps: 2", "steps: 3"))
    after = [v.definition_hash() for v in read_variants(path)]
    assert after[0] == before[0] and after[1] != before[1]


def test_hub_id_is_kept_and_checked_against_the_local_cache(tmp_path):
    path = write_yaml(tmp_path, GOOD.replace("models/pruned", "nobody-here/no-such-model"))
    with pytest.raises(
        UserError, match="neither a local directory nor a hub model in the local cache"
    ):
        read_variants(path)
    variants = read_variants(path, check_models=False)
    assert variants[1].model == "nobody-here/no-such-model"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("name: pruned-20", "name: original"), "duplicate variant name 'original'"),
        (("models/pruned", "./models/missing"), "model directory .*missing does not exist"),
        (("steps: 2", "steps: 0"), "pipeline.steps must be a positive integer"),
        (("steps: 2", "steps: two"), "pipeline.steps must be a positive integer"),
        (("guidance: 3.5", "guidance: -1"), "guidance must be a number >= 0"),
        (("[32, 48]", "[32, 50]"), "multiples of 8"),
        (("resolution: [32, 48]", "steps_: 1"), "unknown key"),
        (("dtype: bfloat16", "dtype: float64"), "dtype must be one of"),
        (("quantization: nf4", "quantization: int3"), "quantization must be one of"),
        (("  quantization: nf4", "  reference: true"), "more than one reference"),
        (("  quantization: nf4", "  colour: red"), "unknown key"),
        (("    resolution: [32, 48]\n", ""), "pipeline.resolution is required"),
        (("- name: pruned-20", "- name: ''"), "'name' must be a non-empty"),
    ],
)
def test_bad_variants_fail_with_one_line(tmp_path, change, message):
    path = write_yaml(tmp_path, GOOD.replace(*change))
    assert path.read_text() != GOOD
    with pytest.raises(UserError, match=message) as info:
        read_variants(path)
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty YAML list"),
        ("name: x\n", "non-empty YAML list"),
        ("- [1\n", "not valid YAML"),
    ],
)
def test_bad_files(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_variants(write_yaml(tmp_path, text))
    with pytest.raises(UserError, match="does not exist"):
        read_variants(tmp_path / "absent.yaml")
