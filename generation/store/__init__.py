"""The model store: model folders and hub ids in, pipelines and transformers out, and back.

- ``loading``: locate a pipeline or transformer folder (or download a hub id) and load it,
  applying what its model record says (removed subcomponents, quantisation);
- ``fingerprints``: the hash of a model folder that every later stage records;
- ``saving``: write a transformer that plain ``from_pretrained`` reloads, link the rest;
- ``quantized``: a quantised transformer on disk;
- ``architectures``: a full-size transformer built from its config, without weights;
- ``toy_models``, ``tokenizers``: tiny complete pipelines built offline.

Stands on the transforms and the adapters; knows nothing of rendering or measuring.
"""
