"""Writing a transformer so that plain ``from_pretrained`` reloads it, and linking the rest.

A pruned model on disk is an ordinary diffusers directory:

- the block counts in ``transformer/config.json`` are the pruned ones, so
  ``from_pretrained`` builds exactly the kept blocks (without the update SD3
  fails to load on a shape mismatch, while FLUX loads with only a warning: the
  kept blocks' weights shift positions and the last positions are left on the
  meta device, or initialised at random with ``low_cpu_mem_usage=False``; see
  the tests);
- a model with removed subcomponents is saved as a pruned class
  (``generation.transforms.pruned_classes``) whose config names the removed
  parts and the ablation semantics; only the kept weights are stored, and
  ``model_index.json`` names that class, so ``DiffusionPipeline.from_pretrained``
  builds it (once the module is imported) and computes exactly what the pruned
  model computes. A model with only whole blocks removed stays the plain
  diffusers class;
- the other components (text encoders, VAE, tokenizers, scheduler) are hard
  links to the input model's files where the file system allows, else copies.
  Every hprune writer replaces files by rename, never in place, so a hard link
  never lets one model's change reach another.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from generation.transforms.pruned_classes import library_entry, saved_class, saved_config
from hprune.errors import UserError
from hprune.fileio import atomic_write_text


def save_transformer(transformer, directory: Path) -> type:
    """``save_pretrained`` of ``transformer`` as the class it is saved as; return that class."""
    cls = saved_class(transformer)
    with torch.device("meta"):
        skeleton = cls.from_config(saved_config(transformer, cls))
    skeleton.load_state_dict(transformer.state_dict(), strict=True, assign=True)
    skeleton.save_pretrained(directory)
    return cls


def save_pipeline_transformer(transformer, source: Path, target: Path) -> None:
    """Write ``transformer`` into ``target``: a pipeline folder linked from ``source`` (with
    ``model_index.json`` naming the saved class), or a transformer folder when ``source`` is one."""
    if not (source / "model_index.json").is_file():
        save_transformer(transformer, target)
        return
    link_tree(source, target, skip={"transformer", "model_index.json"})
    cls = save_transformer(transformer, target / "transformer")
    write_pipeline_index(source / "model_index.json", target / "model_index.json", cls)


def write_pipeline_index(source: Path, target: Path, transformer_class: type) -> None:
    """Copy a pipeline's ``model_index.json`` with its transformer entry naming ``transformer_class``."""
    try:
        index = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read pipeline index {source}: {exc}") from None
    index["transformer"] = library_entry(transformer_class)
    atomic_write_text(target, json.dumps(index, indent=2) + "\n")


def link_tree(source: Path, target: Path, *, skip: set[str]) -> None:
    """Recreate ``source`` under ``target`` with hard links (copies across file systems), leaving out ``skip``."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in skip or entry.name.startswith("."):
            continue
        destination = target / entry.name
        if entry.is_dir():
            link_tree(entry, destination, skip=set())
            continue
        real = entry.resolve()
        try:
            os.link(real, destination)
        except OSError:
            shutil.copy2(real, destination)
