"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node=N -m skiplab train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the
rendezvous address; :func:`init` reads them.  Without them everything here is a no-op (world size 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

if dist.is_available():
    # Imported now, before any process group exists, on purpose: DistributedDataParallel imports
    # torch.distributed.nn, whose functions take ``group=group.WORLD`` as a default argument.  Imported after
    # init_process_group, those 10 defaults hold the group for good, so destroy_process_group() cannot free it,
    # gloo's worker threads live on into interpreter shutdown, and one still releasing a finished collective's
    # tensors there aborts the process ("terminate called without an active exception", SIGABRT) after all
    # work succeeded.  Imported here, the defaults are None.
    import torch.distributed.nn  # noqa: F401


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # init() created the process group, so shutdown() destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
                    int(os.environ["WORLD_SIZE"]))


def init(device: torch.device) -> DistInfo:
    """Join the process group torchrun described (if any); returns this process's rank and the world size.
    A group the caller already created is used as it is (and left alone by :func:`shutdown`)."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return DistInfo(info.rank, info.local_rank, info.world_size, owns_group=True)
    return info


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if :func:`init` created it; a caller's group outlives the training run."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all processes (in place); identity for a single process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process if it is True on any — so all ranks stop at the same step."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def first_bad_step(t: torch.Tensor, info: DistInfo) -> int:
    """The earliest step (>= 0) any process saw a non-finite loss at, or -1: every rank reads the same
    answer, so all of them stop together."""
    if not info.enabled:
        return int(t)
    big = torch.iinfo(torch.int64).max
    v = torch.where(t < 0, torch.full_like(t, big), t).reshape(1).clone()
    dist.all_reduce(v, op=dist.ReduceOp.MIN)
    return -1 if int(v) == big else int(v)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
