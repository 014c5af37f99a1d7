"""What every experiment shares: claims checked from numbers, tables, the registry entry, and (de)serialisation.

An experiment module defines a ``Config`` dataclass (defaults = the full setting, ``Config.quick()`` = the
demo setting), a ``Result`` dataclass and ``run(cfg, progress=None) -> Result``: deterministic from the seeds
in ``cfg``, keeps per-seed values, computes its claims from its own numbers, plots nothing, writes nothing.
It registers an :class:`ExperimentSpec`; the report and the CLI find it there.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

Progress = Callable[[int, int, str], None]  # (done, total, what is running now)


@dataclass
class Claim:
    """A published claim, tested: ``held`` and ``evidence`` are computed from the run's numbers."""

    key: str
    statement: str  # the hypothesis, as the paper states it
    held: bool
    evidence: str  # the numbers the verdict rests on
    test: str = ""  # how the verdict is computed (thresholds), so a reader can disagree with it


@dataclass
class Table:
    """A table of numbers for the report: ``rows`` of cells (str or float), one per ``columns`` entry."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass(frozen=True)
class ExperimentSpec:
    """A registered experiment: what it asks, what the paper claims, and how to run it."""

    name: str
    title: str
    question: str
    claim: str
    citation: str
    config_cls: type
    result_cls: type
    run: Callable[..., Any]
    order: int = 100  # position in the report

    def config(self, quick: bool = False, setting: str | None = None, **overrides: Any) -> Any:
        """The Config of ``setting`` (see :data:`SETTINGS`; ``quick=True`` is ``setting="quick"``), with
        ``overrides``.  An experiment without a real-data variant runs its full setting under ``"cifar"``."""
        setting = resolve_setting(quick, setting)
        if setting == "quick":
            cfg = self.config_cls.quick()
        elif setting == "cifar" and hasattr(self.config_cls, "cifar"):
            cfg = self.config_cls.cifar()
        else:
            cfg = self.config_cls()
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    def has_setting(self, setting: str) -> bool:
        """Whether the experiment defines ``setting`` itself (``cifar`` falls back to ``full`` otherwise)."""
        return setting == "full" or hasattr(self.config_cls, setting)


# The settings every experiment runs at: "quick" - tiny nets on generated data, seconds (the demo); "cifar" - the
# real-data setting: real CIFAR-10 (or real MNIST digits), full paper widths, budgets that let all of them finish
# in about 3 hours on a 2-core CPU, trained nets cached on disk and shared between experiments; "full" - the
# papers' own budgets (a GPU's work).
SETTINGS = ("quick", "cifar", "full")


def resolve_setting(quick: bool = False, setting: str | None = None) -> str:
    if setting is None:
        return "quick" if quick else "full"
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}; got {setting!r}")
    if quick and setting != "quick":
        raise ValueError(f"quick=True contradicts setting={setting!r}; pass one of them")
    return setting


_EXPERIMENTS: dict[str, ExperimentSpec] = {}


def register_experiment(spec: ExperimentSpec) -> ExperimentSpec:
    if spec.name in _EXPERIMENTS:
        raise ValueError(f"experiment {spec.name!r} is already registered")
    _EXPERIMENTS[spec.name] = spec
    return spec


def experiments() -> list[ExperimentSpec]:
    """Registered experiments in report order."""
    return sorted(_EXPERIMENTS.values(), key=lambda s: (s.order, s.name))


def get_experiment(name: str) -> ExperimentSpec:
    if name not in _EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(s.name for s in experiments())}")
    return _EXPERIMENTS[name]


def report_progress(progress: Progress | None, done: int, total: int, what: str) -> None:
    if progress is not None:
        progress(done, total, what)


# ---------------------------------------------------------------- dataclasses from JSON (and from the CLI)

def from_dict(cls: Any, data: Any) -> Any:
    """Rebuild a value of type ``cls`` (a dataclass, list/tuple/dict of them, or a scalar) from JSON data."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if data is None:
        return float("nan") if cls is float else None  # to_jsonable writes NaN/inf as null
    if cls is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        for arg in (a for a in args if a is not type(None)):
            try:
                return from_dict(arg, data)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"cannot read {data!r} as {cls}")
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise TypeError(f"expected an object for {cls.__name__}; got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: from_dict(hints[k], v) for k, v in data.items() if k in known})
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(from_dict(a, v) for a, v in zip(args, data))
        item = args[0] if args else Any
        values = [from_dict(item, v) for v in data]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        return {k: from_dict(args[1] if args else Any, v) for k, v in data.items()}
    if cls is float:
        return float(data)
    if cls in (int, str, bool):
        if not isinstance(data, cls) or (cls is int and isinstance(data, bool)):
            raise TypeError(f"expected {cls.__name__}; got {data!r}")
        return data
    return data


def parse_override(config_cls: type, text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, typed value)`` for a scalar or tuple-of-scalars field of ``config_cls``.
    Tuples are comma-separated (``depths=10,20``)."""
    if "=" not in text:
        raise ValueError(f"--set takes KEY=VALUE; got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    hints = typing.get_type_hints(config_cls)
    if key not in hints:
        raise ValueError(f"{config_cls.__module__.rsplit('.', 1)[-1]} has no setting {key!r}; "
                         f"settings: {', '.join(f.name for f in dataclasses.fields(config_cls))}")
    hint = hints[key]

    def scalar(t: Any, s: str) -> Any:
        if t is bool:
            if s.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{key} takes true/false; got {s!r}")
            return s.lower() in ("true", "1", "yes")
        if t in (int, float, str):
            try:
                return t(s)
            except ValueError:
                kind = {int: "an integer", float: "a number"}[t]
                raise ValueError(f"{key} takes {kind}; got {s!r}") from None
        raise ValueError(f"{key} cannot be set from the command line (type {t})")

    if typing.get_origin(hint) in (tuple, list):
        item = typing.get_args(hint)[0]
        values = [scalar(item, s) for s in raw.split(",") if s.strip()]
        return key, tuple(values) if typing.get_origin(hint) is tuple else values
    return key, scalar(hint, raw)


def seed_list(n_seeds: int, first: int = 0) -> list[int]:
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be a positive integer; got {n_seeds!r}")
    return list(range(first, first + n_seeds))


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore.  The experiments here are many tiny ops (a 64x64 matmul,
    a BatchNorm over 64 rows), for which extra threads only add synchronisation: on a busy 2-core machine one
    thread used ~8x less CPU time than two in our measurement."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
