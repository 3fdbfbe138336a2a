"""Scorers with learned weights that run with transformers alone, from a local folder only.

All three are CLIP dual encoders: the score is a function of the cosine similarity of the
image and prompt embeddings. The weights folder is a transformers ``CLIPModel`` folder
(``config.json`` + weights) with its ``CLIPProcessor`` files (tokenizer and image processor),
as ``save_pretrained`` writes them. Nothing is ever downloaded: a missing or incomplete
folder is a one-line error.

- ``clipscore``: CLIPScore (Hessel et al., EMNLP 2021), ``2.5 * max(cos, 0)``, in [0, 2.5];
  any CLIP checkpoint (the paper uses ViT-B/32). Measures text alignment.
- ``pickscore``: PickScore (Kirstain et al., NeurIPS 2023), ``logit_scale.exp() * cos``
  with the fine-tuned CLIP-H of ``yuvalkirstain/PickScore_v1`` (about 18-23 for good images).
- ``hpsv2``: Human Preference Score v2 (Wu et al., 2023), ``100 * cos`` with the HPS v2 /
  v2.1 fine-tuned OpenCLIP ViT-H/14 converted to the transformers CLIP format; x100 is the
  scale papers report (HierarchicalPrune: 30.29 for SD3.5 Large Turbo).

ImageReward (a BLIP model with its own reward head) cannot be run with transformers alone:
score with its own package and bring the numbers in with ``hprune import-metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from generation.measurement.scorers.base import Scorer, register_scorer
from hprune.errors import UserError


class ClipSimilarityScorer(Scorer):
    """Base of the CLIP scorers: embeds images and prompts, turns the cosine into a score."""

    name = "clip-similarity"
    higher_is_better = True
    needs_reference = False
    needs_weights = True
    paper = ""

    def __init__(
        self, weights: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32
    ):
        from transformers import CLIPModel, CLIPProcessor

        directory = check_weights_dir(self.name, weights)
        try:
            self.processor = CLIPProcessor.from_pretrained(directory, local_files_only=True)
            self.model = CLIPModel.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{self.name}: cannot load CLIP weights from {directory}: {first}"
            ) from None
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.version = f"{directory.name} ({self.model.config.model_type}, {self.paper})"

    def cosine(self, images: Sequence, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each image with its own text."""
        import torch

        out = []
        for start in range(0, len(images), self.batch_size):
            batch_images = list(images[start : start + self.batch_size])
            batch_texts = list(texts[start : start + self.batch_size])
            inputs = self.processor(
                text=batch_texts,
                images=batch_images,
                return_tensors="pt",
                padding=True,
                truncation=True,
            ).to(self.device)
            with torch.inference_mode():
                image_embeds = _features(
                    self.model.get_image_features(pixel_values=inputs["pixel_values"])
                )
                text_embeds = _features(
                    self.model.get_text_features(
                        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                    )
                )
            image_embeds = torch.nn.functional.normalize(image_embeds.float(), dim=-1)
            text_embeds = torch.nn.functional.normalize(text_embeds.float(), dim=-1)
            out.append((image_embeds * text_embeds).sum(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def from_cosine(self, cosine: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(
        self, images: Sequence, prompts: Sequence, references: Sequence | None = None
    ) -> np.ndarray:
        self.check_batch(images, prompts, references)
        return self.from_cosine(self.cosine(images, [p.text for p in prompts])).astype(float)


class ClipScore(ClipSimilarityScorer):
    name = "clipscore"
    paper = "Hessel et al. 2021"
    scale = "2.5 * max(cos, 0), 0 to 2.5 (CLIPScore, Hessel et al. 2021)"

    def from_cosine(self, cosine: np.ndarray) -> np.ndarray:
        return 2.5 * np.maximum(cosine, 0.0)


class PickScore(ClipSimilarityScorer):
    name = "pickscore"
    paper = "Kirstain et al. 2023"
    scale = "logit_scale.exp() * cos (PickScore, Kirstain et al. 2023); about 18-23 for good images"

    def from_cosine(self, cosine: np.ndarray) -> np.ndarray:
        return float(self.model.logit_scale.exp()) * cosine


class HPSv2(ClipSimilarityScorer):
    name = "hpsv2"
    paper = "Wu et al. 2023"
    scale = "100 * cos (HPS v2 as papers report it; SD3.5 Large Turbo 30.29 in HierarchicalPrune)"

    def from_cosine(self, cosine: np.ndarray) -> np.ndarray:
        return 100.0 * cosine


LEARNED_SCORERS = {cls.name: cls for cls in (ClipScore, PickScore, HPSv2)}
for _name, _cls in LEARNED_SCORERS.items():
    register_scorer(_name, _cls)


def check_weights_dir(name: str, weights: str | Path | None) -> Path:
    """The weights folder, if it exists and holds a model config; a one-line UserError if not."""
    if weights is None or str(weights) == "":
        raise UserError(
            f"scorer {name!r} needs local weights: pass --weights DIR (a transformers CLIPModel "
            "folder); hprune never downloads scorer weights"
        )
    directory = Path(weights).expanduser()
    if not directory.is_dir():
        raise UserError(f"scorer {name!r}: weights folder {directory} does not exist")
    if not (directory / "config.json").is_file():
        raise UserError(
            f"scorer {name!r}: {directory} has no config.json (expected a CLIPModel folder)"
        )
    return directory


def _features(output):
    """transformers 5 returns a model output (projected embeddings as ``pooler_output``), 4 a tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")
