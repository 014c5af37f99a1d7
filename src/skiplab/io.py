"""Persistence helpers shared by training, experiments and reports: atomic writes, JSON, run manifests.

Every file skiplab writes goes through :func:`atomic_write_bytes` (temp file in the same folder, fsync, rename),
so a crash mid-write never leaves a half-written file under the final name.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results and reports are meant to be read by others: the mode a
        # plain open() would give, i.e. 0666 less the umask
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples, numpy/torch scalars and arrays -> plain JSON types (NaN/Inf -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return to_jsonable(obj.tolist())
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def git_hash() -> str | None:
    """The commit of the skiplab checkout, if it is a git checkout (None for an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def build_manifest(*, kind: str, config: Any, seeds: list[int] | None = None, model_name: str | None = None,
                   model_kwargs: dict[str, Any] | None = None, device: str | None = None,
                   wall_time_s: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run folder needs to be understood and rebuilt: resolved config, model identity, versions,
    seeds, device, wall time, git commit."""
    import numpy
    import torch

    import skiplab

    return to_jsonable({
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "model": {"name": model_name, "kwargs": model_kwargs or {}} if model_name else None,
        "seeds": seeds or [],
        "device": device,
        "wall_time_s": wall_time_s,
        "versions": {
            "skiplab": skiplab.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
        },
        "git": git_hash(),
        "command": sys.argv,
        **(extra or {}),
    })
