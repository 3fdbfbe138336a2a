"""Study specs as documented: the example in study/spec.py and the complete specs of
docs/study-specs.md are valid and run, and risky specs are warned about at import."""

from __future__ import annotations

import re
import secrets
import textwrap

import pytest
import yaml

import study.spec
from study.importer import import_study
from study.spec import MAX_ADVISED_TRIALS, parse_spec, spec_warnings
from tests.study.conftest import (
    BASE_SPEC,
    Participant,
    attentive,
    run_cli,
    run_through,
)
from tests.study.test_serve import ROOT


def docs_specs() -> list[dict]:
    text = (ROOT / "docs" / "study-specs.md").read_text()
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_the_example_in_study_spec_is_valid_yaml_and_a_valid_spec() -> None:
    """Was invalid YAML: a question with '?' inside a flow mapping."""
    doc = study.spec.__doc__
    block = doc.split("``docs/study-specs.md``)::", 1)[1].split("\nCompletion codes:", 1)[0]
    spec = parse_spec(yaml.safe_load(textwrap.dedent(block)))
    assert [c.name for c in spec.criteria] == ["quality", "alignment"]
    assert spec.completion_url.endswith("cc={code}") and spec_warnings(spec) == []


@pytest.mark.parametrize("index", [0, 1], ids=["pair", "rating"])
def test_the_documented_specs_import_and_run_without_warnings(app, stimuli_dir, index) -> None:
    raw = docs_specs()[index]
    spec = parse_spec(raw)
    assert spec.kind == ("pair", "rating")[index] and spec_warnings(spec) == []
    unique = parse_spec({**raw, "name": f"{spec.name}-{secrets.token_hex(3)}"})  # as it is
    imported = import_study(
        app.extensions["hprune_db"], stimuli_dir, unique, app.config["MEDIA_DIR"], progress=False
    )
    p = Participant(app.test_client(), imported.public_key)
    end = run_through(p, p.start(pid=f"PIDdocs{index}"), pick=attentive(app))
    assert end["phase"] == "end"


def _warnings(**changes) -> list[str]:
    return spec_warnings(parse_spec({**BASE_SPEC, "name": "w", **changes}))


def test_risky_specs_are_warned_about() -> None:
    assert _warnings() == []
    no_code = _warnings(completion_url="https://app.prolific.com/submissions/complete?cc=X")
    assert len(no_code) == 1 and "completion_url has no {code}" in no_code[0]
    missing = _warnings(completion_codes={"completed": "C1"})
    assert len(missing) == 2
    assert "failed_attention" in missing[0] and "timed_out" in missing[1]
    # No gold trials and no time limit: those outcomes cannot happen, nothing to warn about.
    fine = _warnings(completion_codes={"completed": "C1"}, time_limit_minutes=None,
                     attention={"broken": 0, "repeat": 1})  # fmt: skip
    assert fine == []
    long = _warnings(trials_per_criterion=500, time_limit_minutes=30)  # 503 trials, ~34 min
    assert any(f"more than {MAX_ADVISED_TRIALS} trials" in w for w in long)
    assert any("more than time_limit_minutes (30)" in w for w in long)


def test_import_prints_the_warnings_and_imports_all_the_same(app, stimuli_dir, tmp_path) -> None:
    spec = tmp_path / "risky.yaml"
    risky = {**BASE_SPEC, "name": "risky-spec", "trials_per_criterion": 500}
    risky["time_limit_minutes"] = 30
    risky["completion_url"] = "https://example.org/done"
    spec.write_text(yaml.safe_dump(risky))
    result = run_cli("study", "import", "--db", app.config["DATABASE_URL"], "--manifest",
                     str(stimuli_dir), "--spec", str(spec))  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and "has no {code}" in warnings[0]
    assert "study 'risky-spec': version 1 imported" in result.output


@pytest.mark.parametrize("name", ["pilot\n", "pilot\nx", "-pilot", "a" * 101, "pi lot", ""])
def test_study_and_criterion_names_must_match_whole(name) -> None:
    """A name ends where the text ends: ``re.match`` with ``$`` would accept "pilot\\n"."""
    with pytest.raises(study.spec.UserError, match="'name' is required"):
        parse_spec({**BASE_SPEC, "name": name})
    with pytest.raises(study.spec.UserError, match="criterion name"):
        parse_spec({**BASE_SPEC, "name": "ok", "criteria": [name]})
