"""The teacher and its pruned student, loaded side by side with their blocks matched by original index.

A student must be a pruned descendant of its teacher: its model record names the teacher's
weights as its parent (fingerprint), the same family and original block counts, and each
kept block has the shapes of the teacher block with the same original index (removed
subcomponents aside). Anything else is a ``UserError`` before any output is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from generation.adapters import get_adapter, record_for_transformer
from generation.measurement.contrib import read_contrib
from generation.model_record import ModelRecord, read_record, write_record
from generation.recipes.distill.freeze import first_pruned_index
from generation.store.fingerprints import model_fingerprint
from generation.store.loading import load_pipeline, load_transformer
from generation.store.saving import save_pipeline_transformer
from hprune.errors import UserError

# The text lengths the SD3 and FLUX pipelines use by default.
DEFAULT_MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}
# What encodes the data: loaded only when the latent cache must be built, or for --no-cache.
ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "vae")


@dataclass
class DistillPair:
    """Both models, their records, and original index -> block module for each."""

    family: str
    teacher_dir: Path | None
    student_dir: Path | None
    teacher_pipe: object
    teacher: nn.Module
    student: nn.Module
    teacher_record: ModelRecord
    student_record: ModelRecord
    teacher_fingerprint: str
    teacher_blocks: dict[int, nn.Module] = field(repr=False)
    student_blocks: dict[int, nn.Module] = field(repr=False)
    block_list_names: tuple[str, ...] = ()

    @property
    def kept(self) -> list[int]:
        return list(self.student_record.kept_blocks)

    @property
    def first_pruned(self) -> int | None:
        record = self.student_record
        return first_pruned_index(
            record.removed_blocks, (e["block"] for e in record.removed_subcomponents)
        )

    @property
    def default_resolution(self) -> int:
        """The pixel size the model was built for: sample_size × the VAE's downsampling."""
        vae = getattr(self.teacher_pipe, "vae", None)
        if vae is not None:
            levels = len(vae.config.block_out_channels)
        else:  # the VAE is not loaded: its config says as much
            config = json.loads((self.teacher_dir / "vae" / "config.json").read_text())
            levels = len(config["block_out_channels"])
        return int(self.teacher.config.sample_size * 2 ** (levels - 1))

    @property
    def scheduler_config(self) -> dict | None:
        """The teacher pipeline's scheduler config (its noise levels); None without a pipeline."""
        scheduler = getattr(self.teacher_pipe, "scheduler", None)
        return dict(scheduler.config) if scheduler is not None else None

    @property
    def default_max_sequence_length(self) -> int:
        return DEFAULT_MAX_SEQUENCE_LENGTH[self.family]

    @property
    def encoders_loaded(self) -> bool:
        return getattr(self.teacher_pipe, "vae", None) is not None

    def load_encoders(self) -> None:
        """Load the text encoders and the VAE beside the teacher (its device and dtype) to encode data.

        ``load_pair`` leaves them out: with the latent cache built they are never needed, and at
        full size they are about 10 GB (T5-XXL alone 9.5 GB in bf16).
        """
        if self.encoders_loaded:
            return
        self.teacher_pipe = load_pipeline(
            self.teacher_dir,
            dtype=self.teacher.dtype,
            device=self.teacher.device,
            components={"transformer": self.teacher},
        )

    def drop_encoders(self) -> None:
        """Free the text encoders and the VAE (once everything is encoded)."""
        for name in ENCODERS:
            if getattr(self.teacher_pipe, name, None) is not None:
                setattr(self.teacher_pipe, name, None)


def blocks_by_original_index(transformer: nn.Module, record: ModelRecord) -> dict[int, nn.Module]:
    """Original index -> block module, from the record's ``kept_blocks``."""
    modules = get_adapter(transformer).block_modules()
    if len(modules) != len(record.kept_blocks):
        raise UserError(
            f"the model has {len(modules)} blocks but its record keeps {len(record.kept_blocks)}"
        )
    return dict(zip(record.kept_blocks, modules, strict=True))


def load_pair(
    teacher: str | Path, student: str | Path, *, device, teacher_dtype=torch.float32
) -> DistillPair:
    """Load the teacher pipeline and the student transformer; check that the student descends from the teacher."""
    teacher_dir, student_dir = Path(teacher), Path(student)
    for role, path in (("teacher", teacher_dir), ("student", student_dir)):
        if not path.is_dir():
            raise UserError(f"{role} model {path} is not a directory")
    student_record = read_record(student_dir)
    if student_record is None:
        raise UserError(
            f"student {student_dir} has no hprune model record: is it a model 'hprune prune' wrote?"
        )
    if student_record.quantization:
        raise UserError(
            f"student {student_dir} is quantised; distil before 'hprune quantize', not after"
        )
    fingerprint = model_fingerprint(teacher_dir)
    if student_record.parent_fingerprint and student_record.parent_fingerprint != fingerprint:
        raise UserError(
            f"student {student_dir} was not pruned from teacher {teacher_dir} "
            f"(its parent's fingerprint is {student_record.parent_fingerprint[:12]}, the teacher's {fingerprint[:12]})"
        )

    pipe = load_pipeline(  # the encoders only if needed: DistillPair.load_encoders
        teacher_dir,
        dtype=teacher_dtype,
        device=device,
        components=dict.fromkeys(ENCODERS),
    )
    teacher_record = read_record(teacher_dir) or record_for_transformer(pipe.transformer)
    if teacher_record.quantization:
        raise UserError(f"teacher {teacher_dir} is quantised; distil from the unquantised model")
    student_model = load_transformer(student_dir, dtype=torch.float32, device=device)
    return make_pair(
        pipe, student_model, teacher_record, student_record,
        teacher_fingerprint=fingerprint, teacher_dir=teacher_dir, student_dir=student_dir,
    )  # fmt: skip


def make_pair(
    teacher_pipe,
    student: nn.Module,
    teacher_record: ModelRecord,
    student_record: ModelRecord,
    *,
    teacher_fingerprint: str,
    teacher_dir: Path | None = None,
    student_dir: Path | None = None,
    teacher: nn.Module | None = None,
) -> DistillPair:
    """Match the blocks of two models in memory by original index and check they fit together.

    ``teacher`` defaults to ``teacher_pipe.transformer``; pass it with ``teacher_pipe=None`` to
    pair bare transformers (the benchmark does, feeding synthetic latents and embeddings).
    """
    teacher = teacher if teacher is not None else teacher_pipe.transformer
    family = get_adapter(teacher).family
    if student_record.family != family or teacher_record.family != family:
        raise UserError(
            f"the student is a {student_record.family} model, the teacher a {family} model"
        )
    if student_record.original_block_counts != teacher_record.original_block_counts:
        raise UserError(
            f"the student was pruned from a model with blocks {student_record.original_block_counts}, "
            f"the teacher descends from one with {teacher_record.original_block_counts}"
        )
    teacher_blocks = blocks_by_original_index(teacher, teacher_record)
    student_blocks = blocks_by_original_index(student, student_record)
    missing = [i for i in student_blocks if i not in teacher_blocks]
    if missing:
        raise UserError(
            f"the student keeps original block(s) {missing} that the teacher does not have"
        )
    list_names = get_adapter(student).block_list_names()
    _check_shapes(teacher, student, teacher_blocks, student_blocks, list_names)
    return DistillPair(
        family=family,
        teacher_dir=teacher_dir,
        student_dir=student_dir,
        teacher_pipe=teacher_pipe,
        teacher=teacher,
        student=student,
        teacher_record=teacher_record,
        student_record=student_record,
        teacher_fingerprint=teacher_fingerprint,
        teacher_blocks=teacher_blocks,
        student_blocks=student_blocks,
        block_list_names=list_names,
    )


def _check_shapes(teacher, student, teacher_blocks, student_blocks, list_names) -> None:
    """Each student parameter has the shape of its teacher counterpart (blocks matched by original index)."""
    prefixes = tuple(f"{n}." for n in list_names)
    t_params = {n: p.shape for n, p in teacher.named_parameters() if not n.startswith(prefixes)}
    for name, param in student.named_parameters():
        if name.startswith(prefixes):
            continue
        if t_params.get(name) != param.shape:
            raise UserError(
                f"the student's {name} has shape {tuple(param.shape)}, the teacher's "
                f"{tuple(t_params[name]) if name in t_params else 'does not exist'}: not a pruned descendant"
            )
    for index, block in student_blocks.items():
        t_shapes = {n: p.shape for n, p in teacher_blocks[index].named_parameters()}
        for name, param in block.named_parameters():
            if t_shapes.get(name) != param.shape:
                raise UserError(
                    f"the student's block for original index {index} does not match the teacher's "
                    f"({name}: {tuple(param.shape)} vs {tuple(t_shapes[name]) if name in t_shapes else 'missing'})"
                )


def read_sensitivity(path: str | Path, pair: DistillPair) -> dict[int, float]:
    """Block sensitivities ΔP (original index -> score drop) from a contrib.json measured on the teacher."""
    contrib = read_contrib(path)
    if contrib.model_fingerprint != pair.teacher_fingerprint or contrib.family != pair.family:
        raise UserError(
            f"{path} was measured on another model (fingerprint {contrib.model_fingerprint[:12]}, "
            f"{contrib.family}), not on the teacher ({pair.teacher_fingerprint[:12]}, {pair.family})"
        )
    return {contrib.original_indices[i]: drop for i, drop in contrib.block_drops().items()}


def save_student(pair: DistillPair, student: nn.Module, out: Path, history_entry: dict) -> None:
    """Write the trained student into ``out`` as a complete pipeline folder that hprune and diffusers load.

    The same layout ``hprune prune`` writes (``generation.recipes.prune``): the other components
    hard-linked from the student's folder, the transformer (a pruned class where subcomponents
    are removed) in the dtype the student was stored in, and the record with one more history
    entry.
    """
    save_pipeline_transformer(
        student.to(stored_dtype(pair.student_dir / "transformer")), pair.student_dir, out
    )
    write_record(out, pair.student_record.with_history(**history_entry))


def stored_dtype(folder: Path) -> torch.dtype:
    """The floating-point dtype of the weights stored in a model folder (its first safetensors tensor)."""
    from safetensors import safe_open

    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                found = dtypes.get(f.get_slice(key).get_dtype())
                if found is not None:
                    return found
    return torch.float32
