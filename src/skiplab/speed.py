"""Training speed options, each measured by ``benchmarks/bench_step.py`` against the plain eager reference of
``benchmarks/reference.py`` (same nets, NCHW, PyTorch's default SGD, ``loss.item()`` every step).

Measured on this project's CPUs (AMD EPYC, AVX2 only, float32, 2 threads, quiet machine; reference and ours
alternating in one run; ratios are reference time / our time; BENCHMARKS.md has the tables and commands):
resnet20 1.40x, resnet56 1.20x, resnet110 1.20x (batch 128), resnet50 1.72x (batch 32, 224²).  On resnet20 the
options add up as eager 1.09x -> channels_last 1.22x -> + tune_malloc 1.42x; fused SGD and torch.compile add
nothing on CPU.

* :func:`tune_malloc` — the largest single gain for big activations.  glibc serves each allocation above its
  mmap threshold (at most 32 MiB by default) with a fresh ``mmap`` and gives it back on free, so every training
  step page-faults its activations in again: ~1.8 million minor faults and ~28% of a resnet50 step spent in the
  kernel, ~13% of a resnet20 step.  Keeping freed memory in the heap removes them.  Process-wide; resident
  memory then stays at the peak (which the step needs anyway).  Its opposite, ``set_malloc_policy("memory")``,
  is for runs that checkpoint to save memory.  (The same setting gives the reference 1.06x on resnet20.)
* ``channels_last`` (NHWC) — oneDNN's native layout; NCHW tensors are converted to it on every call.  Fastest
  for the 16-channel CIFAR stages (about 1.7x per convolution there) and on CUDA tensor cores.
* ``torch.compile`` (inductor) — fuses BatchNorm, ReLU and the residual add into a few loops (convolutions stay
  oneDNN's).  Up to ~10% more on the CIFAR nets under load, nothing on a quiet machine (1.35x vs 1.42x
  without, resnet20), for a one-off compile of ~17 s (resnet20) to 7 minutes (resnet110).  Off by default.
* A fused SGD step (``fused=True``) — one kernel over all parameters instead of a loop over them; no measurable
  effect on CPU (convolutions dominate the step), a gain on GPU.
* No per-step host sync (``loss.item()`` every step): free on CPU, where ops run synchronously; on CUDA it
  stalls the queue every step.  The training loop reads metrics every ``log_every`` steps only.
* bf16 autocast on CPU only where the CPU computes bf16 natively (:func:`native_bf16`: AVX-512 BF16 or AMX on
  x86, the BF16 extension on Arm).  Machines of this project's kind differ: on an AVX-512 BF16 EPYC a bf16
  2048² matmul ran ~3.7x float32 and a ResNet-20 step ~1.6x (2 threads); on an AVX2-only one oneDNN emulates
  bf16 and the same step ran ~10x *slower*.  :func:`cpu_report` says what was detected and chosen.

Why not 2x on the CIFAR nets in float32 (measured on an AVX2-only EPYC): the reference already runs at 46-57% of
the float32 matmul peak (its step is ~80% oneDNN convolutions, which these options do not make cheaper), so 2x
would need ~100% of peak; ours reaches 63-68%.
``benchmarks/bench_conv.py`` shows where it stops: forward and input-gradient convolutions run at 81-106% of the
matmul peak, the weight gradients at 56-66%, and BatchNorm/ReLU/adds take ~21% of the step. resnet50's reference
loses ~30% of its time to page faults, which is where its 1.7x comes from.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import inspect
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

# mallopt(3) parameter numbers, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MALLOC_POLICIES = {
    # keep freed memory for reuse: "never trim" (-1, documented in mallopt(3)) and no per-chunk mmap (-1 is read
    # as SIZE_MAX), so a step's activations reuse the last step's pages instead of faulting fresh ones in
    "speed": (-1, -1),
    # give memory back at once: chunks above 256 KiB get their own mmap (unmapped on free), the heap top is
    # trimmed above 1 MiB — resident memory follows the live tensors (what checkpointing saves shows in RSS)
    "memory": (1 << 20, 256 << 10),
}
_malloc_policy: str | None = None


def set_malloc_policy(policy: str) -> bool:
    """Choose glibc's allocator behaviour for this process: ``"speed"`` (keep freed memory; removes the page
    faults that otherwise cost ~28% of a resnet50 training step on CPU) or ``"memory"`` (return freed memory at
    once; with gradient checkpointing, resident memory then tracks the live tensors instead of the heap's
    high-water mark).  Process-wide; applies to later allocations.  Returns True if applied, False where it
    does not apply (not Linux/glibc) or glibc refused it."""
    global _malloc_policy
    if policy not in MALLOC_POLICIES:
        raise ValueError(f"malloc policy must be one of {', '.join(map(repr, MALLOC_POLICIES))}; got {policy!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim, mmap = MALLOC_POLICIES[policy]
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap))
    if ok:
        _malloc_policy = policy
    return ok


def malloc_policy() -> str | None:
    """The policy :func:`set_malloc_policy` last applied in this process (None: glibc's default)."""
    return _malloc_policy


def tune_malloc() -> bool:
    """``set_malloc_policy("speed")``: stop glibc from returning memory to the OS between training steps, so
    large activations are reused instead of page-faulted in every step.  See :func:`set_malloc_policy`."""
    return set_malloc_policy("speed")


@dataclass(frozen=True)
class SpeedOptions:
    """The training speed switches.  :func:`default_speed_options` gives the measured best per device."""

    channels_last: bool = True
    compile: bool = False
    fused_optimizer: bool = False
    tune_malloc: bool = True


def default_speed_options(device: torch.device | str = "cpu") -> SpeedOptions:
    """Measured defaults — what :func:`skiplab.train.train` applies: channels_last; on CPU the allocator tuning,
    on CUDA the fused optimizer step (no effect measured on CPU); compile stays opt-in because its one-off cost
    only pays back on runs of more than a few minutes."""
    dev = torch.device(device)
    return SpeedOptions(channels_last=True, compile=False, fused_optimizer=dev.type == "cuda",
                        tune_malloc=dev.type == "cpu")


def fused_supported(optimizer_cls: type[torch.optim.Optimizer], device: torch.device | str) -> bool:
    """Whether ``optimizer_cls(..., fused=True)`` works for parameters on ``device`` in this torch build."""
    if "fused" not in inspect.signature(optimizer_cls.__init__).parameters:
        return False
    dev = torch.device(device)
    try:
        p = nn.Parameter(torch.zeros(2, device=dev))
        opt = optimizer_cls([p], lr=0.1, fused=True)
        p.grad = torch.ones_like(p)
        opt.step()
    except (RuntimeError, ValueError, TypeError, AssertionError):  # AssertionError: a build without CUDA
        return False
    return True


def optimizer_kwargs(optimizer_cls: type[torch.optim.Optimizer], device: torch.device | str, *,
                     fused: bool = True) -> dict[str, bool]:
    """Extra keyword arguments for ``optimizer_cls``: ``{"fused": True}`` where supported and wanted, else
    ``{}`` (PyTorch's default implementation)."""
    return {"fused": True} if fused and fused_supported(optimizer_cls, device) else {}


def prepare_for_training(model: nn.Module, *, channels_last: bool = True, compile: bool = False,
                         compile_mode: str | None = None) -> nn.Module:
    """Apply the model-side speed options; returns the module to call in the training step.

    ``channels_last`` converts the 4-D weights in place (feed inputs in channels_last too: ``BatchLoader(...,
    channels_last=True)`` or :func:`to_channels_last`).  With ``compile`` the result is ``torch.compile(model)``,
    which shares ``model``'s parameters: build the optimizer and save checkpoints from ``model`` itself."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if channels_last and channels_last_hazard(model, next((p.device for p in model.parameters()), "cpu")):
        channels_last = False  # see channels_last_hazard: NCHW rather than a crash in backward
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(model, mode=compile_mode)
    return model


def channels_last_hazard(model: nn.Module, device: torch.device | str = "cpu") -> str | None:
    """The name of a layer whose channels_last backward crashes this torch build on ``device``, or None.

    torch 2.13's CPU (oneDNN) backward of a 1x1 convolution with stride > 1 and 2-7 input channels corrupts the
    heap (abort or segfault; reproduced with a bare ``nn.Conv2d(4, 8, 1, stride=2)`` on 8x8 inputs).  Such
    convolutions appear in narrow nets' downsampling shortcuts (e.g. width 0.25); NCHW is safe."""
    if torch.device(device).type != "cpu":
        return None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and 1 < m.in_channels < 8:
            return name
    return None


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last if it is a 4-D batch of images, unchanged otherwise."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def matmul_peak_gflops(threads: int | None = None, *, n: int = 2048, reps: int = 7, clock: str = "wall",
                       dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul rate in GFLOP/s (best of ``reps`` ``n x n`` products, 2 FLOPs per multiply-add) at
    ``threads`` threads (default: the current setting, which is restored) — the yardstick the benchmarks report
    achieved GFLOP/s against.  ``clock="cpu"`` times process CPU time (with one thread it does not count the time
    other processes take the core).  ``dtype``: float32 (default) or ``torch.bfloat16`` — the bf16 peak, the
    yardstick for bf16-autocast figures (on a CPU without native bf16 it measures the emulated, slow path)."""
    import time

    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu'; got {clock!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16; got {dtype!r}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        t = time.perf_counter()
        while time.perf_counter() - t < 1.0:  # wake the thread pool and the clocks up before timing
            a @ b
        now = time.process_time if clock == "cpu" else time.perf_counter
        best = float("inf")
        for _ in range(reps):
            t = now()
            a @ b
            best = min(best, now() - t)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


# ------------------------------------------------------------------------------------- what this CPU has
# CPU flags (Linux /proc/cpuinfo names) that mean bf16 arithmetic in hardware: AVX-512 BF16 (Zen 4, Cooper Lake
# and later Xeons), AMX tiles (Sapphire Rapids), and Arm's BF16 extension ("bf16" in the Features line).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (``flags`` on x86, ``Features`` on Arm); empty where unknown."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it ("unknown CPU" where it does not)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


_BF16_PROBE: dict[int, float] = {}


def bf16_matmul_speedup(n: int = 512, reps: int = 5) -> float:
    """bf16 / float32 matmul rate on this CPU at ``n x n`` (best of ``reps``; cached per process): the probe for
    machines whose flags are unknown.  >1: bf16 is faster here."""
    import time

    if n not in _BF16_PROBE:
        best = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b
            t_best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                a @ b
                t_best = min(t_best, time.perf_counter() - t)
            best[dtype] = t_best
        _BF16_PROBE[n] = best[torch.float32] / best[torch.bfloat16]
    return _BF16_PROBE[n]


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and why we think so.

    The flags decide where the kernel reports them; elsewhere a short probe (bf16 matmul at least 1.3x float32)
    does.  ``SKIPLAB_CPU_BF16=0/1`` overrides both (for a VM that hides its flags, or to compare)."""
    import os

    forced = os.environ.get("SKIPLAB_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"SKIPLAB_CPU_BF16={forced}"
    flags = cpu_flags()
    if flags:
        found = [f for f in NATIVE_BF16_FLAGS if f in flags]
        if found:
            return True, f"CPU flags include {', '.join(found)}"
        return False, f"CPU flags lack {' / '.join(NATIVE_BF16_FLAGS)} (bf16 would be emulated)"
    ratio = bf16_matmul_speedup()
    return ratio >= 1.3, f"probe: bf16 matmul {ratio:.2f}x float32 (flags unknown)"


def auto_autocast_dtype(device: torch.device | str) -> tuple[torch.dtype | None, str]:
    """What ``amp="auto"`` runs under on ``device``, and why: bf16 on a CUDA GPU that has it (fp16 on older ones),
    bf16 on a CPU with native bf16, float32 (None) on other CPUs."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "CUDA device supports bf16"
        return torch.float16, "CUDA device without bf16: fp16 with a gradient scaler"
    if dev.type != "cpu":
        return None, f"{dev.type}: float32"
    native, why = native_bf16()
    return (torch.bfloat16 if native else None), why


def cpu_report() -> dict[str, object]:
    """What skiplab detected on this machine and the speed defaults it chose from it (``skiplab info``)."""
    dtype, why = auto_autocast_dtype("cpu")
    flags = cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "asimd", "sve") if f in flags]
    return {
        "cpu": cpu_model(),
        "cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "simd_flags": simd,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "amp_auto_cpu": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "amp_auto_reason": why,
        "landscape_engine_auto": landscape_engine_choice()[0],
        "landscape_engine_reason": landscape_engine_choice()[1],
    }


def landscape_engine_choice() -> tuple[str, str]:
    """The loss landscape's CPU engine for ``engine="auto"``, and why.  Measured: on an AVX2-only EPYC
    onnxruntime's prepacked convolutions ran ~1.27x torch's per grid point; on an AVX-512 BF16 EPYC torch (oneDNN
    with AVX-512) ran 1.33x onnxruntime (2.06 vs 1.55 points/s, resnet20, 1,000 images).  So: torch where the CPU
    has AVX-512, onnxruntime (when installed) elsewhere."""
    from skiplab.export import onnxruntime_available

    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return "torch", f"torch CPU capability {capability}: oneDNN's AVX-512 kernels beat onnxruntime here"
    if onnxruntime_available():
        return "onnxruntime", f"torch CPU capability {capability}: onnxruntime's prepacked convolutions are faster"
    return "torch", "onnxruntime is not installed"
