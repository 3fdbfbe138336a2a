"""The mini world: a small, real text-to-image model and its benchmark, shipped in the repository.

- ``generation.shapes_world.shapes``: procedurally drawn 64x64 scenes of circles, squares and
  triangles with exact captions phrased like GenEval's six task categories, and
  ``generation.shapes_world.geneval``, mini-GenEval, a rule-based checker of whether an image
  satisfies its prompt. They use no model, so they sit at the bottom of ``generation``,
  where the ``mini-geneval`` scorer can use them too.
- ``teacher`` and ``train``: a genuine ``StableDiffusion3Pipeline`` built small and trained
  on the shapes with flow matching, on a CPU, from a seed.
- ``benchmark``: mini-GenEval of a model or of a rendered stimuli folder.
- ``paper``: HierarchicalPrune run end to end on the mini teacher.

The mini world sits on top of ``generation``: it uses every layer below it.
"""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
# The shipped held-out prompt set: ``write_evaluation_metadata(EVALUATION_PROMPTS, seed=0)``.
EVALUATION_PROMPTS = ASSETS / "evaluation_metadata.jsonl"
