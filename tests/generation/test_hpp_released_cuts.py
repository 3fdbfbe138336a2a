"""HPP on the authors' published SD3.5-Large-Turbo scores reproduces both released cuts.

Data: ``../shared/data/hierarchicalprune`` (block drops read from the paper's Figure 3(a),
+-0.2; the reference's subcomponent HPSv2 scores), the full-size architecture on the meta
device. The released cuts: 20% = blocks {25-28, 31-34} (78.85% kept); 30% = that plus ff and
ff_context of 13-18 and norm1_context of 14-16 (70.48% kept).
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from click.testing import CliRunner

from generation.adapters import BLOCK, get_adapter
from generation.measurement.contrib import read_contrib
from generation.measurement.contrib_import import import_contributions
from generation.planning import LEVELS, PRESETS, hpp_plan, parse_budget
from generation.store.architectures import build_from_config, read_arch_config
from hprune.cli import main
from hprune.errors import UserError

MODERATE_BLOCKS = [25, 26, 27, 28, 31, 32, 33, 34]
AGGRESSIVE_PARTS = {
    *((i, c) for i in range(13, 19) for c in ("ff", "ff_context")),
    *((i, "norm1_context") for i in (14, 15, 16)),
}


@pytest.fixture(scope="module")
def paper(shared_data, tmp_path_factory):
    """(adapter of SD3.5-LT on meta, the imported contributions, the import's arguments)."""
    data = shared_data / "hierarchicalprune"
    args = dict(
        blocks=data / "sd35-large-turbo_block_hpsv2_change.csv",
        components=data / "sd35-large-turbo_subcomponent_hpsv2.json",
        arch_config=shared_data / "architectures" / "stable-diffusion-3.5-large-turbo.json",
    )
    out = tmp_path_factory.mktemp("paper") / "contrib.json"
    import_contributions(args["blocks"], args["arch_config"], out, components=args["components"])
    adapter = get_adapter(build_from_config(read_arch_config(args["arch_config"]), "meta"))
    return adapter, read_contrib(out), {**args, "contrib": out}


def plan_at(paper, budget, contrib=None, rule=None):
    adapter, measured, _ = paper
    return hpp_plan(
        adapter,
        contrib or measured,
        parse_budget(budget),
        original_parameters=adapter.total_params(),
        rule=rule,
    )


def test_the_moderate_level_is_the_released_20_percent_cut(paper) -> None:
    plan = plan_at(paper, "moderate")
    assert plan.block_indices() == MODERATE_BLOCKS
    assert not plan.removed_subcomponents
    assert round(plan.kept_fraction, 4) == 0.7885
    assert plan.details["critical_blocks"] == [0, 1, 2, 11, 19, 20, 21, 22, 23, 24, 29, 35]
    assert plan_at(paper, 0.8).block_indices() == MODERATE_BLOCKS


def test_the_aggressive_level_is_the_released_30_percent_cut(paper) -> None:
    for rule in (None, PRESETS["sd35-large-turbo-paper"]):
        plan = plan_at(paper, "aggressive", rule=rule)
        assert plan.block_indices() == MODERATE_BLOCKS
        assert set(plan.component_parts()) == AGGRESSIVE_PARTS
        assert round(plan.kept_fraction, 4) == 0.7048
    assert plan.details["subcomponent_region"] == [13, 14, 15, 16, 17, 18]
    assert LEVELS == {"moderate": 0.8, "aggressive": 0.71}


def _with_block_drops(contrib, drops: dict[int, float]):
    return dataclasses.replace(
        contrib, drops={**contrib.drops, **{(i, BLOCK): d for i, d in drops.items()}}
    )


def test_the_cuts_survive_the_figures_reading_error(paper) -> None:
    """Block drops are read from a figure to +-0.2: every reading in that band gives the same cuts."""
    _, contrib, _ = paper
    drops = contrib.block_drops()
    removed = set(MODERATE_BLOCKS)
    # the worst case for the margin: removed blocks look worse, kept candidates better, and the
    # largest drop (the critical threshold) moves both ways
    for shift, top in itertools.product((0.2, -0.2), (0.2, -0.2)):
        worst = {i: d + (shift if i in removed else -shift) for i, d in drops.items()}
        worst[35] = drops[35] + top
        plan = plan_at(paper, "moderate", _with_block_drops(contrib, worst))
        assert plan.block_indices() == MODERATE_BLOCKS
    rng = random.Random(0)
    for _ in range(200):
        noisy = {i: d + rng.uniform(-0.2, 0.2) for i, d in drops.items()}
        perturbed = _with_block_drops(contrib, noisy)
        assert plan_at(paper, "moderate", perturbed).block_indices() == MODERATE_BLOCKS
        aggressive = plan_at(paper, "aggressive", perturbed)
        assert aggressive.block_indices() == MODERATE_BLOCKS
        assert set(aggressive.component_parts()) == AGGRESSIVE_PARTS


def test_without_the_position_rule_the_plan_starts_in_the_head(paper) -> None:
    """The issue's failure: ranked by drop alone, early blocks with small drops go first."""
    rule = dataclasses.replace(PRESETS["default"], head_fraction=0, layout_fraction=0)
    plan = plan_at(paper, "moderate", rule=rule)
    assert {3, 8, 10, 13} <= set(plan.block_indices())


def test_budgets_as_levels_or_fractions() -> None:
    assert parse_budget("moderate") == 0.8 and parse_budget("Aggressive") == 0.71
    assert parse_budget("0.75") == 0.75
    for bad in ("gentle", "1.5", "0"):
        with pytest.raises(UserError):
            parse_budget(bad)


def test_prune_dry_run_plans_the_full_size_model_without_weights(paper, tmp_path) -> None:
    _, _, args = paper
    base = ["prune", "--arch-config", str(args["arch_config"]), "--contrib", str(args["contrib"])]
    result = CliRunner().invoke(
        main, [*base, "--plan", "hpp", "--budget", "aggressive", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "remove blocks: 31, 32, 28, 34, 26, 25, 33, 27" in lines
    assert "(70.48% of the original 8,056,627,520)" in lines[1]
    removed = next(line for line in lines if line.startswith("remove subcomponents: "))
    assert {tuple(p.split(":")) for p in removed.split(": ", 1)[1].split(", ")} == {
        (str(i), c) for i, c in AGGRESSIVE_PARTS
    }
    assert "dry run: nothing written" in lines and not list(tmp_path.iterdir())
    options = ["--plan", "hpp", "--budget", "0.71", "--dry-run", "--sub-blocks", "12-18"]
    result = CliRunner().invoke(main, [*base, *options])
    assert result.exit_code == 0 and "12:ff" in result.output  # a region by hand
    for extra, message in (
        (["--plan", "hpp", "--budget", "moderate"], "add --dry-run"),
        (["--plan", "hpp", "--budget", "extreme", "--dry-run"], "neither a fraction"),
        (["--plan", "hpp", "--budget", "0.7", "--dry-run", "--sub-blocks", "3,9"], "one range"),
    ):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
