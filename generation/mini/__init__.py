"""The mini world: a small, real text-to-image model and its benchmark, shipped in the repository.

- ``shapes``: procedurally drawn 64x64 scenes of circles, squares and triangles with exact
  captions phrased like GenEval's six task categories.
- ``geneval``: mini-GenEval, a rule-based checker of whether an image satisfies its prompt.
- ``teacher`` and ``train``: a genuine ``StableDiffusion3Pipeline`` built small and trained
  on the shapes with flow matching, on a CPU, from a seed.
- ``paper``: HierarchicalPrune run end to end on the mini teacher.
"""
