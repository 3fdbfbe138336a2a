"""hprune: the command-line front door and the few helpers every package shares.

The work itself lives in three top-level packages:

- ``generation`` -- everything that touches diffusion models (needs torch);
- ``study``      -- the Flask web application for blinded human trials (no torch);
- ``analysis``   -- the statistics and the report (no torch, no Flask).
"""

__version__ = "0.1.0"
