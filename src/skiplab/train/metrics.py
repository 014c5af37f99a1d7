"""Metric records of a run (``metrics.jsonl`` + ``metrics.csv``), the console display (rich bar or lines), and
the device-side accumulators the loop sums losses and hits into without a host sync per step.

Records are ``{"kind": "step" | "epoch", "step", "epoch", ...}``.  Both files are appended to as training
goes; a resumed run first drops every record past the checkpoint it resumes from, so the files read as if
the run had never stopped (steps a killed process logged after its last checkpoint are repeated, not doubled).
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from skiplab.io import atomic_write_text, to_jsonable
from skiplab.train import distributed as dist_

# wall-clock fields of the records: everything else in them is reproducible bit for bit (seeded runs, resumes)
TIMING_FIELDS = ("images_per_s", "epoch_time_s", "data_time_s", "eval_time_s", "time_s")
CSV_COLUMNS = ("kind", "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
               "test_acc", "images_per_s", "epoch_time_s", "data_time_s", "eval_time_s", "time_s")
# segmentation runs: acc is pixel accuracy; mean IoU and boundary F1 (skiplab.train.segmentation) per split
SEG_CSV_COLUMNS = CSV_COLUMNS + ("val_miou", "val_boundary_f1", "test_miou", "test_boundary_f1")


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl`` and ``run_dir/metrics.csv`` (``columns``); with
    ``run_dir=None`` it only keeps them in memory (``records``)."""

    def __init__(self, run_dir: Path | None, columns: tuple[str, ...] = CSV_COLUMNS) -> None:
        self.run_dir = run_dir
        self.columns = columns
        self.records: list[dict[str, Any]] = []

    @property
    def jsonl(self) -> Path | None:
        return self.run_dir / "metrics.jsonl" if self.run_dir else None

    @property
    def csv(self) -> Path | None:
        return self.run_dir / "metrics.csv" if self.run_dir else None

    def start(self, *, resume_step: int | None) -> None:
        """Create the files (fresh run) or cut them back to ``resume_step`` (resumed run)."""
        if self.run_dir is None:
            return
        kept: list[dict[str, Any]] = []
        if resume_step is not None and self.jsonl.exists():
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(rec, dict) and rec.get("step", math.inf) <= resume_step:
                    kept.append(rec)
        self.records = kept
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in kept))
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
        atomic_write_text(self.csv, buf.getvalue())

    def write(self, record: dict[str, Any]) -> None:
        record = to_jsonable(record)
        self.records.append(record)
        if self.run_dir is None:
            return
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore", lineterminator="\n").writerow(record)


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Display:
    """What a person sees while training: a rich progress bar (``bar``), one line per epoch (``lines``) or
    nothing (``none``).  Everything goes to stderr so stdout stays clean for results."""

    def __init__(self, mode: str, total_steps: int, console: Console | None = None) -> None:
        self.mode = mode
        self.total_steps = total_steps
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None
        self._t0 = time.perf_counter()
        self._step0: int | None = None

    def start(self, step: int) -> None:
        self._step0 = step
        self._t0 = time.perf_counter()
        if self.mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s  "
                           "lr {task.fields[lr]}  ETA {task.fields[eta]}"),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total_steps, completed=step, epoch="-",
                                                 loss="-", acc="-", ips="-", lr="-", eta="?")

    def eta(self, step: int) -> float:
        done = step - (self._step0 or 0)
        if done <= 0:
            return math.inf
        return (time.perf_counter() - self._t0) / done * (self.total_steps - step)

    def update(self, rec: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=rec["step"], epoch=rec["epoch"],
                                  loss=_fmt(rec["train_loss"]), acc=_fmt(rec["train_acc"], pct=True),
                                  ips=f"{rec['images_per_s']:.0f}", lr=f"{rec['lr']:.4g}",
                                  eta=_eta(self.eta(rec["step"])))

    def epoch(self, rec: dict[str, Any]) -> None:
        if self.mode == "none":
            return
        parts = [f"epoch {rec['epoch']:>3}", f"step {rec['step']}", f"loss {_fmt(rec['train_loss'])}",
                 f"acc {_fmt(rec['train_acc'], True)}"]
        for split in ("val", "test"):
            if rec.get(f"{split}_acc") is not None:
                parts.append(f"{split} {_fmt(rec[f'{split}_loss'])} / {_fmt(rec[f'{split}_acc'], True)}")
            if rec.get(f"{split}_miou") is not None:  # segmentation: acc above is pixel accuracy
                parts.append(f"mIoU {_fmt(rec[f'{split}_miou'], True)} BF1 {_fmt(rec[f'{split}_boundary_f1'], True)}")
        parts += [f"lr {rec['lr']:.4g}", f"{rec['images_per_s']:.0f} img/s", f"{rec['epoch_time_s']:.1f}s",
                  f"ETA {_eta(self.eta(rec['step']))}"]
        line = "  ".join(parts)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False)

    def message(self, text: str) -> None:
        if self.mode != "none":
            self.console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def resolve_mode(mode: str, has_out: bool) -> str:
    if mode != "auto":
        return mode
    if not has_out:
        return "none"
    return "bar" if sys.stderr.isatty() else "lines"


# ------------------------------------------------------------------------------------------------ accumulators
def zero_acc(device: torch.device, first_bad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    z = lambda dt: torch.zeros((), dtype=dt, device=device)  # noqa: E731
    return {"loss": z(torch.float64), "correct": z(torch.int64), "seen": z(torch.int64),
            "w_loss": z(torch.float64), "w_correct": z(torch.int64), "w_seen": z(torch.int64),
            "first_bad": first_bad if first_bad is not None else torch.full((), -1, dtype=torch.int64, device=device)}


def accumulate(acc: dict[str, torch.Tensor], loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, n: int,
                step: int) -> None:
    """Device-side running sums (no host sync): epoch and log-window loss/correct/seen, first bad step."""
    loss_n = loss.double() * n
    correct = (logits.argmax(1) == y).sum()
    for p in ("", "w_"):
        acc[p + "loss"] += loss_n
        acc[p + "correct"] += correct
        acc[p + "seen"] += n
    bad = ~torch.isfinite(loss)
    acc["first_bad"] = torch.where(bad & (acc["first_bad"] < 0), torch.full_like(acc["first_bad"], step),
                                   acc["first_bad"])


def _reduced(acc: dict[str, torch.Tensor], prefix: str, info: dist_.DistInfo) -> tuple[float, float]:
    t = torch.stack([acc[prefix + "loss"], acc[prefix + "correct"].double(), acc[prefix + "seen"].double()])
    t = dist_.all_sum(t.clone(), info)
    seen = max(1.0, float(t[2]))
    return float(t[0]) / seen, float(t[1]) / seen


def window_record(acc: dict[str, torch.Tensor], info: dist_.DistInfo, step: int, epoch: int, lr: float,
                   window: dict[str, Any]) -> dict[str, Any]:
    loss, accuracy = _reduced(acc, "w_", info)
    for k in ("w_loss", "w_correct", "w_seen"):
        acc[k].zero_()
    now = time.perf_counter()
    ips = window["images"] / max(1e-9, now - window["t"])
    window.update(t=now, images=0)
    return {"kind": "step", "step": step, "epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_acc": accuracy,
            "images_per_s": ips}


def epoch_record(acc: dict[str, torch.Tensor], info: dist_.DistInfo, step: int, epoch: int, lr: float,
                  epoch_time: float, images: int, elapsed: float) -> dict[str, Any]:
    loss, accuracy = _reduced(acc, "", info)
    return {"kind": "epoch", "epoch": epoch, "step": step, "lr": lr, "train_loss": loss, "train_acc": accuracy,
            "val_loss": None, "val_acc": None, "test_loss": None, "test_acc": None,
            "images_per_s": images / max(1e-9, epoch_time), "epoch_time_s": epoch_time, "time_s": elapsed}
