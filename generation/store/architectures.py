"""A full-size transformer from its ``config.json``, with random weights or none (``meta``).

A random-weight model built from a full-size config (``../shared/data/architectures/``)
has the real memory and latency, so the efficiency figures can be reproduced without the
weights; on the meta device it is counted without any memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.adapters import adapter_class
from generation.transforms.pruned_classes import diffusers_base, transformer_class
from hprune.errors import UserError


def read_arch_config(path: str | Path) -> dict[str, Any]:
    """A transformer ``config.json`` (e.g. ../shared/data/architectures/*.json), validated."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"architecture config {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"architecture config {path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "_class_name" not in config:
        raise UserError(f"{path} is not a diffusers transformer config (no _class_name)")
    try:
        cls = transformer_class(config["_class_name"])
        adapter_class(diffusers_base(cls).__name__)  # an architecture hprune supports
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return config


def build_from_config(config: Mapping[str, Any], device: str | torch.device = "meta") -> nn.Module:
    """The transformer ``config`` describes, with random weights on ``device`` (meta: no memory).

    A pruned model's config (``generation.transforms.pruned_classes``) builds the pruned class.
    """
    cls = transformer_class(config["_class_name"])
    try:
        with torch.device(device):
            model = cls.from_config(dict(config))
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"cannot build a {config['_class_name']} from this config: {exc}") from exc
    return model.eval().requires_grad_(False)
