"""Diffusers classes for transformers with removed subcomponents, so that a pruned model
reloads with plain ``from_pretrained`` and computes exactly what it computed when saved.

A diffusers config can say how many blocks a model has, but not that a block lost its
feed-forward or its attention. :class:`PrunedSD3Transformer2DModel` and
:class:`PrunedFluxTransformer2DModel` are the diffusers classes with two more config
entries:

- ``removed_subcomponents``: ``[[block, component], ...]``, current block indices;
- ``ablation``: what the removed parts compute, ``identity`` (the reference's pass-through)
  or ``zero`` (``generation.adapters.base``).

Their ``__init__`` builds the diffusers architecture and removes those subcomponents again,
so the stored weights (only what is kept) fit exactly and the model in memory is as small
as the pruned one. Nothing else differs from the diffusers classes.

Loading: ``PrunedSD3Transformer2DModel.from_pretrained(folder)``, or for a pipeline
``DiffusionPipeline.from_pretrained(folder)`` once this module is imported (the pipeline's
``model_index.json`` names it; diffusers resolves a component class from outside its own
libraries only from modules the caller has imported). A model with only whole blocks
removed needs none of this: it is saved as the plain diffusers class. This module's path
is part of the saved format.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence

import diffusers
from diffusers import FluxTransformer2DModel, ModelMixin, SD3Transformer2DModel
from torch import nn

from generation.adapters import DEFAULT_ABLATION, Part, check_ablation, get_adapter
from hprune.errors import UserError

# diffusers' pipeline loader looks up the base class that tells it how to load a component
# (ModelMixin: from_pretrained) in the component's module, so this module must name it.
__all__ = [
    "ModelMixin",
    "PrunedFluxTransformer2DModel",
    "PrunedSD3Transformer2DModel",
]

#: The config entries the pruned classes add to their diffusers base class.
EXTRA_CONFIG = ("removed_subcomponents", "ablation")


def _pruning_init(base: type) -> Callable:
    """An ``__init__`` for a subclass of ``base``: ``base``'s own arguments plus the two entries
    of :data:`EXTRA_CONFIG`, with a signature that says so (diffusers reads a class's config
    keys from the signature of its ``__init__``)."""

    def __init__(
        self,
        *args,
        removed_subcomponents: Iterable[Sequence] = (),
        ablation: str = DEFAULT_ABLATION,
        **kwargs,
    ) -> None:
        base.__init__(self, *args, **kwargs)
        parts = [(int(index), str(component)) for index, component in removed_subcomponents]
        self.register_to_config(
            removed_subcomponents=[list(part) for part in parts], ablation=check_ablation(ablation)
        )
        get_adapter(self, ablation).remove_components(parts)

    signature = inspect.signature(base.__init__)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in (("removed_subcomponents", ()), ("ablation", DEFAULT_ABLATION))
    ]
    __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    return __init__


class PrunedSD3Transformer2DModel(SD3Transformer2DModel):
    """``SD3Transformer2DModel`` with the subcomponents its config names removed."""

    __init__ = _pruning_init(SD3Transformer2DModel)


class PrunedFluxTransformer2DModel(FluxTransformer2DModel):
    """``FluxTransformer2DModel`` with the subcomponents its config names removed."""

    __init__ = _pruning_init(FluxTransformer2DModel)


PRUNED_CLASSES: dict[type, type] = {
    SD3Transformer2DModel: PrunedSD3Transformer2DModel,
    FluxTransformer2DModel: PrunedFluxTransformer2DModel,
}


def diffusers_base(cls: type) -> type:
    """The diffusers transformer class ``cls`` is, or derives from."""
    for base in PRUNED_CLASSES:
        if issubclass(cls, base):
            return base
    raise UserError(f"unsupported transformer class {cls.__name__}")


def saved_class(transformer: nn.Module) -> type:
    """The class ``transformer`` is saved as: the pruned class when subcomponents are removed,
    else its plain diffusers class."""
    base = diffusers_base(type(transformer))
    return PRUNED_CLASSES[base] if get_adapter(transformer).has_removed_components() else base


def saved_config(transformer: nn.Module, cls: type) -> dict:
    """``transformer``'s config for class ``cls``, with the removed subcomponents as they are now."""
    config = {k: v for k, v in transformer.config.items() if k not in EXTRA_CONFIG}
    if cls in PRUNED_CLASSES.values():
        adapter = get_adapter(transformer)
        config["removed_subcomponents"] = [list(part) for part in adapter.removed_parts()]
        config["ablation"] = adapter.ablation
    return config


def transformer_class(name: str) -> type:
    """The class a ``config.json`` names in ``_class_name``: a diffusers class or a pruned one."""
    for cls in PRUNED_CLASSES.values():
        if cls.__name__ == name:
            return cls
    cls = getattr(diffusers, str(name), None)
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
        raise UserError(f"unknown model class {name!r}")
    return cls


def library_entry(cls: type) -> list[str]:
    """The ``[library, class]`` pair ``model_index.json`` lists for a transformer of class ``cls``."""
    library = "diffusers" if cls.__module__.startswith("diffusers") else cls.__module__
    return [library, cls.__name__]


def restore_recorded_removal(transformer: nn.Module, recorded: Sequence[Part]) -> None:
    """Check that ``transformer`` lacks exactly the subcomponents its model record lists.

    A model hprune saved before the pruned classes existed stores its full structure, with
    zero output weights for removed subcomponents (``zero`` semantics) and the list only in
    the record: those parts are removed here, which computes the same.
    """
    adapter = get_adapter(transformer)
    recorded = [(int(i), str(c)) for i, c in recorded]
    if recorded and not adapter.has_removed_components():
        get_adapter(transformer, "zero").remove_components(recorded)
    elif sorted(adapter.removed_parts()) != sorted(recorded):
        raise UserError(
            f"the model's config removes subcomponents {adapter.removed_parts()} but its record "
            f"lists {recorded}; the directory is inconsistent"
        )
