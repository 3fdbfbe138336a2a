"""The shapes world: procedural 64x64 scenes with exact captions, and mini-GenEval's checker.

``shapes`` draws scenes of circles, squares and triangles and captions them like GenEval's
prompts; ``geneval`` judges whether an image shows what its prompt asks for, by rules. Pure
numpy and PIL, no model and nothing else from ``generation``: the ``mini-geneval`` scorer
(``generation.measurement``) and the mini world (``generation.mini``) both stand on it.
"""
