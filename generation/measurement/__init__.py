"""Measurement: render a model's images, score them, profile its cost, find each part's contribution.

- ``rendering``: matched stimulus sets (same noise for every variant) and single batches;
- ``scorers`` (and ``image_metrics``): automatic image metrics, found by name; ``scoring``
  runs them over a stimuli folder, ``metric_importers`` brings in metrics computed elsewhere;
- ``profiling``: peak memory and latency of a step and of an image;
- ``contrib``: contribution analysis, and reading its ``contrib.json``.

Stands on the model store; the planners above read what it measures.
"""
