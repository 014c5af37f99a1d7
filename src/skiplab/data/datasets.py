"""``load_dataset`` and ``list_datasets``: find a dataset's files, decode them once, and serve them from the cache.

Where files are looked for: the ``data_dir`` argument (a folder, or the archive itself), else ``$SKIPLAB_DATA``,
else ``~/.cache/skiplab/data``; see :func:`dataset_info` for each dataset's accepted forms.  A source is decoded
with all its splits at once (an archive is one stream anyway, and the normalisation statistics come from the
train split), and every split is cached (see :mod:`skiplab.data.storage`).
"""
from __future__ import annotations

import os

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from skiplab.data import cifar, idx, imagefolder, strokes, synthetic
from skiplab.data.archive import is_archive
from skiplab.data.dataset import ImageDataset, channel_stats
from skiplab.data.download import OFFICIAL, RemoteFile, download as download_file
from skiplab.data.errors import CorruptDataError, DatasetNotFoundError, NonOfficialDataWarning, check_official_count
from skiplab.data.storage import DecodedSplit, cache_key, cache_path, data_root, read_cache, write_cache


@dataclass(frozen=True)
class DatasetInfo:
    """What skiplab knows about a dataset name."""

    name: str
    description: str
    task: str
    image_shape: tuple[int, int, int]
    num_classes: int
    splits: tuple[str, ...]
    forms: tuple[str, ...]  # accepted file forms, as a person would look for them
    options: tuple[str, ...]
    downloads: tuple[str, ...] = field(default=())  # official file names fetched by download=True

    def download_specs(self) -> list[RemoteFile]:
        """The official files ``download=True`` fetches: URLs, sizes and md5s."""
        return [OFFICIAL[self.name][n] for n in self.downloads]


_COMMON = ("strict", "cache")
_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test 32x32 colour images", "classification",
        (3, 32, 32), 10, ("train", "test"),
        ("cifar-10-batches-py/", "cifar-10-python.tar.gz", "cifar-10-batches-bin/", "cifar-10-binary.tar.gz",
         "cifar10/ (ImageFolder: train/<class>/*.jpg, test/<class>/*.jpg)", "cifar10-jpeg.tar.gz",
         "cifar10.tar.gz", "cifar10.tar", "cifar10.zip"),
        _COMMON, ("cifar-10-python.tar.gz",)),
    "cifar100": DatasetInfo(
        "cifar100", "CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 fine or 20 coarse classes",
        "classification", (3, 32, 32), 100, ("train", "test"),
        ("cifar-100-python/", "cifar-100-python.tar.gz", "cifar-100-binary/", "cifar-100-binary.tar.gz"),
        ("labels", *_COMMON), ("cifar-100-python.tar.gz",)),
    "mnist": DatasetInfo(
        "mnist", "MNIST (LeCun et al. 1998): 60,000 train / 10,000 test 28x28 greyscale digits", "classification",
        (1, 28, 28), 10, ("train", "test"),
        ("mnist/ or MNIST/raw/ holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
         "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",), ("resplit", *_COMMON),
        tuple(OFFICIAL["mnist"])),
    "mnist_strokes": DatasetInfo(
        "mnist_strokes", "stroke segmentation on real digits: MNIST's 10,000 test digits under pixel noise (sd 0.5) "
        "-> clean stroke masks, 1x32x32, 8,000 train / 2,000 test (seeded split)", "segmentation",
        (1, 32, 32), 2, ("train", "test"),
        ("mnist/ or MNIST/raw/ holding t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (MNIST's test "
         "set; see skiplab.data.strokes)",), ("degradation", "noise", "n_test", "seed", *_COMMON)),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28x28 greyscale articles",
        "classification", (1, 28, 28), 10, ("train", "test"),
        ("fashion_mnist/, fashion-mnist/ or FashionMNIST/raw/ holding the four IDX files (names as MNIST's)",),
        ("resplit", *_COMMON), tuple(OFFICIAL["fashion_mnist"])),
    "imagefolder": DatasetInfo(
        "imagefolder", "any split/class/image tree, from a folder or a .tar/.tar.gz/.zip archive (data_dir=PATH)",
        "classification", (3, 0, 0), 0, (), ("a folder or archive given as data_dir",), ("image_size", "cache")),
    "synthetic": DatasetInfo(
        "synthetic", "procedural shapes x textures, 10 classes of 3x32x32, no files (see skiplab.data.synthetic)",
        "classification", (3, 32, 32), 10, ("train", "test"), ("generated",),
        ("n_train", "n_test", "image_size", "seed", "noise")),
    "synthetic_seg": DatasetInfo(
        "synthetic_seg", "procedural textured shapes with per-pixel masks (background + 5 shapes), 3x64x64",
        "segmentation", (3, 64, 64), 6, ("train", "test"), ("generated",),
        ("n_train", "n_test", "image_size", "seed", "noise")),
    "synthetic_strokes": DatasetInfo(
        "synthetic_strokes", "stroke segmentation on generated digits (mnist_strokes' task on synthetic_digits), "
        "1x32x32, 2,000 train / 500 test", "segmentation", (1, 32, 32), 2, ("train", "test"), ("generated",),
        ("n_train", "n_test", "degradation", "noise", "seed")),
    "synthetic_digits": DatasetInfo(
        "synthetic_digits", "procedural stroke digits, 10 classes of 1x28x28, an MNIST stand-in", "classification",
        (1, 28, 28), 10, ("train", "test"), ("generated",), ("n_train", "n_test", "image_size", "seed", "noise")),
}
_ALIASES = {"cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
            "fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist",
            "image_folder": "imagefolder"}


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts."""
    return sorted(_INFO)


def dataset_info(name: str) -> DatasetInfo:
    return _INFO[_canonical(name)]


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a dataset name (str), got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _INFO:
        import difflib

        close = difflib.get_close_matches(key, list(_INFO), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known: {', '.join(list_datasets())}")
    return key


def load_dataset(name: str, split: str = "train", *, data_dir: str | Path | None = None, download: bool = False,
                 **options: Any) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` as an :class:`ImageDataset` (uint8 images, int64 labels).

    ``data_dir``: a folder holding the files (or the archive itself); default ``$SKIPLAB_DATA`` or
    ``~/.cache/skiplab/data``.  ``download=True`` fetches missing official files (checksum-verified, atomic).
    Options: ``strict`` (refuse files other than the official release, default False: warn), ``cache`` (default
    True), ``labels`` ("fine"/"coarse", CIFAR-100), ``image_size`` (imagefolder: resize to it), and for the
    synthetic datasets ``n_train``, ``n_test``, ``image_size``, ``seed``, ``noise``.
    """
    key = _canonical(name)
    info = _INFO[key]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(f"load_dataset({key!r}): unknown option(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(info.options) or 'none'}")
    if not isinstance(split, str) or (info.splits and split not in info.splits):
        raise ValueError(f"split: {key} has splits {', '.join(info.splits)}, got {split!r} "
                         "(for a validation set use ds.split(n_val, seed))")
    if key in synthetic.SYNTHETIC_NAMES:
        return synthetic.make_synthetic(key, split, **options)
    if key == "mnist_strokes":  # derived from MNIST's test set, which is loaded (and cached) as usual
        return strokes.make_mnist_strokes(split, data_dir=data_dir, download=download, **options)
    if key == "synthetic_strokes":
        return strokes.make_synthetic_strokes(split, **options)
    strict, use_cache = bool(options.pop("strict", False)), bool(options.pop("cache", True))
    resplit = options.pop("resplit", 0)
    source, reader, decode_opts = _find_source(key, data_dir, download, options)
    if resplit:
        return _resplit_test_file(_load_cached(key, "test", source, reader, decode_opts, strict=strict,
                                               use_cache=use_cache), split, resplit)
    return _load_cached(key, split, source, reader, decode_opts, strict=strict, use_cache=use_cache)


RESPLIT_SEED = 0


def _resplit_test_file(full: ImageDataset, split: str, n_test: Any) -> ImageDataset:
    """``resplit=N``: for copies that hold only the official *test* file (such as a shared MNIST test set), that
    file split in two by a fixed seeded permutation (seed :data:`RESPLIT_SEED`): ``test`` = N images, ``train`` =
    the rest.  The two never overlap; the same N gives the same split everywhere."""
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 < n_test < len(full):
        raise ValueError(f"resplit: expected the number of test images, an integer in [1, {len(full) - 1}] (the "
                         f"official test file's images are split into train and test); got {n_test!r}")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(RESPLIT_SEED))
    part = perm[:n_test] if split == "test" else perm[n_test:]
    return full.subset(part.sort().values)


def data_search_path() -> list[Path]:
    """Where :func:`locate_data_dir` looks, in order: ``$SKIPLAB_DATA``, ``~/.cache/skiplab/data``, and beside the
    working directory ``./data`` and ``../shared/data`` (a checkout next to a shared data folder)."""
    places = [Path(os.environ["SKIPLAB_DATA"])] if os.environ.get("SKIPLAB_DATA") else []
    return places + [Path.home() / ".cache" / "skiplab" / "data", Path("data"), Path("..") / "shared" / "data"]


def locate_data_dir(name: str) -> Path:
    """The first folder of :func:`data_search_path` that holds dataset ``name`` in a form skiplab reads; raises
    :class:`DatasetNotFoundError` naming every place looked and how to point at the files instead."""
    key = _canonical(name)
    looked = []
    for place in data_search_path():
        try:
            _find_source(key, place, False, {})
            return place.resolve()
        except DatasetNotFoundError:
            looked.append(str(place.resolve()))
    raise DatasetNotFoundError(
        f"{key}: not found; looked in {'; '.join(looked)} (forms: {', '.join(_INFO[key].forms)}). Put the files in "
        f"one of those places, set $SKIPLAB_DATA, or pass the folder or archive (CLI: --set data_dir=PATH)")


# ------------------------------------------------------------------------------------------------ finding files
@dataclass(frozen=True)
class Reader:
    """A decoder for one source form; ``id`` is part of the cache key."""

    id: str
    fn: Callable[[Path, dict[str, Any], bool], tuple[dict[str, DecodedSplit], list[str]]]


def _cifar_reader(dataset: str, kind: str) -> Reader:
    layout = cifar.LAYOUTS[(dataset, kind)]
    return Reader(f"cifar-{kind}", lambda src, opts, strict: cifar.read_cifar(src, layout, strict=strict, **opts))


def _read_cifar10_tree(src: Path, opts: dict[str, Any], strict: bool) -> tuple[dict[str, DecodedSplit], list[str]]:
    splits, classes = imagefolder.read_imagefolder(src, **opts)
    if classes != cifar.CIFAR10_CLASSES:
        raise CorruptDataError(f"{src}: class folders {classes} are not CIFAR-10's {cifar.CIFAR10_CLASSES}")
    for name, dec in splits.items():
        official = {"train": 50000, "test": 10000}.get(name)
        note = official and check_official_count(f"{src} ({name} split)", len(dec.labels), official, strict=strict)
        dec.notes += [note] if note else []
    return splits, classes


_IMAGEFOLDER = Reader("imagefolder", lambda src, opts, strict: imagefolder.read_imagefolder(src, **opts))
_CIFAR10_TREE = Reader("cifar10-imagefolder", _read_cifar10_tree)


def _idx_reader(dataset: str) -> Reader:
    classes = idx.MNIST_CLASSES if dataset == "mnist" else idx.FASHION_CLASSES
    return Reader("idx", lambda src, opts, strict: (idx.read_idx_splits(src, dataset, strict=strict), list(classes)))


def _is_imagefolder_dir(p: Path) -> bool:
    return p.is_dir() and any(s.is_dir() and any(c.is_dir() for c in s.iterdir()) for s in p.iterdir()
                              if s.name in ("train", "test", "val"))


def _cifar_candidates(dataset: str, folder: Path) -> list[tuple[Path, Reader]]:
    out: list[tuple[Path, Reader]] = []
    for kind in ("python", "binary"):
        layout = cifar.LAYOUTS[(dataset, kind)]
        out += [(folder / layout.folder, _cifar_reader(dataset, kind)),
                (folder / layout.archive, _cifar_reader(dataset, kind))]
    if dataset == "cifar10":
        names = ("cifar10", "cifar10-jpeg.tar.gz", "cifar10.tar.gz", "cifar10.tgz", "cifar10.tar", "cifar10.zip")
        out += [(folder / n, _CIFAR10_TREE) for n in names]
    return out


def _classify_path(key: str, p: Path) -> Reader | None:
    """When ``data_dir`` *is* the source (an archive, an extracted release, an ImageFolder tree)."""
    if key in ("cifar10", "cifar100"):
        for kind in ("python", "binary"):
            layout = cifar.LAYOUTS[(key, kind)]
            if (p.is_file() and p.name == layout.archive) or (p.is_dir() and (p / layout.splits["test"][0]).is_file()):
                return _cifar_reader(key, kind)
        if key == "cifar10" and (is_archive(p) or _is_imagefolder_dir(p)):
            return _CIFAR10_TREE
    return None


def _find_source(key: str, data_dir: str | Path | None, download: bool,
                 options: dict[str, Any]) -> tuple[Path, Reader, dict[str, Any]]:
    root = data_root(data_dir)
    key = "mnist" if key == "mnist_strokes" else key  # made from MNIST's files
    if key == "imagefolder":
        if data_dir is None:
            raise ValueError("imagefolder needs data_dir=PATH: a split/class/image folder or .tar/.tar.gz/.zip")
        if not (root.is_dir() or is_archive(root)):
            raise DatasetNotFoundError(f"imagefolder: {root} is not a folder or a .tar/.tar.gz/.tgz/.zip archive")
        return root, _IMAGEFOLDER, {"image_size": imagefolder.parse_size(options.get("image_size"))}
    if key in ("cifar10", "cifar100"):
        decode_opts = {"labels": options.get("labels", "fine")} if key == "cifar100" else {}
        reader = _classify_path(key, root)
        if reader is not None:
            return root, reader, decode_opts
        for folder in (root, root / key):
            for path, reader in _cifar_candidates(key, folder):
                if path.exists() and (path.is_file() or path.name.startswith("cifar-") or _is_imagefolder_dir(path)):
                    return path, reader, decode_opts
        target = root
    else:  # mnist, fashion_mnist
        subdirs = ("mnist", "MNIST/raw", "MNIST") if key == "mnist" else \
            ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "fashion")
        folders = [root / s for s in subdirs] + ([root] if data_dir is not None else [])
        for folder in folders:
            if folder.is_dir() and any(idx.find_idx_file(folder, stems[0]) for stems in idx.IDX_FILES.values()):
                return folder, _idx_reader(key), {}
        target = root / subdirs[0]
    info = _INFO[key]
    if download:
        for spec in info.download_specs():
            download_file(spec, target)
        return _find_source(key, data_dir, False, options)
    files = "; ".join(f"{s.filename} from {s.urls[0]} (md5 {s.md5})" for s in info.download_specs())
    where = "data_dir" if data_dir is not None else "$SKIPLAB_DATA or the default ~/.cache/skiplab/data"
    raise DatasetNotFoundError(
        f"{key} not found in {root} (from {where}); looked for {', '.join(info.forms)}. "
        f"Download {files} and put {'it' if len(info.downloads) == 1 else 'them'} in {target}, "
        "or pass download=True (CLI: --download)."
    )


# ------------------------------------------------------------------------------------------ decoding and cache
def _load_cached(key: str, split: str, source: Path, reader: Reader, decode_opts: dict[str, Any], *,
                 strict: bool, use_cache: bool) -> ImageDataset:
    ckey = cache_key(key, source, {**decode_opts, "reader": reader.id})
    path = cache_path(key, split, ckey)
    hit = read_cache(path) if use_cache else None
    if hit is not None:
        images, labels, meta = hit
        _warn_notes(meta.get("notes", []), strict)  # a non-official source warns on every load, not only the first
        return _to_dataset(key, images, labels, meta, source, path)
    t0 = time.perf_counter()
    splits, classes = reader.fn(source, decode_opts, strict)
    if split not in splits:
        raise DatasetNotFoundError(f"{source}: has no {split!r} split (found: {', '.join(sorted(splits)) or 'none'})")
    stats_split = "train" if "train" in splits else split
    mean, std = channel_stats(torch.from_numpy(splits[stats_split].images))
    decode_s = time.perf_counter() - t0
    result = None
    for name, dec in splits.items():
        images, labels = torch.from_numpy(np.ascontiguousarray(dec.images)), torch.from_numpy(dec.labels)
        meta = {"classes": classes, "mean": mean, "std": std, "source": str(source), "decode_s": decode_s,
                "notes": dec.notes}
        p = cache_path(key, name, ckey)
        if use_cache:
            write_cache(p, images, labels, meta)
        if name == split:
            result = _to_dataset(key, images, labels, meta, source, p if use_cache else None)
    assert result is not None
    _warn_notes(splits[split].notes, strict=False)  # strict readers have already refused
    return result


def _warn_notes(notes: list[str], strict: bool) -> None:
    for note in notes:
        if strict:
            raise CorruptDataError(note + " (strict=True refuses it)")
        warnings.warn(note + " (strict=True would refuse it)", NonOfficialDataWarning, stacklevel=4)


def _to_dataset(key: str, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any], source: Path,
                cache_file: Path | None) -> ImageDataset:
    return ImageDataset(images, labels, list(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]), key,
                        meta={"source": str(source), "cache": str(cache_file) if cache_file else None})
