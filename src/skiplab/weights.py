"""Save and load model weights without ever unpickling untrusted objects.

* :func:`save_weights` writes safetensors (``.safetensors``, the default) with the model's identity in the
  metadata (``model_name``, ``model_kwargs`` as JSON) and a SHA-256 over tensors and metadata (``sha256``,
  verified on read: a bit flip or partial copy is an error, not silently wrong weights), or a plain tensor
  state dict for ``.pth``/``.pt``/``.bin``.  A skiplab training checkpoint also reads as a weights file (its
  model tensors, checksum verified).
* :func:`load_weights` reads safetensors, or PyTorch files through ``torch.load(weights_only=True)`` only —
  a pickle that tries to build anything but tensors and containers is refused.  It unwraps training
  checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) and DDP / ``torch.compile`` prefixes, and lets a
  model convert foreign key names through its ``remap_state_dict(state_dict)`` hook (torchvision's ResNet and
  DenseNet checkpoints, timm's ResNet-D; Keras Applications' HDF5 files, read by :mod:`skiplab.keras_weights`
  with h5py).  Mismatches raise a ValueError naming the missing and unexpected keys and the shapes
  that differ.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as safetensors_load_file
from safetensors.torch import save as safetensors_save_bytes

from skiplab.io import atomic_write_bytes
from skiplab.keras_weights import KERAS_MODELS, is_hdf5, read_keras_h5

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # training checkpoints nest the weights under these
PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile wrappers
SHOW = 5  # keys listed per kind of mismatch
CHECKSUM_KEY = "sha256"  # metadata entry of the files save_state_dict writes
CHECKPOINT_FORMAT = "skiplab-checkpoint-v1"  # skiplab.train.checkpoint.FORMAT


@dataclass
class LoadResult:
    """What :func:`load_weights` did: keys it could not fill or use (empty when ``strict``) and the file's metadata."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------- saving
def model_metadata(model: nn.Module) -> dict[str, str]:
    """``{model_name, model_kwargs (JSON)}`` for a model built by :func:`skiplab.create_model`, else ``{}``."""
    meta: dict[str, str] = {}
    if getattr(model, "model_name", None):
        meta["model_name"] = str(model.model_name)
        meta["model_kwargs"] = json.dumps(getattr(model, "model_kwargs", {}) or {}, sort_keys=True, default=repr)
    return meta


def weights_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over the metadata (but its own ``sha256`` entry) and every tensor's key, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path, *,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to ``path`` atomically: safetensors unless the suffix is a PyTorch one (.pth/.pt/.bin/.ckpt).
    ``metadata`` (str -> str) is kept in safetensors files only, with the checksum :func:`read_weights` verifies."""
    path = Path(path)
    # Own, contiguous CPU copies: safetensors refuses tensors that share storage, and views would save their base.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    if path.suffix in TORCH_SUFFIXES:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        data = buffer.getvalue()
    else:
        meta = dict(metadata or {})
        meta[CHECKSUM_KEY] = weights_digest(tensors, meta)
        data = safetensors_save_bytes(tensors, metadata=meta)
    return atomic_write_bytes(path, data)


def save_weights(model: nn.Module, path: str | Path, *, format: str = "skiplab") -> Path:
    """Save ``model``'s state dict to ``path`` (safetensors unless the suffix is .pth/.pt/.bin/.ckpt).

    ``format="torchvision"`` writes torchvision's key names instead, for models with a
    ``to_torchvision_state_dict()`` method (the ImageNet ResNets)."""
    if format == "skiplab":
        state = model.state_dict()
    elif format == "torchvision":
        if not hasattr(model, "to_torchvision_state_dict"):
            raise ValueError(f"{type(model).__name__} has no torchvision counterpart (no to_torchvision_state_dict())")
        state = model.to_torchvision_state_dict()
    else:
        raise ValueError(f"format must be 'skiplab' or 'torchvision'; got {format!r}")
    return save_state_dict(state, path, metadata={**model_metadata(model), "format": "pt", "key_format": format})


# ------------------------------------------------------------------------------------------------------ reading
def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) > 8 and head[8:9] == b"{"


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The flat ``{key: tensor}`` state dict stored in ``path`` and its metadata, without loading a model.

    PyTorch files go through ``torch.load(map_location="cpu", weights_only=True)`` only; wrappers and
    ``module.`` prefixes are removed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"weights path {path} is a folder; expected a .safetensors or .pth file "
                                "(a training run folder is read with `skiplab eval --run` / load_checkpoint)")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with path.open("rb") as f:
        head = f.read(16)
    if is_hdf5(head) or path.suffix in (".h5", ".hdf5"):
        return read_keras_h5(path), {"format": "keras-h5"}  # arrays in Keras' layouts; models remap them
    if path.suffix == ".keras":
        raise ValueError(f"{path} is a Keras 3 archive: its weights name layers by class and position, not by name. "
                         "In Keras, save the model as HDF5 instead (model.save('model.h5')) and load that")
    # The safetensors signature decides first: its header length is arbitrary bytes, so a header of 0x..80 or
    # 0x..4b50 bytes starts with a pickle's or a zip's magic byte (a checkpoint whose metadata had such a length
    # was once read as a PyTorch file).
    is_torch = path.suffix in TORCH_SUFFIXES or (not _looks_like_safetensors(head)
                                                 and (head[:2] == b"PK" or head[:1] == b"\x80"))
    if not is_torch and path.suffix != ".safetensors" and not _looks_like_safetensors(head):
        raise ValueError(f"{path}: not a safetensors or PyTorch weights file (unknown suffix {path.suffix!r})")
    if is_torch:
        obj, metadata = _read_torch(path), {}
    else:
        try:
            obj = safetensors_load_file(path, device="cpu")
            with safe_open(path, framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except (SafetensorError, ValueError) as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
        if metadata.get("format") == CHECKPOINT_FORMAT:
            return _checkpoint_weights(path)
        if CHECKSUM_KEY in metadata and weights_digest(obj, metadata) != metadata[CHECKSUM_KEY]:
            raise ValueError(f"{path}: failed its checksum — the file was damaged or modified after it was written "
                             "(bit flip, partial copy); use another copy")
    state, wrapper_meta = _unwrap(obj, path)
    return state, {**wrapper_meta, **metadata}


def _checkpoint_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model tensors and identity of a skiplab training checkpoint (read and verified by its own loader)."""
    from skiplab.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    return dict(ckpt.model_state), {"model_name": ckpt.model_name,
                                    "model_kwargs": json.dumps(ckpt.model_kwargs, sort_keys=True)}


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long advice on bypassing the check; keep only the line naming the culprit.
        detail = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler error" in ln), type(e).__name__)
        raise ValueError(
            f"{path}: refusing to load — the file holds Python objects other than tensors, and skiplab never "
            f"unpickles untrusted files ({detail.split('. Please use')[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, SafetensorError) as e:  # torch.load reads *.safetensors itself
        raise ValueError(f"{path}: not a readable PyTorch file ({e})") from None


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    meta: dict[str, str] = {}
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj.get("model_name"), str):
            meta["model_name"] = obj["model_name"]
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors); found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{path}: not a state dict — {len(bad)} entries are not tensors (e.g. {bad[:SHOW]}); "
            f"checkpoints nesting the weights under one of {list(WRAPPER_KEYS)} are unwrapped automatically"
        )
    state = {str(k): v for k, v in obj.items()}
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


# ------------------------------------------------------------------------------------------------------ loading
def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadResult:
    """Load ``path`` (safetensors, or a PyTorch state dict / checkpoint) into ``model`` in place.

    If the file's keys differ from the model's and the model defines ``remap_state_dict(state_dict)``, that
    hook converts them first (e.g. torchvision -> skiplab).  Raises ValueError for shapes that differ, and with
    ``strict`` (default) for missing or unexpected keys; the message names them, and the model the file was
    saved from when that differs from ``model``'s name.
    """
    path = Path(path)
    state, metadata = read_weights(path)
    ours = model.state_dict()
    if set(state) != set(ours) and callable(getattr(model, "remap_state_dict", None)):
        state = model.remap_state_dict(state)

    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    mismatched = [(k, tuple(v.shape), tuple(state[k].shape)) for k, v in ours.items()  # in the model's order
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    our_name = getattr(model, "model_name", None) or type(model).__name__
    their_name = metadata.get("model_name")
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"cannot load {path} into {our_name}:"]
        if their_name and their_name != our_name:
            kwargs = metadata.get("model_kwargs", "")
            lines.append(f"  the file was saved from model {their_name!r}"
                         + (f" with kwargs {kwargs}" if kwargs not in ("", "{}") else "") + f", not {our_name!r}")
        if missing:
            lines.append(f"  {len(missing)} missing keys (in the model, not in the file): {_listing(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys (in the file, not in the model): {_listing(unexpected)}")
        if mismatched:
            shown = "; ".join(f"{k}: model {list(a)} vs file {list(b)}" for k, a, b in mismatched[:SHOW])
            more = f"; ... ({len(mismatched) - SHOW} more)" if len(mismatched) > SHOW else ""
            lines.append(f"  {len(mismatched)} shape mismatches: {shown}{more}")
        if metadata.get("format") == "keras-h5":
            lines.append(f"  (a Keras file: it loads into the Keras layouts — {KERAS_MODELS})")
        raise ValueError("\n".join(lines))
    if their_name and getattr(model, "model_name", None) and their_name != model.model_name:
        # Same keys and shapes (e.g. a plain twin and its residual net), but a different model: say so.
        warnings.warn(f"{path} was saved from model {their_name!r}; loading it into {model.model_name!r}",
                      stacklevel=2)
    model.load_state_dict(state, strict=strict)
    return LoadResult(missing_keys=missing, unexpected_keys=unexpected, metadata=metadata)
