"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their official release formats.

Python version: pickled dicts (``data`` uint8 (N, 3072) as R, G, B planes of 32x32; ``labels`` or
``fine_labels``/``coarse_labels``), read with a restricted unpickler — never plain ``pickle.load``.
Binary version: fixed-size records of label byte(s) followed by 3072 pixel bytes (CIFAR-100: coarse then fine).
Either one from the extracted folder (``cifar-10-batches-py`` ...) or straight from the official ``.tar.gz``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from skiplab.data.archive import iter_members
from skiplab.data.download import MEMBER_MD5, OFFICIAL, verify_official
from skiplab.data.errors import CorruptDataError, check_official_count
from skiplab.data.safe_pickle import safe_loads
from skiplab.data.storage import DecodedSplit

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2"
).split()
_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """What one official release contains."""

    dataset: str  # "cifar10" | "cifar100"
    kind: str  # "python" | "binary"
    folder: str  # the folder the archive extracts to
    archive: str  # the official archive's file name
    splits: dict[str, tuple[str, ...]]  # split -> member file names, in order
    records: int  # official records per member (CIFAR-100's train member holds 50,000)
    meta: tuple[str, ...]  # class-name files: python meta pickle, or binary .txt (fine first for CIFAR-100)


LAYOUTS: dict[tuple[str, str], CifarLayout] = {
    ("cifar10", "python"): CifarLayout(
        "cifar10", "python", "cifar-10-batches-py", "cifar-10-python.tar.gz",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}, 10000, ("batches.meta",)),
    ("cifar10", "binary"): CifarLayout(
        "cifar10", "binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
        {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}, 10000,
        ("batches.meta.txt",)),
    ("cifar100", "python"): CifarLayout(
        "cifar100", "python", "cifar-100-python", "cifar-100-python.tar.gz",
        {"train": ("train",), "test": ("test",)}, 0, ("meta",)),
    ("cifar100", "binary"): CifarLayout(
        "cifar100", "binary", "cifar-100-binary", "cifar-100-binary.tar.gz",
        {"train": ("train.bin",), "test": ("test.bin",)}, 0, ("fine_label_names.txt", "coarse_label_names.txt")),
}
_CIFAR100_RECORDS = {"train": 50000, "test": 10000}


def read_cifar(source: Path, layout: CifarLayout, *, labels: str = "fine",
               strict: bool = False) -> tuple[dict[str, DecodedSplit], list[str]]:
    """Decode every split of one CIFAR release from its folder or official archive.

    ``labels`` chooses CIFAR-100's ``"fine"`` (100) or ``"coarse"`` (20) classes.  Checks: the official archive's
    md5 (when it has the official size), each python member's md5 (when it holds the official record count),
    record structure, label range, and record counts (other counts warn, or fail with ``strict``).
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels: expected 'fine' or 'coarse', got {labels!r}")
    archive_notes: list[str] = []
    if source.is_file() and layout.archive in OFFICIAL[layout.dataset]:
        note = verify_official(source, OFFICIAL[layout.dataset][layout.archive], strict=strict)
        archive_notes += [note] if note else []
    wanted = {m for members in layout.splits.values() for m in members} | set(layout.meta)
    found: dict[str, tuple[str, bytes]] = {}
    for rel, data in iter_members(source, lambda rel: PurePosixPath(rel).name in wanted):
        found.setdefault(PurePosixPath(rel).name, (rel, data))
    missing = [m for members in layout.splits.values() for m in members if m not in found]
    if missing:
        raise CorruptDataError(f"{source}: incomplete {layout.folder} release, missing {', '.join(missing)}")
    classes = _read_classes(source, layout, found, labels)
    out: dict[str, DecodedSplit] = {}
    for split, members in layout.splits.items():
        parts, notes = [], list(archive_notes)
        for member in members:
            rel, data = found[member]
            where = f"{source}:{rel}" if source.is_file() else str(source / rel)
            decode = _decode_python if layout.kind == "python" else _decode_binary
            images, y = decode(data, where, layout, labels)
            official = layout.records or _CIFAR100_RECORDS[split]
            if source.is_dir() and len(y) == official and f"{layout.folder}/{member}" in MEMBER_MD5:
                _check_member_md5(data, where, MEMBER_MD5[f"{layout.folder}/{member}"])
            note = check_official_count(where, len(y), official, strict=strict)
            notes += [note] if note else []
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise CorruptDataError(f"{where}: labels must lie in [0, {len(classes)}), "
                                       f"found range [{y.min()}, {y.max()}]")
            parts.append((images, y))
        out[split] = DecodedSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), notes)
    return out, classes


def _decode_python(data: bytes, where: str, layout: CifarLayout, labels: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = safe_loads(data)
    except Exception as e:  # refused globals, truncation, garbage: all mean "do not train on this"
        raise CorruptDataError(f"{where}: not a valid CIFAR python batch ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise CorruptDataError(f"{where}: expected a pickled dict, got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    key = "labels" if layout.dataset == "cifar10" else f"{labels}_labels"
    x, y = d.get("data"), d.get(key)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != _PIXELS:
        got = f"{x.dtype} array {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise CorruptDataError(f"{where}: 'data' must be a uint8 array (N, {_PIXELS}), got {got}")
    if not isinstance(y, (list, np.ndarray)) or len(y) != len(x):
        raise CorruptDataError(f"{where}: '{key}' must be a list of {len(x)} ints, got "
                               f"{type(y).__name__}{f' of {len(y)}' if hasattr(y, '__len__') else ''}")
    try:
        y_arr = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise CorruptDataError(f"{where}: '{key}' holds non-integer labels") from e
    return x.reshape(-1, 3, 32, 32).copy(), y_arr  # rows are R, G, B planes: already (C, H, W) order


def _decode_binary(data: bytes, where: str, layout: CifarLayout, labels: str) -> tuple[np.ndarray, np.ndarray]:
    label_bytes = 1 if layout.dataset == "cifar10" else 2
    rec = label_bytes + _PIXELS
    if len(data) == 0 or len(data) % rec:
        raise CorruptDataError(f"{where}: {len(data)} bytes is not a whole number of {rec}-byte records "
                               "(truncated or not a CIFAR binary file)")
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)  # (N, label bytes + 3072)
    col = 0 if label_bytes == 1 or labels == "coarse" else 1  # CIFAR-100 records: coarse byte, then fine byte
    return arr[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), arr[:, col].astype(np.int64)


def _read_classes(source: Path, layout: CifarLayout, found: dict[str, tuple[str, bytes]], labels: str) -> list[str]:
    if layout.dataset == "cifar10":
        default, python_key, text_file = CIFAR10_CLASSES, "label_names", "batches.meta.txt"
    elif labels == "fine":
        default, python_key, text_file = CIFAR100_FINE, "fine_label_names", "fine_label_names.txt"
    else:
        default, python_key, text_file = CIFAR100_COARSE, "coarse_label_names", "coarse_label_names.txt"
    meta_file = layout.meta[0] if layout.kind == "python" else text_file
    if meta_file not in found:  # the class names are fixed; the meta file only repeats them
        return list(default)
    rel, data = found[meta_file]
    where = f"{source}:{rel}" if source.is_file() else str(source / rel)
    try:
        if layout.kind == "python":
            meta = safe_loads(data)
            names = meta[python_key] if python_key in meta else meta[python_key.encode()]
            names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        else:
            names = [line.strip() for line in data.decode("latin1").splitlines() if line.strip()]
    except Exception as e:
        raise CorruptDataError(f"{where}: unreadable class-name file ({type(e).__name__}: {e})") from e
    if len(names) != len(default):
        raise CorruptDataError(f"{where}: expected {len(default)} class names, found {len(names)}")
    return names


def _check_member_md5(data: bytes, where: str, md5: str) -> None:
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise CorruptDataError(f"{where}: md5 {got} does not match the official {md5}; the file is damaged")
