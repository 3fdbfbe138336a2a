"""Recipes: the whole-model workflows, from a model folder to a new model folder.

- ``prune``: plan, apply, and write a self-describing pruned model;
- ``quantize``: quantise a model's transformer and write it;
- ``distill``: PWP and SGDistill, a pruned student trained against its teacher.

The top of ``generation`` besides the mini world: it may use every layer below.
"""
