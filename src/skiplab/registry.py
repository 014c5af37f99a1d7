"""One model registry.

An entrypoint is a function that builds a model; its ``__name__`` is the registry key.  A model's identity
is its name plus the keyword arguments it was built with: :func:`create_model` records both on the model
(``model.model_name``, ``model.model_kwargs``) so checkpoints and results can store and rebuild it.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
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


TWIN_WORDS = ("plain", "highway", "residual", "resnet")  # how people name a twin: plain_x, x_plain, x_residual, ...


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    # "mlp_residual", "residual_mlp", "unet_plain": the words of a twin in another order.  Match the base name
    # with the twin word removed against the registry, then offer that base and its registered twins.
    words = [w for w in name.lower().replace("-", "_").split("_") if w]
    base = "_".join(w for w in words if w not in TWIN_WORDS)
    if base and base != name:
        twins = [t for cand in [base, *difflib.get_close_matches(base, list(_REGISTRY), n=2, cutoff=0.75)]
                 for t in (cand, f"plain_{cand}", f"highway_{cand}") if t in _REGISTRY]
        close = list(dict.fromkeys(twins + close))  # the twins first: they are what was meant
    hint = f" Did you mean: {', '.join(close[:6])}?" if close else ""
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


class ModelArgumentError(TypeError, ValueError):
    """A keyword argument a model does not take (or that its entrypoint fixes, or of the wrong type); the
    message names the call, the argument and what is accepted.  A ``ValueError`` too, so the CLI treats it as
    a user error (exit status 2, no traceback)."""


def _argument_hint(e: TypeError, tb_frame: Any, fn: Callable[..., Any]) -> str:
    """What to do about a call that bound its arguments wrongly: the accepted keywords of the callee that
    refused one (looked up in the calling frame, so nothing is built), or that the entrypoint fixes it."""
    import inspect

    msg = str(e)
    fixed = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", msg)
    if fixed:
        return f"this model fixes {fixed[1]} (leave it out)"
    callee = re.match(r"^([\w.]+)\(\) got an unexpected keyword argument", msg)
    if not callee or tb_frame is None:
        return ""
    parts = callee[1].split(".")
    obj: Any = fn if parts == [fn.__name__] else None  # the entrypoint itself refused it
    for i in range(len(parts)):  # "CifarResNet.__init__", or "skiplab.models.densenet.DenseNet"
        if obj is None and parts[i] in tb_frame.f_globals:
            obj = tb_frame.f_globals[parts[i]]
            for attr in parts[i + 1:]:
                obj = getattr(obj, attr, None)
            break
    try:
        params = inspect.signature(obj).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    # Parameters without a default are the ones the entrypoint itself supplies (a CIFAR ResNet's depth).
    names = [p.name for p in params if p.name != "self" and p.default is not p.empty
             and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return f"expected one of {', '.join(names)}" if names else ""


def _innermost_frame(e: BaseException) -> Any:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame if tb is not None else None


_PACKAGE_DIR = __file__.rsplit("registry.py", 1)[0]


def create_model(name: str, *, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``create_model("resnet20", num_classes=100)``.

    ``weights`` is a path to a safetensors or PyTorch state-dict file (our own, or torchvision's format for the
    ImageNet ResNets and DenseNets), or a Keras HDF5 file for the Keras layouts (``resnet50_keras``,
    ``resnet50v2``, the DenseNets); it is loaded without unpickling arbitrary objects.  An argument the model
    does not take raises :class:`ModelArgumentError` naming it and listing those it does.
    """
    entry = get_entry(name)
    try:
        model = entry.fn(**kwargs)
    except TypeError as e:
        # A call with a wrong keyword fails in the *calling* frame, so the innermost frame of an argument error
        # is skiplab's own; a TypeError from deep inside torch is another problem and propagates unchanged.
        frame = _innermost_frame(e)
        if isinstance(e, ModelArgumentError) or frame is None or not frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            raise
        hint = _argument_hint(e, frame, entry.fn)
        call = ", ".join([repr(name)] + [f"{k}={v!r}" for k, v in kwargs.items()])
        raise ModelArgumentError(f"create_model({call}): {e}" + (f"; {hint}" if hint else "")) from None
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    if weights is not None:
        from skiplab.weights import load_weights

        load_weights(model, weights)
    return model
