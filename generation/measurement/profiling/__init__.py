"""What a diffusion model costs: weight bytes, parameters, peak memory and latency.

Each measurement is defined so that it means the same on every device:

- stored bytes and parameters: ``generation.transforms.footprint`` (they need no run);
- peak memory, the high-water mark of the bytes of live torch tensors while one denoising
  step or a whole image runs (CUDA's allocator counters; on the CPU the allocation events
  of torch's profiler): ``memory``;
- latency, the median wall time over repeated runs after warm-up runs: ``timing``;
- a step's and an image's figures, through a pipeline or on a bare transformer: ``profiles``;
- ``hprune profile`` and its ``profile.json``: ``command``.
"""
