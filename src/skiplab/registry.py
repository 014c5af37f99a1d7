"""One model registry.

An entrypoint is a function that builds a model; its ``__name__`` is the registry key.  A model's identity
is its name plus the keyword arguments it was built with: :func:`create_model` records both on the model
(``model.model_name``, ``model.model_kwargs``) so checkpoints and results can store and rebuild it.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch.nn as nn

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one entrypoint."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    input_size: tuple[int, ...]  # default input (C, H, W) or (features,) — one sample, no batch dim
    skip: str  # "residual", "none", "highway", "dense", ... of the default build
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    fn: F | None = None,
    *,
    family: str = "",
    input_size: tuple[int, ...] = (3, 224, 224),
    skip: str = "residual",
    paper: str = "",
) -> Any:
    """Register a model entrypoint under its function name.

    Use bare (``@register_model``) or with metadata (``@register_model(family="resnet", input_size=(3, 32, 32))``).
    Registering a name twice raises: one name, one model.
    """

    def wrap(f: F) -> F:
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
        _REGISTRY[name] = ModelEntry(name, f, family or f.__module__.rsplit(".", 1)[-1], tuple(input_size), skip, paper)
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_models_imported() -> None:
    # Importing the models package runs every @register_model decorator.
    import skiplab.models  # noqa: F401


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``family`` if given)."""
    _ensure_models_imported()
    return sorted(
        n for n, e in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
    )


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}.{hint} `skiplab models` lists all {len(_REGISTRY)} models."


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises ``KeyError`` listing close matches."""
    _ensure_models_imported()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UnknownModelError(unknown_model_message(str(name)))
    return _REGISTRY[name]


class UnknownModelError(KeyError, ValueError):
    """Raised for a model name that is not registered; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def create_model(name: str, *, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("resnet20", num_classes=100)``.

    ``weights`` is a path to a safetensors or PyTorch state-dict file (our own, or torchvision's format for the
    ImageNet ResNets and DenseNets); it is loaded without unpickling arbitrary objects.
    """
    entry = get_entry(name)
    model = entry.fn(**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    if weights is not None:
        from skiplab.weights import load_weights

        load_weights(model, weights)
    return model
