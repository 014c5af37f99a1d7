"""Errors and warnings of skiplab.data.

Every error names the file it is about, so a person can find and fix (or delete) it.  They subclass the builtin
errors the CLI already treats as user errors (``OSError``/``ValueError``): one clear line, no traceback.
"""
from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked; the message says where we looked, the official file name,
    its URL, and where to put it (or that ``download=True`` fetches it)."""

    def __str__(self) -> str:  # FileNotFoundError would prefix an errno
        return str(self.args[0]) if self.args else ""


class CorruptDataError(ValueError):
    """A data file failed a check (checksum, size, magic number, label range, decode): never trained on."""


class NonOfficialDataWarning(UserWarning):
    """A file parsed cleanly but is not the official release (other record count), so its checksum could not be
    verified.  Fine for subsets and test fixtures; pass ``strict=True`` to refuse such files instead."""


def check_official_count(where: str, got: int, official: int, *, strict: bool) -> str | None:
    """A note when a cleanly parsed file holds a different number of records than the official release (a subset,
    a test fixture, or a file truncated exactly at a record boundary); with ``strict`` such a file is refused.
    The loader turns notes into :class:`NonOfficialDataWarning` on every load, cached or not."""
    if got == official:
        return None
    msg = f"{where}: {got} records where the official file has {official}; not the official release"
    if strict:
        raise CorruptDataError(msg + " (strict=True refuses it)")
    return msg
