"""Contribution scores measured elsewhere, as a ``contrib.json`` that HPP plans from.

A user with the authors' scores for SD3.5 Large Turbo (``../shared/data/hierarchicalprune``:
38 x 400 renders at 1024 px for the blocks alone) need not measure them again:

- ``--blocks CSV``: one row per block, ``block,<metric change>``: the change of the score when
  the whole block is removed (negative = worse for a higher-is-better metric), every block once;
- ``--components JSON`` (optional): the reference implementation's layout,
  ``{"<block><tab><part>": score}``, where ``<tab>`` is the literal five characters (or a tab)
  and the score is the raw metric of the model with that one part replaced. Part names are
  the reference's: ``w_norm1``, ``w_norm1_context``, ``attn``, ``ff``, ``ff_context`` (MMDiT
  blocks), ``w_norm``, ``attn``, ``proj_mlp_out`` (FLUX single blocks).
  An entry that names a part the block does not have (SD3's last block has no
  ``ff_context``) changes nothing: it is the unablated model's score, the baseline the
  drops are taken from, unless ``--baseline`` gives one.
- ``--arch-config FILE``: the transformer config the scores belong to, built on the meta
  device to count each part's parameters; it is kept in the output, and ``hprune prune``
  checks the model it prunes against it (there is no fingerprint of the scored weights).

The reference's ``norm1``/``norm1_context``/``norm`` (modulation *and* LayerNorm removed)
have no hprune counterpart and are refused; hprune's ``norm1`` is the reference's ``w_norm1``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

from generation.adapters import BLOCK, DEFAULT_ABLATION, ModelAdapter, Part, get_adapter
from generation.measurement.contrib import (
    CONTRIB_FORMAT,
    CONTRIB_VERSION,
    read_json_file,
    score_drop,
)
from generation.store.architectures import build_from_config, read_arch_config
from hprune.errors import UserError
from hprune.fileio import atomic_write_text

#: The reference implementation's part names -> hprune's.
REFERENCE_PARTS = {
    "w_norm1": "norm1",
    "w_norm1_context": "norm1_context",
    "w_norm": "norm",
    "attn": "attn",
    "ff": "ff",
    "ff_context": "ff_context",
    "proj_mlp_out": "mlp",
}
#: The reference's removals that also drop the LayerNorm: no hprune counterpart.
WITHOUT_LAYERNORM = {"norm1": "w_norm1", "norm1_context": "w_norm1_context", "norm": "w_norm"}


def read_block_changes(path: str | Path, num_blocks: int) -> tuple[str, dict[int, float]]:
    """``block,<metric change>`` rows -> (the change column's name, block -> change)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"block score file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read block score file {path}: {exc}") from None
    if not rows or len(rows[0]) != 2 or rows[0][0].strip() != "block":
        raise UserError(f"{path}: expected a header 'block,<metric change>'")
    column = rows[0][1].strip()
    changes: dict[int, float] = {}
    for number, row in enumerate(rows[1:], start=2):
        try:
            index, value = int(row[0]), float(row[1])
        except (IndexError, ValueError):
            raise UserError(f"{path} line {number}: expected 'block,change', got {row!r}") from None
        if not 0 <= index < num_blocks or not math.isfinite(value):
            raise UserError(
                f"{path} line {number}: block {index} change {value} (the model has blocks "
                f"0-{num_blocks - 1})"
            )
        if index in changes:
            raise UserError(f"{path} line {number}: block {index} appears twice")
        changes[index] = value
    missing = [i for i in range(num_blocks) if i not in changes]
    if missing:
        raise UserError(f"{path} has no score for block(s) {missing}")
    return column, changes


def parse_part_key(key: str) -> tuple[int, str]:
    """``"13<tab>ff"`` (or with a real tab) -> (13, "ff")."""
    index, sep, part = key.replace("\t", "<tab>").partition("<tab>")
    if not sep or not index.strip().isdigit():
        raise UserError(f"bad component key {key!r}: expected '<block><tab><part>'")
    return int(index), part.strip()


def read_component_scores(path: str | Path) -> dict[tuple[int, str], float]:
    """The reference's ``{"<block><tab><part>": score}`` file, keys parsed (reference part names)."""
    path = Path(path)
    data = read_json_file(path, "component score file")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a JSON object of '<block><tab><part>': score")
    scores = {}
    for key, value in data.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{path}: the score of {key!r} is not a number")
        scores[parse_part_key(key)] = float(value)
    return scores


def _hprune_part(adapter: ModelAdapter, index: int, name: str, source: Path) -> Part | None:
    """The hprune part a reference entry names; None for a part the block does not have."""
    if name in WITHOUT_LAYERNORM:
        raise UserError(
            f"{source}: part {name!r} removes the LayerNorm too, which hprune does not model; "
            f"hprune's {name} is the reference's {WITHOUT_LAYERNORM[name]}"
        )
    if name == "all":
        raise UserError(
            f"{source}: whole-block scores ({key_text(index, name)}) come from --blocks"
        )
    if name not in REFERENCE_PARTS:
        raise UserError(
            f"{source}: unknown part {name!r} (reference names: {', '.join(REFERENCE_PARTS)})"
        )
    if not 0 <= index < adapter.num_blocks:
        raise UserError(
            f"{source}: block {index} is out of range (blocks 0-{adapter.num_blocks - 1})"
        )
    component = REFERENCE_PARTS[name]
    if component not in adapter.all_components(index):
        return None
    return index, component


def key_text(index: int, name: str) -> str:
    return f"{index}<tab>{name}"


def import_contributions(
    blocks: str | Path,
    arch_config: str | Path,
    out: str | Path,
    *,
    components: str | Path | None = None,
    baseline: float | None = None,
    higher_is_better: bool = True,
    ablation: str = DEFAULT_ABLATION,
    overwrite: bool = False,
) -> dict:
    """Write ``out`` (contrib.json) from published block changes and component scores."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists (pass --overwrite to replace it)")
    config = read_arch_config(arch_config)
    adapter = get_adapter(build_from_config(config, "meta"), ablation)
    metric, changes = read_block_changes(blocks, adapter.num_blocks)
    scores: dict[Part, float] = {}
    no_ops: list[float] = []
    if components is not None:
        for (index, name), score in read_component_scores(components).items():
            part = _hprune_part(adapter, index, name, Path(components))
            if part is None:
                no_ops.append(score)
            else:
                scores[part] = score
    if scores and baseline is None:
        if not no_ops:
            raise UserError(
                f"{components} has no entry for a part its block lacks (the unablated score); "
                "pass --baseline SCORE"
            )
        baseline = sum(no_ops) / len(no_ops)

    def entry(part: Part, score: float | None, drop: float) -> dict:
        return {
            "block": part[0],
            "component": part[1],
            "kind": adapter.block_kind(part[0]),
            "parameters": adapter.part_params(part),
            "score": score,
            "drop": drop,
            "scores": [],
        }

    # a change is score - baseline: the drop is its negative for a higher-is-better metric
    entries = [
        entry((i, BLOCK), None, -change if higher_is_better else change)
        for i, change in sorted(changes.items())
    ]
    entries += [
        entry(part, score, score_drop(score, baseline, higher_is_better=higher_is_better))
        for part, score in sorted(scores.items())
    ]
    result = {
        "format": CONTRIB_FORMAT,
        "version": CONTRIB_VERSION,
        "model": None,
        "model_fingerprint": None,
        "family": adapter.family,
        "num_blocks": adapter.num_blocks,
        "ablation": adapter.ablation,
        "original_indices": list(range(adapter.num_blocks)),
        "total_parameters": adapter.total_params(),
        "architecture": config,
        "imported": {
            str(role): {"file": str(path), "sha256": _sha256(path)}
            for role, path in (("blocks", blocks), ("components", components))
            if path is not None
        },
        "scorer": {
            "name": "imported",
            "metric": metric,
            "options": {},
            "higher_is_better": bool(higher_is_better),
            "needs_reference": False,
        },
        "baseline": {"score": baseline, "scores": [], "no_op_entries": len(no_ops)},
        "block_similarity": [],
        "entries": entries,
    }
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return result


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
