"""Prompt sets: one reader for the benchmark formats the studies draw on (the prompts contract).

Formats, chosen by the file's extension (or ``fmt=``):

- ``.jsonl``: GenEval ``evaluation_metadata.jsonl``, one object per line with ``tag``,
  ``include``, optional ``exclude`` and ``prompt``. Id ``geneval-NNNNN``: the line's index,
  the same index GenEval names its image folders by.
- ``.tsv``: PartiPrompts, columns ``Prompt, Category, Challenge, Note``, read with quoting
  off. Id ``parti-NNNN``: the row's index below the header.
- ``.json``: the HPSv2 benchmark, a JSON list of prompt strings per style (the style is the
  file's stem: anime, concept-art, paintings, photo) or one object ``{style: [prompts]}``.
  Id ``hpsv2-<style>-NNNN``.
- ``.txt``: one prompt per line, blank lines skipped. Id ``txt-<hash>`` from the normalised
  text, so inserting a line elsewhere does not renumber the others.
- ``.csv``: a header with ``prompt_id`` and ``prompt``, optionally ``category``; further
  columns go to ``metadata``.

Prompts that differ only in whitespace or letter case are duplicates: the first one is
kept. ``per_category=N`` then keeps a seeded random sample of N prompts per category, in
file order, each category drawn independently of the others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hprune.errors import UserError

FORMATS = ("geneval", "parti", "hpsv2", "txt", "csv")
_EXTENSIONS = {".jsonl": "geneval", ".tsv": "parti", ".json": "hpsv2", ".txt": "txt", ".csv": "csv"}


@dataclass(frozen=True)
class Prompt:
    """One prompt of a set, with an id that stays the same across runs and machines."""

    prompt_id: str
    text: str
    category: str = ""
    metadata: dict = field(default_factory=dict, hash=False)


def normalise_text(text: str) -> str:
    """The text duplicates are compared by: runs of whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def read_prompts(
    path: str | Path,
    *,
    per_category: int | None = None,
    seed: int = 0,
    fmt: str | None = None,
) -> list[Prompt]:
    """Read a prompt file, drop duplicates, and optionally sub-sample ``per_category`` per category."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown prompt format {fmt!r} (known: {', '.join(FORMATS)})")
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = {
        "geneval": _read_geneval,
        "parti": _read_parti,
        "hpsv2": _read_hpsv2,
        "txt": _read_txt,
        "csv": _read_csv,
    }[fmt]
    prompts = deduplicate(reader(text, path))
    if not prompts:
        raise UserError(f"{path}: no prompts in the file")
    _check_unique_ids(prompts, path)
    if per_category is not None:
        prompts = sample_per_category(prompts, per_category, seed=seed)
    return prompts


def detect_format(path: Path) -> str:
    """The format a file's extension names; UserError for any other extension."""
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise UserError(
            f"unknown prompt format for {path.name!r}: expected one of {known}"
        ) from None


def deduplicate(prompts: Iterable[Prompt]) -> list[Prompt]:
    """Keep the first of the prompts whose texts differ only in whitespace or case."""
    seen: set[str] = set()
    kept = []
    for prompt in prompts:
        key = normalise_text(prompt.text)
        if key not in seen:
            seen.add(key)
            kept.append(prompt)
    return kept


def sample_per_category(prompts: list[Prompt], n: int, *, seed: int = 0) -> list[Prompt]:
    """A seeded sample of at most ``n`` prompts per category, kept in their original order.

    Each category draws from its own generator seeded by ``(seed, category)``, so adding a
    category to a file does not change the sample of another.
    """
    if n < 1:
        raise UserError(f"--per-category must be at least 1, got {n}")
    by_category: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_category.setdefault(prompt.category, []).append(index)
    chosen: set[int] = set()
    for category, indices in by_category.items():
        if len(indices) <= n:
            chosen.update(indices)
        else:
            chosen.update(random.Random(f"{seed}:{category}").sample(indices, n))
    return [prompt for index, prompt in enumerate(prompts) if index in chosen]


def _check_unique_ids(prompts: list[Prompt], path: Path) -> None:
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.prompt_id in seen:
            raise UserError(f"{path}: prompt id {prompt.prompt_id!r} appears twice")
        seen.add(prompt.prompt_id)


def _require_text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: empty or missing prompt text")
    return value.strip()


def _read_geneval(text: str, path: Path) -> list[Prompt]:
    prompts = []
    index = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("tag"), str):
            raise UserError(f"{where}: a GenEval row needs a string 'tag' and a 'prompt'")
        prompt_text = _require_text(row.get("prompt"), where)
        metadata = {key: value for key, value in row.items() if key != "prompt"}
        metadata["geneval_index"] = index
        prompts.append(Prompt(f"geneval-{index:05d}", prompt_text, row["tag"], metadata))
        index += 1
    return prompts


def _read_parti(text: str, path: Path) -> list[Prompt]:
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    if "Prompt" not in header or "Category" not in header:
        raise UserError(f"{path}: a PartiPrompts TSV needs a header with 'Prompt' and 'Category'")
    prompts = []
    index = 0
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line_no}"
        if len(row) != len(header):
            raise UserError(f"{where}: expected {len(header)} tab-separated fields, got {len(row)}")
        record = dict(zip(header, row, strict=True))
        prompt_text = _require_text(record.pop("Prompt"), where)
        category = record.pop("Category").strip()
        metadata = {key.lower(): value.strip() for key, value in record.items()}
        metadata["parti_index"] = index
        prompts.append(Prompt(f"parti-{index:04d}", prompt_text, category, metadata))
        index += 1
    return prompts


def _read_hpsv2(text: str, path: Path) -> list[Prompt]:
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, list):
        styles = {path.stem: data}
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        styles = data
    else:
        raise UserError(
            f"{path}: an HPSv2 benchmark file is a JSON list of prompts or {{style: [prompts]}}"
        )
    prompts = []
    for style, texts in styles.items():
        for index, value in enumerate(texts):
            prompt_text = _require_text(value, f"{path}: {style}[{index}]")
            metadata = {"style": style, "hpsv2_index": index}
            prompts.append(Prompt(f"hpsv2-{style}-{index:04d}", prompt_text, style, metadata))
    return prompts


def _read_txt(text: str, path: Path) -> list[Prompt]:
    prompts = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            digest = hashlib.sha1(normalise_text(line).encode("utf-8")).hexdigest()[:12]
            prompts.append(Prompt(f"txt-{digest}", line.strip(), "", {"line": line_no}))
    return prompts


def _read_csv(text: str, path: Path) -> list[Prompt]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader, [])]
    if not header:
        return []
    if "prompt_id" not in header or "prompt" not in header:
        raise UserError(f"{path}: a prompt CSV needs a header with 'prompt_id' and 'prompt'")
    prompts = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise UserError(
                f"{where}: expected {len(header)} comma-separated fields, got {len(row)}"
            )
        record = dict(zip(header, row, strict=True))
        prompt_id = record.pop("prompt_id").strip()
        if not prompt_id:
            raise UserError(f"{where}: empty prompt_id")
        prompt_text = _require_text(record.pop("prompt"), where)
        category = record.pop("category", "").strip()
        prompts.append(Prompt(prompt_id, prompt_text, category, record))
    return prompts
