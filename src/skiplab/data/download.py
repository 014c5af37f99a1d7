"""Official release files: their URLs, sizes and md5s; checksum verification; atomic, verified downloads.

Checksums are the ones the dataset authors publish (CIFAR: https://www.cs.toronto.edu/~kriz/cifar.html) and the
ones torchvision pins for the MNIST mirror and Fashion-MNIST.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen  # a module attribute, so tests can stand in for the network

from skiplab.data.errors import CorruptDataError, DatasetNotFoundError
from skiplab.data.storage import file_digest


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it is published, how big it is and its md5."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    size: int


_TORONTO = "https://www.cs.toronto.edu/~kriz/"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _files(bases: tuple[str, ...], table: dict[str, tuple[str, int]]) -> dict[str, RemoteFile]:
    return {name: RemoteFile(name, tuple(b + name for b in bases), md5, size) for name, (md5, size) in table.items()}


OFFICIAL: dict[str, dict[str, RemoteFile]] = {
    "cifar10": _files((_TORONTO,), {
        "cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a", 170498071),
        "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530", 170052171),
    }),
    "cifar100": _files((_TORONTO,), {
        "cifar-100-python.tar.gz": ("eb9058c3a382ffc7106e4002c42a8d85", 169001437),
        "cifar-100-binary.tar.gz": ("03b5dce01913d631647c71ecec9e9cb8", 168513733),
    }),
    "mnist": _files(_MNIST_MIRRORS, {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
    }),
    "fashion_mnist": _files(_FASHION, {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 29515),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 4422102),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 5148),
    }),
}

# md5s of the members of the CIFAR python archives (published by torchvision), checked when a member is read
# from an extracted folder and holds the official number of records.
MEMBER_MD5: dict[str, str] = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}


def verify_official(path: Path, spec: RemoteFile, *, strict: bool = False) -> str | None:
    """Check ``path`` against the official release file ``spec``; returns a note (None: byte-identical).

    One policy for every official file: a file of the official size and md5 is the release.  Any other file —
    re-compressed copies (a gzip header with another name or time changes the md5, not the size), subsets,
    fixtures — is not refused here: its decoder's content and structure checks decide (gzip's CRC-32 over the
    decompressed data, magic numbers, dimensions, record sizes, label range, per-member md5s where known), and the
    returned note, which says what differs, becomes a :class:`NonOfficialDataWarning`.  ``strict=True`` refuses
    every file that is not byte-identical to the release instead."""
    size = path.stat().st_size
    got = file_digest(path, "md5") if size == spec.size else None
    if got == spec.md5:
        return None
    if got is None:
        what = f"{size} bytes where the official {spec.filename} has {spec.size}"
    else:
        what = f"md5 {got} where the official {spec.filename} has {spec.md5} (same size, {size} bytes)"
    header = gzip_header(path) if path.name.endswith(".gz") else None
    if strict:
        raise CorruptDataError(f"{path}: not byte-identical to the official release: {what}"
                               + (f"; {header}" if header else "") + f". strict=True refuses it; download the "
                               f"release from {spec.urls[0]} or pass strict=False to use it after the checks")
    return (f"{path}: not byte-identical to the official release ({what}"
            + (f"; {header}" if header else "") + "); used after its content and structure checks passed")


def gzip_header(path: Path) -> str | None:
    """What a gzip file's header records (RFC 1952: modification time, original file name), to say what differs
    when a re-compressed copy's md5 is not the release's; None if ``path`` is not gzip."""
    import struct
    import time as _time

    with path.open("rb") as f:
        head = f.read(10)
        if len(head) < 10 or head[:2] != b"\x1f\x8b":
            return None
        flags, mtime = head[3], struct.unpack("<I", head[4:8])[0]
        name = ""
        if flags & 0x04:  # FEXTRA: skip it
            (xlen,) = struct.unpack("<H", f.read(2))
            f.read(xlen)
        if flags & 0x08:  # FNAME: zero-terminated
            raw = bytearray()
            while (c := f.read(1)) not in (b"", b"\x00"):
                raw += c
            name = raw.decode("latin-1")
    when = _time.strftime("%Y-%m-%d %H:%M:%S UTC", _time.gmtime(mtime)) if mtime else "none"
    return f"its gzip header records name {name!r} and time {when}"


def download(spec: RemoteFile, dest_dir: Path, *, timeout: float = 60.0) -> Path:
    """Fetch ``spec`` into ``dest_dir`` and return its path; the md5 and size are verified before the file appears
    under its final name (temp file + rename), so an interrupted or corrupt download never looks complete."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / spec.filename
    errors: list[str] = []
    damaged = False
    for url in spec.urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
        try:
            md5, size = hashlib.md5(), 0
            with os.fdopen(fd, "wb") as out, urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    md5.update(block)
                    size += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if size != spec.size or md5.hexdigest() != spec.md5:
                raise CorruptDataError(
                    f"download of {url} is damaged: got {size} bytes with md5 {md5.hexdigest()}, "
                    f"expected {spec.size} bytes with md5 {spec.md5}"
                )
            os.replace(tmp, dest)
            return dest
        except (URLError, OSError, CorruptDataError) as e:  # try the next mirror
            damaged |= isinstance(e, CorruptDataError)
            errors.append(f"{url}: {e}" if not isinstance(e, CorruptDataError) else str(e))
        finally:
            Path(tmp).unlink(missing_ok=True)
    if damaged:
        raise CorruptDataError(f"{spec.filename}: no intact copy could be downloaded ({'; '.join(errors)})")
    raise DatasetNotFoundError(
        f"could not download {spec.filename} ({'; '.join(errors)}). Offline? Fetch {spec.urls[0]} "
        f"(md5 {spec.md5}) by other means and put it at {dest}"
    )
