"""Plot a `skiplab train` run's curve (test and training accuracy per epoch, and the learning rate) and print its
epoch table — the time-to-accuracy figure of BENCHMARKS.md.

    .venv/bin/python benchmarks/plot_run.py runs/resnet20-fast --target 91.25 --out docs/img/resnet20_fast.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from skiplab.io import atomic_write_bytes  # noqa: E402


def epochs_of(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == "epoch"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--target", type=float, default=None, help="test accuracy (%%) to mark, e.g. 91.25")
    p.add_argument("--out", type=Path, default=None, help="PNG to write")
    args = p.parse_args()
    eps = epochs_of(args.run)
    if not eps:
        raise SystemExit(f"{args.run}/metrics.jsonl has no epoch records yet")
    print(f"{'epoch':>5} {'train acc %':>11} {'test acc %':>10} {'lr':>8} {'epoch s':>8} {'img/s':>6} {'wall min':>8}")
    first = None
    for r in eps:
        test = 100 * r["test_acc"] if r.get("test_acc") is not None else float("nan")
        if args.target is not None and first is None and test >= args.target:
            first = r
        print(f"{r['epoch']:>5} {100 * r['train_acc']:>11.2f} {test:>10.2f} {r['lr']:>8.4f} {r['epoch_time_s']:>8.1f} "
              f"{r['images_per_s']:>6.0f} {r['time_s'] / 60:>8.1f}")
    best = max(eps, key=lambda r: r.get("test_acc") or 0)
    print(f"best test accuracy {100 * best['test_acc']:.2f}% at epoch {best['epoch']}; final "
          f"{100 * eps[-1]['test_acc']:.2f}% after {eps[-1]['time_s'] / 60:.1f} min")
    if args.target is not None:
        print(f"target {args.target}%: " + (f"first reached at epoch {first['epoch']} ({first['time_s'] / 60:.1f} min)"
                                            if first else "not reached"))
    if args.out:
        fig = Figure(figsize=(7.5, 4.2), layout="constrained")
        ax = fig.subplots()
        xs = [r["epoch"] for r in eps]
        ax.plot(xs, [100 * r["test_acc"] for r in eps], "o-", ms=3, color="#0072B2", label="test")
        ax.plot(xs, [100 * r["train_acc"] for r in eps], "--", color="#E69F00", label="training (running, augmented)")
        if args.target is not None:
            ax.axhline(args.target, color="0.3", ls=":", label=f"target {args.target}%")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(max(0, min(100 * min(r["test_acc"], r["train_acc"]) for r in eps) - 5), 100)
        lr = ax.twinx()
        lr.plot(xs, [r["lr"] for r in eps], color="0.6", lw=1)
        lr.set_ylabel("learning rate (grey)")
        ax.legend(loc="lower right")
        manifest = json.loads((args.run / "manifest.json").read_text())
        fig.suptitle(f"{manifest['model']['name']} on {manifest['config']['data']} "
                     f"({manifest['config'].get('recipe') or 'custom'} recipe)", x=0.02, ha="left")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        atomic_write_bytes(args.out, buf.getvalue())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
