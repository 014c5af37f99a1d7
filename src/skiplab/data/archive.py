"""Reading files from a folder or straight from a .tar / .tar.gz / .tgz / .zip archive, without extracting.

Members are read into memory and never written to disk, so an archive's paths (``../``, absolute, links) cannot
touch the file system; links and special files are skipped.
"""
from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

from skiplab.data.errors import CorruptDataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def iter_members(source: Path, want: Callable[[str], bool] = lambda name: True) -> Iterator[tuple[str, bytes]]:
    """Yield ``(posix relative path, contents)`` of the regular files in ``source`` for which ``want(path)`` is true.

    Tar archives are read as one stream (a .tar.gz is decompressed once, front to back); folders and zips in
    sorted order.  A truncated or damaged archive raises :class:`CorruptDataError` naming it.
    """
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            rel = p.relative_to(source).as_posix()
            if p.is_file() and not p.is_symlink() and want(rel):
                yield rel, p.read_bytes()
        return
    name = source.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(source) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    rel = _strip_dot(info.filename)
                    if not info.is_dir() and want(rel):
                        yield rel, zf.read(info)
        elif name.endswith((".tar", ".tar.gz", ".tgz")):
            with tarfile.open(source, mode="r|*") as tf:  # stream mode: no seeking back through the gzip stream
                for member in tf:
                    rel = _strip_dot(member.name)
                    if member.isfile() and want(rel):
                        f = tf.extractfile(member)
                        assert f is not None  # a regular file always has contents
                        yield rel, f.read()
        else:
            raise ValueError(f"{source}: not a folder or a .tar/.tar.gz/.tgz/.zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptDataError(f"{source}: damaged or truncated archive ({type(e).__name__}: {e})") from e


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name
