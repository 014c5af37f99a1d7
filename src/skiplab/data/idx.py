"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) in the IDX format, gzipped or raw.

IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each dimension as a
big-endian int32, then the data.  Images are ``idx3`` (magic 0x00000803), labels ``idx1`` (0x00000801).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from skiplab.data.download import OFFICIAL, verify_official
from skiplab.data.errors import CorruptDataError, check_official_count
from skiplab.data.storage import DecodedSplit

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
# split -> (images stem, labels stem, official count); files are "<stem>" or "<stem>.gz" (also "t10k-images.idx3-ubyte")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``: gzipped or raw, with the usual '-' or '.' before 'idx'."""
    for name in (f"{stem}.gz", stem, f"{stem.replace('-idx', '.idx')}.gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path, dataset: str | None = None, *, strict: bool = False,
             notes: list[str] | None = None) -> np.ndarray:
    """One IDX file as a uint8 array, with the magic number, dimensions and data length checked (and, for gzip,
    the CRC-32 of the decompressed data).  A file named like an official one of ``dataset`` but not
    byte-identical to it adds a note to ``notes`` (``strict``: refused; see :func:`verify_official`)."""
    if dataset is not None and path.name in OFFICIAL.get(dataset, {}):
        note = verify_official(path, OFFICIAL[dataset][path.name], strict=strict)
        if note and notes is not None:
            notes.append(note)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CorruptDataError(f"{path}: damaged or truncated gzip file ({type(e).__name__}: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CorruptDataError(f"{path}: bad IDX magic number {raw[:4].hex() or '(empty)'}; not an IDX file")
    if raw[2] != 0x08:
        raise CorruptDataError(f"{path}: IDX type code 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise CorruptDataError(f"{path}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise CorruptDataError(f"{path}: IDX header says dimensions {dims} ({expected} bytes) but the file has "
                               f"{len(raw)} bytes; truncated or damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_splits(folder: Path, dataset: str, *, strict: bool = False) -> dict[str, DecodedSplit]:
    """Every split whose two files are in ``folder``; images come back as (N, 1, 28, 28)."""
    out: dict[str, DecodedSplit] = {}
    for split, (img_stem, lbl_stem, official) in IDX_FILES.items():
        img_path, lbl_path = find_idx_file(folder, img_stem), find_idx_file(folder, lbl_stem)
        if img_path is None or lbl_path is None:
            continue
        notes: list[str] = []
        images = read_idx(img_path, dataset, strict=strict, notes=notes)
        labels = read_idx(lbl_path, dataset, strict=strict, notes=notes)
        if images.ndim != 3:
            raise CorruptDataError(f"{img_path}: expected an idx3 image file (N, H, W), got dimensions {images.shape}")
        if labels.ndim != 1:
            raise CorruptDataError(f"{lbl_path}: expected an idx1 label file (N,), got dimensions {labels.shape}")
        if len(images) != len(labels):
            raise CorruptDataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
        if len(labels) and labels.max() >= 10:
            raise CorruptDataError(f"{lbl_path}: labels must lie in [0, 10), found {labels.max()}")
        note = check_official_count(str(img_path), len(images), official, strict=strict)
        out[split] = DecodedSplit(images[:, None].copy(), labels.astype(np.int64), notes + ([note] if note else []))
    return out
