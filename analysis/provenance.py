"""Where the numbers came from: input hashes, and the responses checked against the stimuli."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.data import is_database_url
from hprune.contracts.manifest import MANIFEST_NAME, read_manifest, reference_name, sha256_file
from hprune.errors import UserError


def redact_url(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def inputs_table(
    source: str, metrics_files: Sequence[str | Path], stimuli: str | Path | None
) -> pd.DataFrame:
    """One row per input: what it is, where it is, and the SHA-256 of its content."""
    rows = []
    if is_database_url(str(source)):
        rows.append(("responses", redact_url(str(source)), "(database: contents at analysis time)"))
    else:
        path = Path(source)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        rows += [("responses", str(p), sha256_file(p)) for p in files]
    rows += [("metrics", str(p), sha256_file(p)) for p in metrics_files]
    if stimuli is not None:
        manifest = Path(stimuli) / MANIFEST_NAME
        rows.append(("stimuli manifest", str(manifest), sha256_file(manifest)))
    return pd.DataFrame(rows, columns=["input", "location", "sha256"])


def check_against_stimuli(
    responses: pd.DataFrame, stimuli: str | Path
) -> tuple[dict[str, str], tuple[str, ...], str | None]:
    """Prompt categories, known variants and the reference of a stimulus folder.

    Raises a UserError when a response names an image the manifest gives to another
    variant (responses and stimuli from different sets).
    """
    rows = read_manifest(stimuli)
    image_variant = {row.image_id: row.variant for row in rows}
    for side in ("left", "right"):
        shown = responses[responses["kind"].isin(["pair", "rating"])]
        images = shown[f"{side}_image"].astype("string")
        expected = images.map(image_variant)
        named = shown[f"{side}_variant"].astype("string")
        clash = expected.notna() & (expected != named)
        if clash.any():
            i = clash.idxmax()
            raise UserError(
                f"the responses and {stimuli} disagree: image {images[i]} is variant "
                f"{expected[i]!r} in the manifest but {named[i]!r} in the responses"
            )
    categories = {row.prompt_id: row.category for row in rows if row.category}
    variants = tuple(sorted({row.variant for row in rows}))
    return categories, variants, reference_name(stimuli)
