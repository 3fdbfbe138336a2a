"""Render matched stimulus sets: every (variant, prompt, seed) not yet in the stimuli folder.

Each image comes from ``batches.render_batch`` (the noise of a seed is the same for every
variant); the folder's bookkeeping (manifest, journals, resuming) is ``folder``'s.

Sharding: under ``accelerate launch`` every process takes a contiguous share of the
missing images (``PartialState.split_between_processes``), writes its own journal, and the
main process merges them into the manifest at the end.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from generation.measurement.rendering.batches import load_variant_pipeline, render_batch
from generation.measurement.rendering.folder import (
    JOURNAL_DIR,
    Job,
    append_journal,
    consolidate,
    main_process_lock,
    prepare_folder,
    save_image,
    write_render_info,
)
from generation.measurement.rendering.sizing import AUTO, Probe, parse_batch_size, probe_memory
from hprune.contracts.manifest import read_manifest
from hprune.contracts.prompts import Prompt
from hprune.contracts.variants import Variant
from hprune.errors import UserError


@dataclass(frozen=True)
class RenderSummary:
    """What a run did (counts over all processes; timing of this process)."""

    total: int  # images the request asks for
    already_done: int  # of those, rendered by an earlier run
    rendered: int  # rendered by this process in this run
    seconds: float
    complete: bool
    batch_sizes: dict[str, int] = field(default_factory=dict)  # per variant, as rendered here

    @property
    def images_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def parse_seeds(spec: str) -> list[int]:
    """``"0-3"`` -> [0, 1, 2, 3]; ``"0,5,7-8"`` -> [0, 5, 7, 8]. Sorted, without repeats."""
    seeds: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise UserError(
                f"bad seed spec {spec!r}: use non-negative integers and ranges like 0-3"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise UserError(f"bad seed range {part!r}: it runs backwards (write {last}-{first})")
        if last >= 2**63:
            raise UserError(f"seed {last} is too large for a torch generator")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def render_stimuli(
    variants: Sequence[Variant],
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    out: str | Path,
    *,
    force: bool = False,
    batch_size: int | str = 1,
    device: str | None = None,
    progress: bool = True,
) -> RenderSummary:
    """Render every (variant, prompt, seed) not yet in ``out``; see the module docstring.
    ``batch_size``: images per pipeline call, or ``"auto"`` (``rendering.sizing``)."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    batch_size = parse_batch_size(batch_size)
    if not variants or not prompts or not seeds:
        raise UserError("nothing to render: no variants, prompts or seeds")
    state = PartialState(cpu=_use_cpu(device))
    out = Path(out)
    start = time.perf_counter()
    with main_process_lock(out, enabled=state.is_main_process):
        outcome: list = [None]
        if state.is_main_process:
            try:
                outcome[0] = ("ok", prepare_folder(out, variants, prompts, seeds, force=force))
            except UserError as exc:
                outcome[0] = ("error", exc.message)
        if state.num_processes > 1:
            broadcast_object_list(outcome, from_process=0)
        status, payload = outcome[0]
        if status == "error":
            raise UserError(payload)
        fingerprints: dict[str, str] = payload

        done = {row.item for row in read_manifest(out)}
        wanted = [Job(v, p, s) for v in variants for p in prompts for s in seeds]
        todo = [job for job in wanted if job.item not in done]
        rendered, sizes = 0, {}
        try:
            with state.split_between_processes(todo) as mine:
                rendered, sizes = _render_share(
                    mine,
                    out,
                    fingerprints,
                    batch_size=batch_size,
                    device=device or str(state.device),
                    progress=progress and state.is_local_main_process,
                    process_index=state.process_index,
                )
        finally:
            # One process merges even after an error or Ctrl-C, so the manifest shows what is
            # done. Several merge only after all finished; a failed launch is merged next run.
            if state.num_processes == 1:
                complete = _finish(out, variants, fingerprints, seeds, wanted)
        if state.num_processes > 1:
            state.wait_for_everyone()
            complete = (
                _finish(out, variants, fingerprints, seeds, wanted)
                if state.is_main_process
                else False
            )
    return RenderSummary(
        total=len(wanted),
        already_done=len(wanted) - len(todo),
        rendered=rendered,
        seconds=time.perf_counter() - start,
        complete=complete,
        batch_sizes=sizes,
    )


def _use_cpu(device: str | None) -> bool:
    """Run the processes on the CPU (gloo) when asked, or when there is no accelerator."""
    if device is not None:
        return torch.device(device).type == "cpu"
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not (
        torch.accelerator.is_available()
    )


def _finish(out, variants, fingerprints, seeds, wanted: Sequence[Job]) -> bool:
    """Merge the journals into the manifest and record whether every wanted image is there."""
    rows = consolidate(out)
    complete = {job.item for job in wanted} <= {row.item for row in rows}
    write_render_info(out, variants, fingerprints, seeds, complete=complete)
    return complete


# --- every process: render its share -----------------------------------------------------


def _render_share(
    jobs: Sequence[Job],
    out: Path,
    fingerprints: dict[str, str],
    *,
    batch_size: int | str,
    device: str,
    progress: bool,
    process_index: int,
) -> tuple[int, dict[str, int]]:
    """Render ``jobs`` (grouped by variant, in batches), journalling each finished image;
    how many, and the batch size of each variant (``auto``: from the first image's call)."""
    (out / JOURNAL_DIR).mkdir(exist_ok=True)
    journal_path = out / JOURNAL_DIR / f"{socket.gethostname()}-{os.getpid()}-{process_index}.jsonl"
    rendered, sizes = 0, {}
    with (
        open(journal_path, "a", encoding="utf-8") as journal,
        tqdm(total=len(jobs), unit="img", desc="rendering", disable=not progress) as bar,
    ):
        for variant, group in _by_variant(jobs):
            bar.set_postfix_str(variant.name)
            pipe = load_variant_pipeline(variant, device=device)
            size = None if batch_size == AUTO else batch_size
            start = 0
            while start < len(group):
                batch = group[start : start + (size or 1)]
                measure = probe_memory(device) if size is None else nullcontext(Probe())
                with measure as probe:
                    images = render_batch(
                        pipe, variant, [(job.prompt.text, job.seed) for job in batch]
                    )
                if size is None:  # auto: the first image alone told what a call needs
                    size = probe.batch_for(len(batch), len(group) - len(batch))
                start += len(batch)
                for job, image in zip(batch, images, strict=True):
                    row = save_image(out, job, image, fingerprints[variant.name])
                    append_journal(journal, row)
                    rendered += 1
                    bar.update(1)
            sizes[variant.name] = size or 1
            del pipe
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rendered, sizes


def _by_variant(jobs: Sequence[Job]) -> Iterator[tuple[Variant, list[Job]]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.variant.name, []).append(job)
    for group in groups.values():
        yield group[0].variant, group
