"""Transforms: what hprune does to a transformer in memory, and what the result weighs.

- ``plan``: a pruning plan (parts to remove, parameter arithmetic, the explicit ``--remove`` plan);
- ``surgery``: applying a plan (blocks leave the lists, subcomponents become stand-ins);
- ``pruned_classes``: the diffusers classes a model with removed subcomponents is saved as,
  whose config names those parts, so that plain ``from_pretrained`` rebuilds it;
- ``quantization``: every ``nn.Linear`` replaced by a bitsandbytes layer, and the tensors it stores;
- ``footprint``: parameters and stored bytes of a model, quantised or not, real or on ``meta``.

Above the adapters, below the model store: nothing here reads or writes a model folder.
"""
