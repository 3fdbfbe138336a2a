"""``hprune contrib import``: published scores become a contrib.json that HPP plans from."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from generation.measurement.contrib import read_contrib
from generation.measurement.contrib_import import import_contributions
from hprune.cli import main
from hprune.errors import UserError


@pytest.fixture(scope="module")
def paper_files(shared_data):
    data = shared_data / "hierarchicalprune"
    return (
        data / "sd35-large-turbo_block_hpsv2_change.csv",
        data / "sd35-large-turbo_subcomponent_hpsv2.json",
        shared_data / "architectures" / "stable-diffusion-3.5-large-turbo.json",
    )


def test_the_authors_scores_import_with_their_no_op_baseline(paper_files, tmp_path) -> None:
    blocks, components, arch = paper_files
    out = tmp_path / "contrib.json"
    args = ["contrib", "import", "--blocks", str(blocks), "--components", str(components)]
    result = CliRunner().invoke(main, [*args, "--arch-config", str(arch), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "38 blocks and 189 subcomponents" in result.output and "30.02949" in result.output
    contrib = read_contrib(out)
    assert contrib.model_fingerprint is None and contrib.ablation == "identity"
    assert contrib.architecture == json.loads(arch.read_text())
    assert contrib.drops[(35, "block")] == 23.7  # the csv's change is -23.7
    assert contrib.drops[(13, "ff")] == pytest.approx(30.02949 - 30.65879)  # ff helps when gone
    assert contrib.drops[(0, "norm1")] == pytest.approx(30.02949 - 7.07737)  # w_norm1
    assert (37, "ff_context") not in contrib.drops  # the no-op: SD3's last block has none
    entries = {(e["block"], e["component"]): e for e in contrib.raw["entries"]}
    assert entries[(13, "ff")]["parameters"] == 47_329_152
    assert entries[(13, "norm1_context")]["parameters"] == 35_502_336
    assert contrib.raw["total_parameters"] == 8_056_627_520
    again = CliRunner().invoke(main, [*args, "--arch-config", str(arch), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("blocks", "components", "message"),
    [
        ("block,change\n0,-1\n", None, r"no score for block\(s\) \[1, 2"),
        ("block,change\n0,-1\n0,-2\n", None, "appears twice"),
        ("blk,change\n", None, "expected a header"),
        ("block,change\n0,x\n", None, "expected 'block,change'"),
        (None, '{"0<tab>norm1": 1.0}', "removes the LayerNorm too"),
        (None, '{"0<tab>w_norm1": 1.0}', "pass --baseline"),
        (None, '{"0<tab>fc": 1.0}', "unknown part 'fc'"),
        (None, '{"0<tab>all": 1.0}', "come from --blocks"),
        (None, '{"99<tab>ff": 1.0}', "out of range"),
        (None, '{"zero<tab>ff": 1.0}', "bad component key"),
        (None, "[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_score_files_are_one_line_errors(
    paper_files, tmp_path, blocks, components, message
) -> None:
    good_blocks, _, arch = paper_files
    blocks = write(tmp_path / "b.csv", blocks) if blocks else good_blocks
    components = write(tmp_path / "c.json", components) if components else None
    with pytest.raises(UserError, match=message):
        import_contributions(blocks, arch, tmp_path / "out.json", components=components)
    assert not (tmp_path / "out.json").exists()


def test_a_given_baseline_and_a_lower_is_better_metric(paper_files, tmp_path) -> None:
    _, _, arch = paper_files
    blocks = write(
        tmp_path / "b.csv", "block,mse_change\n" + "".join(f"{i},0.5\n" for i in range(38))
    )
    components = write(tmp_path / "c.json", json.dumps({"3\tff": 0.25}))
    result = import_contributions(
        blocks, arch, tmp_path / "o.json", components=components, baseline=0.2,
        higher_is_better=False,
    )  # fmt: skip
    drops = {(e["block"], e["component"]): e["drop"] for e in result["entries"]}
    assert drops[(0, "block")] == 0.5 and drops[(3, "ff")] == pytest.approx(0.05)
    assert result["scorer"]["metric"] == "mse_change"


def test_scores_imported_for_the_models_own_architecture_plan_it(toy_model_dir, tmp_path) -> None:
    model = toy_model_dir("sd3")  # 8 joint blocks
    config = tmp_path / "config.json"
    config.write_text((model / "transformer" / "config.json").read_text())
    drops = [4.0, 0.2, 3.0, 0.1, 0.3, 0.2, 2.5, 0.4]  # critical: 0, 2, 6
    blocks = write(tmp_path / "b.csv", "block,score_change\n" + "".join(
        f"{i},{-d}\n" for i, d in enumerate(drops)))  # fmt: skip
    contrib = tmp_path / "contrib.json"
    import_contributions(blocks, config, contrib)
    result = CliRunner().invoke(main, ["prune", "--model", str(model), "--plan", "hpp", "--budget",
                                       "0.85", "--contrib", str(contrib), "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "critical blocks (kept): 0, 2, 6" in result.output
        and "remove blocks: 5, 4" in result.output
    )


def test_prune_checks_an_imported_file_against_the_models_architecture(
    paper_files, toy_model_dir, tmp_path
) -> None:
    blocks, components, arch = paper_files
    out = tmp_path / "contrib.json"
    import_contributions(blocks, arch, out, components=components)
    model = toy_model_dir("sd3")
    args = ["prune", "--model", str(model), "--plan", "hpp", "--budget", "0.8"]
    result = CliRunner().invoke(main, [*args, "--contrib", str(out), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "imported for another architecture" in result.output
    assert "num_layers" in result.output
