"""Training checkpoints: one safetensors file, written atomically, with a checksum verified on load.

Layout of a checkpoint file (nothing in it is ever unpickled):

* tensors ``model/<state-dict key>``: the model's weights and buffers;
* tensors ``state/<i>``: every tensor of the training state (optimizer buffers, RNG states, the data
  loader's position, metric accumulators);
* metadata ``skiplab``: JSON with the model name and kwargs, step, epoch, config and the training state's
  structure, where each tensor appears as ``{"__tensor__": "state/<i>"}``;
* metadata ``checksum``: SHA-256 over that JSON and every tensor's key, dtype, shape and bytes.

A checkpoint is a single file so one ``os.replace`` publishes it: a crash at any moment leaves either the
previous checkpoint or the new one under the final name, never a mix or a partial file.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn

from skiplab.train.faults import fault_point

FORMAT = "skiplab-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, or of another model."""


@dataclass
class Checkpoint:
    path: Path
    model_state: dict[str, torch.Tensor]
    meta: dict[str, Any]  # model_name, model_kwargs, step, epoch, config, ...
    state: dict[str, Any]  # the training state (optimizer, rng, loader, ...), tensors restored

    @property
    def model_name(self) -> str:
        return self.meta["model_name"]

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return self.meta["model_kwargs"]


# ---------------------------------------------------------------------------------------------- packing
def _pack(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """Nested python state -> JSON-able structure; tensors and arrays move into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"state/{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"state/{len(tensors)}"
        # raw bytes + dtype/shape: safetensors has no uint32 etc. for every numpy dtype
        tensors[key] = torch.from_numpy(np.frombuffer(np.ascontiguousarray(obj).tobytes(), dtype=np.uint8).copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _pack(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__items__": [[_pack(k, tensors, where), _pack(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {where} in a checkpoint "
                    "(only tensors, arrays, dicts, lists, tuples, numbers and strings)")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            raw = tensors[obj["__ndarray__"]].numpy().tobytes()
            return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        if "__tuple__" in obj:
            return tuple(_unpack(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["__items__"]}
        return {k: _unpack(v, tensors) for k, v in obj.items()}
    return obj


def _checksum(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode("utf-8"))
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- write
def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename (like skiplab.io.atomic_write_bytes), with a fault
    point half-way through the write so tests can kill the process inside it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            fault_point("ckpt_write")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fault_point("ckpt_done")


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files a killed process left behind (they never carry a final name)."""
    for p in folder.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, model: nn.Module, *, model_name: str, model_kwargs: dict[str, Any],
                    step: int, epoch: int, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically.  ``state`` may nest dicts/lists/tuples of tensors, arrays, numbers
    and strings (what optimizers, RNGs and loaders return from ``state_dict()``/``get_state()``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu", copy=True).contiguous()
    packed = _pack(state, tensors, "state")
    meta = {"model_name": model_name, "model_kwargs": model_kwargs, "step": step, "epoch": epoch,
            "config": config, "state": packed}
    meta_json = json.dumps(meta, sort_keys=True)
    data = safetensors.torch.save(tensors, metadata={
        "format": FORMAT, "skiplab": meta_json, "checksum": _checksum(meta_json, tensors)})
    _atomic_write(path, data)
    return path


# ---------------------------------------------------------------------------------------------- read
def _read_header(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated: {len(data)} bytes")
    if len(data) > 8 and data[8:9] != b"{":  # safetensors: 8-byte header length, then a JSON object
        kind = {b"PK": "a zip archive (a torch.save file?)", b"\x80": "a pickle"}.get(
            data[:2] if data[:2] == b"PK" else data[:1], "some other file")
        raise CheckpointError(f"{path} is not a skiplab training checkpoint: it is {kind}, not safetensors; "
                              "for a weights file use --weights / load_weights")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"checkpoint {path} is truncated: header says {n} bytes, file has {len(data)}")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: its header is not a JSON object")
    return header


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint.  Raises :class:`CheckpointError` saying what is wrong: missing file,
    not a skiplab checkpoint, truncated, checksum mismatch (bit flip, edit)."""
    path = Path(path)
    if path.is_dir():  # a run folder, or its checkpoints folder
        sub = path / "checkpoints"
        path = (sub if sub.is_dir() else path) / "latest.safetensors"
    if not path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        hint = ""
        if (run / "manifest.json").is_file():  # a run that died before its first checkpoint
            hint = (f"; the run in {run} stopped before its first epoch ended, so there is nothing to resume: "
                    f"start it again with --overwrite")
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    data = path.read_bytes()
    metadata = _read_header(data, path).get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a skiplab training checkpoint (format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r}); for a plain weights file use --weights")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error type for truncated/garbled data
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {e}") from None
    meta_json = metadata.get("skiplab", "")
    if _checksum(meta_json, tensors) != metadata.get("checksum"):
        raise CheckpointError(f"checkpoint {path} failed its checksum: the file was damaged or modified after "
                              "it was written (bit flip, partial copy); use another checkpoint")
    meta = json.loads(meta_json)
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    state = _unpack(meta.pop("state"), tensors)
    return Checkpoint(path, model_state, meta, state)


def load_model_state(model: nn.Module, ckpt: Checkpoint, *, model_name: str | None = None,
                     model_kwargs: dict[str, Any] | None = None) -> None:
    """Load a checkpoint's weights into ``model``; a checkpoint of another model or with tensors of the
    wrong shape raises :class:`CheckpointError` naming the difference."""
    name = model_name if model_name is not None else getattr(model, "model_name", None)
    kwargs = model_kwargs if model_kwargs is not None else getattr(model, "model_kwargs", None)
    if name is not None and name != ckpt.model_name:
        raise CheckpointError(f"checkpoint {ckpt.path} is of model {ckpt.model_name!r}, not {name!r}")
    if kwargs is not None and json.loads(json.dumps(kwargs)) != ckpt.model_kwargs:
        raise CheckpointError(f"checkpoint {ckpt.path} is of {ckpt.model_name}({ckpt.model_kwargs}), "
                              f"not {name}({kwargs})")
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.model_state))
    extra = sorted(set(ckpt.model_state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in ckpt.model_state.items() if k in own and v.shape != own[k].shape]
    if missing or extra or shapes:
        parts = ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {extra[:5]}"] if extra else []) \
            + ([f"wrong shape {shapes[:5]}"] if shapes else [])
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(ckpt.model_state)
