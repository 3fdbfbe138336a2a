"""The file contracts between the three stages, in one torch-free, Flask-free place.

One module per file format, each with its columns (or keys), reader, writer and validation:

- ``prompts``      -- prompt sets (GenEval jsonl, PartiPrompts TSV, HPSv2 JSON, TXT, CSV);
- ``variants``     -- variants.yaml, the models a stimulus set compares;
- ``manifest``     -- stimuli/manifest.csv (+ render.json, prompts.jsonl) and the PNG rules;
- ``metrics``      -- metrics.csv (tidy) + metrics.json;
- ``responses``    -- the responses export (CSV + Parquet + codebook.json);
- ``participants`` -- the participants export, beside the responses.

``generation`` writes manifests and metrics through them, ``study`` reads manifests and writes
exports through them, ``analysis`` reads them all through them. This package imports
nothing heavier than pandas, and nothing from those three packages.
"""
