"""`skiplab bench infer` and `skiplab bench step`: quick speed tables for one model on this machine.

Variants are timed in turns (round-robin, one timing of each per round) so a change in machine load hits all of
them alike; the table shows medians.  The full benchmark scripts (reference comparisons, FLOP rates, memory) are
in ``benchmarks/``.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import typer
from rich.table import Table

from skiplab.cli.app import app, console

bench_app = typer.Typer(help="Speed tables: inference variants, training-step options.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Row:
    variant: str
    latency_ms: float  # batch 1, median
    throughput: float  # images/s at the large batch, median
    max_abs_diff: float  # vs the eager model at the large batch
    prepare_s: float  # building / folding / compiling (with its warmup calls)
    top1_agree: float = 1.0  # fraction of the large batch whose argmax equals the eager model's


def _time_round_robin(fns: dict[str, Callable[[], object]], rounds: int, clock: str) -> dict[str, float]:
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = now()
            fn()
            times[k].append(now() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _check_common(threads: Optional[int], rounds: int, clock: str, batch: int) -> None:
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1; got {rounds}")
    if batch < 1:
        raise ValueError(f"--batch must be >= 1; got {batch}")
    if clock not in CLOCKS:
        raise ValueError(f"--clock must be wall or cpu; got {clock!r}")


def measure_inference(name: str, *, batch: int = 32, input_size: tuple[int, ...] | None = None,
                      compile: bool = True, onnx: bool = True, rounds: int = 5, clock: str = "wall", seed: int = 0,
                      bf16: bool | None = None, **model_kwargs: object) -> list[Row]:
    """Eager float32 (NCHW, BN unfolded) vs BN folded vs folded + channels_last vs compiled (folded,
    channels_last, inductor with frozen weights) vs the ONNX export run by onnxruntime (with ``onnx``, when
    onnxruntime is installed) vs, with ``bf16``, the folded + channels_last copy cast to bfloat16
    (``optimize_for_inference(dtype=torch.bfloat16)``; default: where :func:`skiplab.speed.native_bf16` finds
    native bf16): batch-1 latency, batch-``batch`` throughput, the largest output difference from eager and the
    share of the batch whose argmax agrees with eager's — all under ``torch.inference_mode``."""
    import tempfile

    import torch

    from skiplab.export import OnnxModel, export_onnx, onnxruntime_available, optimize_for_inference
    from skiplab.registry import create_model, get_entry

    _check_common(None, rounds, clock, batch)
    if bf16 is None:
        from skiplab.speed import native_bf16

        bf16 = native_bf16()[0]
    size = tuple(input_size) if input_size else get_entry(name).input_size
    torch.manual_seed(seed)
    model = create_model(name, **model_kwargs).eval()
    x1, xb = torch.randn(1, *size), torch.randn(batch, *size)
    variants: dict[str, tuple[torch.nn.Module, float]] = {"eager": (model, 0.0)}
    builds = {"folded": dict(channels_last=False), "folded+CL": dict(channels_last=True)}
    if compile:
        builds["compiled"] = dict(channels_last=True, compile=True)
    if bf16:
        builds["folded+CL+bf16"] = dict(channels_last=True, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = model(xb)
        for label, kw in builds.items():
            t = time.perf_counter()
            m = optimize_for_inference(model, **kw)
            m(x1), m(xb)  # compile (both shapes) and oneDNN's first-call setup happen here, not in the timings
            variants[label] = (m, time.perf_counter() - t)
        if onnx and onnxruntime_available():
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                path = export_onnx(model, os.path.join(tmp, f"{name}.onnx"), input_size=size)
                m = OnnxModel(path, threads=torch.get_num_threads())  # the session holds the graph in memory
            m(x1), m(xb)
            variants["onnxruntime"] = (m, time.perf_counter() - t)
        outs = {k: m(xb) for k, (m, _) in variants.items()}
        diffs = {k: float((o - want).abs().max()) for k, o in outs.items()}
        agree = {k: float((o.argmax(-1) == want.argmax(-1)).float().mean()) if o.dim() == 2 else 1.0
                 for k, o in outs.items()}
        model(x1)
        lat = _time_round_robin({k: (lambda m=m: m(x1)) for k, (m, _) in variants.items()}, rounds, clock)
        thr = _time_round_robin({k: (lambda m=m: m(xb)) for k, (m, _) in variants.items()}, rounds, clock)
    return [Row(k, lat[k] * 1e3, batch / thr[k], diffs[k], variants[k][1], agree[k]) for k in variants]


@bench_app.command("infer")
def infer_cmd(
    model: str = typer.Option(..., "--model", help="Registered model name, e.g. resnet50."),
    batch: int = typer.Option(32, help="Batch size of the throughput column."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="One sample's shape, e.g. 3,224,224."),
    compile: bool = typer.Option(True, "--compile/--no-compile", help="Include the torch.compile variant."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Include onnxruntime (if installed)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Include the bfloat16 copy of the folded "
                                        "net (default: where the CPU computes bf16 natively)."),
    rounds: int = typer.Option(5, help="Timed rounds per variant (medians are shown)."),
    threads: Optional[int] = typer.Option(None, help="Intra-op threads, torch and onnxruntime (default: torch's)."),
    clock: str = typer.Option("wall", help="wall, or cpu (process CPU time; robust on a shared 1-thread run)."),
) -> None:
    """Inference speed of one model: eager vs BN-folded vs folded+channels_last vs compiled vs onnxruntime
    (vs a bfloat16 copy where bf16 is native)."""
    import torch

    from skiplab.speed import native_bf16
    from skiplab.summary import parse_input_size

    _check_common(threads, rounds, clock, batch)
    if threads is not None:
        torch.set_num_threads(threads)
    size = parse_input_size(input_size) if input_size else None
    native, why = native_bf16()
    if bf16 is None:
        bf16 = native
    rows = measure_inference(model, batch=batch, input_size=size, compile=compile, onnx=onnx, rounds=rounds,
                             clock=clock, bf16=bf16)
    base = rows[0]
    bf16_note = (f"folded+CL+bf16: the folded+CL copy cast to bfloat16, float32 in and out "
                 f"(native bf16 {'detected' if native else 'NOT detected: emulated, slow'}: {why}); "
                 if bf16 else f"no bf16 row (native bf16 not detected: {why}; --bf16 adds it); ")
    table = Table(title=f"{model} inference, {torch.get_num_threads()} thread(s), {clock} clock, medians of {rounds}",
                  caption="eager: float32 NCHW, BN unfolded; folded: BN folded into convs; CL: channels_last; "
                          "compiled: folded+CL+torch.compile (inductor, frozen weights); onnxruntime: the "
                          f"folded ONNX export (skiplab.export.export_onnx); {bf16_note}diff and top-1 agreement "
                          f"(argmax equal to eager's, batch {batch} of random inputs): vs eager")
    for col in ("variant", "batch-1 ms", "speedup", f"batch-{batch} img/s", "speedup", "max |diff|", "top-1 agree",
                "prepare s"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col == "variant")
    for r in rows:
        table.add_row(r.variant, f"{r.latency_ms:.2f}", f"{base.latency_ms / r.latency_ms:.2f}x",
                      f"{r.throughput:.1f}", f"{r.throughput / base.throughput:.2f}x", f"{r.max_abs_diff:.1e}",
                      f"{100 * r.top1_agree:.0f}%", f"{r.prepare_s:.1f}")
    console.print(table)


def measure_step(name: str, *, batch: int = 128, input_size: tuple[int, ...] | None = None, compile: bool = False,
                 rounds: int = 5, clock: str = "wall", seed: int = 0, **model_kwargs: object) -> dict[str, float]:
    """Seconds per training step (forward, cross-entropy, backward, SGD) of our model: plain eager vs
    channels_last + fused SGD (+ compile).  Images/s is ``batch / seconds``."""
    import torch
    import torch.nn.functional as F

    from skiplab.registry import create_model, get_entry
    from skiplab.speed import optimizer_kwargs, prepare_for_training, to_channels_last

    _check_common(None, rounds, clock, batch)
    size = tuple(input_size) if input_size else get_entry(name).input_size
    torch.manual_seed(seed)
    x = torch.randn(batch, *size)
    configs = {"eager": dict(channels_last=False, compile=False, fused=False),
               "CL+fused": dict(channels_last=True, compile=False, fused=True)}
    if compile:
        configs["CL+fused+compile"] = dict(channels_last=True, compile=True, fused=True)
    steps: dict[str, Callable[[], None]] = {}
    for label, c in configs.items():
        model = create_model(name, **model_kwargs).train()
        y = torch.randint(0, model.head.fc.out_features if hasattr(model.head, "fc") else 2, (batch,))
        fwd = prepare_for_training(model, channels_last=c["channels_last"], compile=c["compile"])
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                              **optimizer_kwargs(torch.optim.SGD, "cpu", fused=c["fused"]))
        xi = to_channels_last(x) if c["channels_last"] else x

        def step(fwd=fwd, opt=opt, xi=xi, y=y) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(fwd(xi), y).backward()
            opt.step()

        step(), step()  # warmup (and compile)
        steps[label] = step
    return _time_round_robin(steps, rounds, clock)


@bench_app.command("step")
def step_cmd(
    model: str = typer.Option(..., "--model", help="Registered classifier name, e.g. resnet20."),
    batch: int = typer.Option(128, help="Batch size."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="One sample's shape, e.g. 3,32,32."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="Include a torch.compile variant."),
    malloc: bool = typer.Option(True, "--malloc/--no-malloc", help="skiplab.speed.tune_malloc() first "
                                "(process-wide: applies to every variant)."),
    rounds: int = typer.Option(5, help="Timed rounds per variant (medians are shown)."),
    threads: Optional[int] = typer.Option(None, help="torch intra-op threads (default: torch's)."),
    clock: str = typer.Option("wall", help="wall, or cpu (process CPU time)."),
) -> None:
    """Training-step speed of one model: plain eager vs the skiplab.speed options."""
    import torch

    from skiplab.speed import tune_malloc
    from skiplab.summary import parse_input_size

    _check_common(threads, rounds, clock, batch)
    if threads is not None:
        torch.set_num_threads(threads)
    tuned = tune_malloc() if malloc else False
    size = parse_input_size(input_size) if input_size else None
    secs = measure_step(model, batch=batch, input_size=size, compile=compile, rounds=rounds, clock=clock)
    base = next(iter(secs.values()))
    table = Table(title=f"{model} training step, batch {batch}, {torch.get_num_threads()} thread(s), {clock} "
                        f"clock, allocator tuning {'on' if tuned else 'off'}, medians of {rounds}")
    table.caption = ("eager: NCHW, PyTorch's default SGD; CL+fused: channels_last and fused SGD "
                     "(skiplab.speed); compile: torch.compile")
    for col in ("variant", "ms/step", "images/s", "speedup"):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for k, s in secs.items():
        table.add_row(k, f"{s * 1e3:.0f}", f"{batch / s:.1f}", f"{base / s:.2f}x")
    console.print(table)


@app.command("info")
def info_cmd() -> None:
    """What skiplab detected on this machine (CPU, flags, native bf16, GPU) and the speed defaults chosen from it."""
    from skiplab.speed import cpu_report, default_speed_options

    report = cpu_report()
    table = Table(title="this machine, as skiplab sees it")
    table.add_column("what")
    table.add_column("value")
    for key, value in report.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    opts = default_speed_options("cuda" if report["cuda"] else "cpu")
    table.add_row("train() defaults", f"channels_last={opts.channels_last}, tune_malloc={opts.tune_malloc}, "
                                      f"fused_optimizer={opts.fused_optimizer}, compile={opts.compile}")
    console.print(table)
