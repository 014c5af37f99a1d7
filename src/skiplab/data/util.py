"""Small helpers shared by the generators and the loader: stable seed mixing and a single-thread section."""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch


def seed_for(*parts: object) -> int:
    """A 63-bit seed mixed from ``parts`` (stable across runs and platforms, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a block of small CPU tensor ops on one intra-op thread, then restore the thread count.

    Why: batch assembly and procedural generation are many element-wise ops on a few hundred KB each, where extra
    threads add synchronisation, not speed — and on a busy machine OpenMP's spin-waits make them ~10x *slower*
    (measured on this 2-core machine at load 7: a CIFAR batch's crop+flip+normalise 40,000 images/s on one thread
    against 5,600 on two; two multiplies of a 128x3x40x40 tensor 0.37 ms against 3.6 ms).  Results do not depend
    on the thread count.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
