"""Rendering: matched stimulus sets, and the single batches contribution analysis renders.

- ``batches``: images of (prompt, seed) items from one variant's pipeline, the noise drawn
  from each seed on the CPU, so every variant draws an item from the same noise;
- ``folder``: the stimuli folder (manifest, journals, render.json, images) and resuming;
- ``stimuli``: ``hprune render``, every missing image of a request, sharded over processes.
"""
