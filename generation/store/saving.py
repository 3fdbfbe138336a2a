"""Writing a transformer so that plain ``from_pretrained`` reloads it, and linking the rest.

A pruned model on disk is an ordinary diffusers directory:

- the block counts in ``transformer/config.json`` are the pruned ones, so
  plain ``from_pretrained`` builds exactly the kept blocks (without the
  update SD3 fails to load on a shape mismatch, while FLUX loads with only a
  warning: the kept blocks' weights shift positions and the last positions
  are left on the meta device, or initialised at random with
  ``low_cpu_mem_usage=False``; see the tests);
- a removed subcomponent is stored with *neutral weights*
  (``generation.transforms.surgery.full_structure_state_dict``). Plain
  ``from_pretrained`` then computes exactly what the pruned model computes, at
  the memory cost of the full structure; ``generation.store.loading`` reads the
  model record and removes those subcomponents again, so hprune's own loader
  gets the real savings;
- the other components (text encoders, VAE, tokenizers, scheduler) are hard
  links to the input model's files where the file system allows, else copies.
  Every hprune writer replaces files by rename, never in place, so a hard link
  never lets one model's change reach another.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from generation.transforms.surgery import full_structure_state_dict


def save_transformer(transformer, directory: Path) -> None:
    """``save_pretrained`` of the full structure with neutral weights for removed subcomponents."""
    with torch.device("meta"):
        skeleton = type(transformer).from_config(transformer.config)
    skeleton.load_state_dict(full_structure_state_dict(transformer), strict=True, assign=True)
    skeleton.save_pretrained(directory)


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
