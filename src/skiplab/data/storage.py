"""Where data lives, source fingerprints, and the decoded-array cache.

Locations
    data files:  the ``data_dir`` argument, else ``$SKIPLAB_DATA``, else ``~/.cache/skiplab/data``.
    cache:       ``$SKIPLAB_CACHE/datasets``, else ``~/.cache/skiplab/datasets``.

Cache
    Every decoded split is stored once as uint8 images + int64 labels in one safetensors file (no pickle), with the
    class names and normalisation statistics in its metadata.  The file name carries a key: a sha256 over the loader
    version, the dataset name, the decode options and a *fingerprint* of the source.

Fingerprint (fast, documented trade-off)
    file:       size, mtime (ns) and the sha256 of its first and last MiB (the whole file when it is under 2 MiB).
                Reading two MiB instead of the whole file keeps a cache hit in milliseconds; any rewrite changes the
                mtime, and truncation or appending changes the size.  A same-size in-place edit in the middle of a big
                file that also restores the mtime would go unnoticed — checksums against the official release are
                checked when the file is decoded, so that is the only window.
    directory:  sha256 over every file's relative path, size and mtime (ns), in sorted order.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Bump when a decoder changes what it produces, so old cache entries are not reused.
CACHE_FORMAT = 1
_EDGE = 1 << 20  # bytes hashed at each end of a big file


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder searched for dataset files: ``data_dir``, else ``$SKIPLAB_DATA``, else ``~/.cache/skiplab/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("SKIPLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skiplab" / "data"


def cache_root() -> Path:
    """The folder holding decoded datasets: ``$SKIPLAB_CACHE/datasets``, else ``~/.cache/skiplab/datasets``."""
    env = os.environ.get("SKIPLAB_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "skiplab"
    return base / "datasets"


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 22) -> str:
    """Hex digest of a whole file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """A fast identity of a file or folder (see the module docstring for what it does and does not notice)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    st = path.stat()
    h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
    with open(path, "rb") as f:
        if st.st_size <= 2 * _EDGE:
            h.update(f.read())
        else:
            h.update(f.read(_EDGE))
            f.seek(st.st_size - _EDGE)
            h.update(f.read(_EDGE))
    return h.hexdigest()


def cache_key(name: str, source: Path, options: dict[str, Any]) -> str:
    """The cache key of one decoded source: loader version, dataset name, options and the source fingerprint."""
    ident = {"format": CACHE_FORMAT, "name": name, "options": options, "source": fingerprint(source)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class DecodedSplit:
    """One split as decoded from its source, before it becomes an ImageDataset."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,) or (N, H, W)
    notes: list[str] = field(default_factory=list)  # reasons to doubt it is the official release


def cache_path(name: str, split: str, key: str) -> Path:
    return cache_root() / f"{name}-{split}-{key}.safetensors"


def write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> None:
    """Store one split atomically (temp file in the same folder, fsync, rename): a crash never leaves a partial
    file under the final name, and two processes writing the same entry both leave a complete one."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"images": images.contiguous(), "labels": labels.contiguous()}, tmp,
                  metadata={"skiplab": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None:
    """A cached split, or None when there is none (or it cannot be read — then it is simply rebuilt)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["skiplab"])
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
    except Exception:  # a damaged cache entry is not the user's data: rebuild it from the source
        return None
    return images, labels, meta
