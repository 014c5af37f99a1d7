"""ImageFolder trees, ``[prefix/]split/class/image``, from a folder or a .tar/.tar.gz/.zip archive.

Images are decoded with Pillow to RGB (or L when every image is greyscale), in a small thread pool (Pillow
releases the GIL while decoding).  They are resized only when ``image_size`` is given; otherwise all must share
one size and the first odd file is named in the error.  Class labels are the sorted class-folder names, the
same for every split.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from skiplab.data.archive import iter_members
from skiplab.data.errors import CorruptDataError
from skiplab.data.storage import DecodedSplit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _is_image(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    # skip hidden files and macOS resource forks (._x.jpg, __MACOSX/), which are not images
    return (len(parts) >= 3 and rel.lower().endswith(IMAGE_SUFFIXES)
            and not any(p.startswith((".", "__MACOSX")) for p in parts))


def parse_size(image_size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``image_size`` as (height, width); an int means square."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size: expected a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def read_imagefolder(source: Path, *, image_size: int | tuple[int, int] | None = None,
                     workers: int | None = None) -> tuple[dict[str, DecodedSplit], list[str]]:
    """Decode every split under ``source``; returns ``({split: DecodedSplit}, classes)``."""
    size = parse_size(image_size)
    entries: list[tuple[str, str, str, bytes]] = []  # (split, class, relative path, file bytes)
    prefixes: set[tuple[str, ...]] = set()
    for rel, data in iter_members(source, _is_image):
        parts = PurePosixPath(rel).parts
        prefixes.add(parts[:-3])
        entries.append((parts[-3], parts[-2], rel, data))
    if not entries:
        raise CorruptDataError(f"{source}: no images found in a split/class/image layout "
                               f"(image files ending in {', '.join(IMAGE_SUFFIXES[:5])}, ...)")
    if len(prefixes) > 1:
        shown = sorted("/".join(p) or "." for p in prefixes)[:4]
        raise CorruptDataError(f"{source}: images sit at different depths (under {', '.join(shown)}); "
                               "expected one split/class/image tree")
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    classes = sorted({e[1] for e in entries})
    class_index = {c: i for i, c in enumerate(classes)}

    def decode(entry: tuple[str, str, str, bytes]) -> np.ndarray:
        rel, data = entry[2], entry[3]
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("L" if img.mode in _GREY_MODES else "RGB")
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.BILINEAR)
                return np.asarray(img)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise CorruptDataError(f"{_where(source, rel)}: cannot decode image ({type(e).__name__}: {e})") from e

    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        arrays = list(pool.map(decode, entries, chunksize=256))
    first_hw = arrays[0].shape[:2]
    for entry, arr in zip(entries, arrays):
        if arr.shape[:2] != first_hw:
            raise CorruptDataError(
                f"{_where(source, entry[2])}: image is {arr.shape[1]}x{arr.shape[0]} (WxH) but "
                f"{_where(source, entries[0][2])} is {first_hw[1]}x{first_hw[0]}; pass image_size= to resize all"
            )
    rgb = any(a.ndim == 3 for a in arrays)
    out: dict[str, DecodedSplit] = {}
    for split in sorted({e[0] for e in entries}):
        idx = [i for i, e in enumerate(entries) if e[0] == split]
        images = np.empty((len(idx), 3 if rgb else 1, *first_hw), dtype=np.uint8)  # (N, C, H, W)
        for j, i in enumerate(idx):
            a = arrays[i]
            images[j] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]  # greyscale broadcasts to 3 channels
        labels = np.array([class_index[entries[i][1]] for i in idx], dtype=np.int64)
        out[split] = DecodedSplit(images, labels)
    return out, classes


def _where(source: Path, rel: str) -> str:
    return f"{source}:{rel}" if source.is_file() else str(source / rel)
