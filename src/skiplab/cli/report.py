"""`skiplab report --out DIR [--quick] [--reuse]` and `skiplab demo`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from skiplab.cli.app import app, console
from skiplab.cli.experiment import progress_bar

DEMO_OUT = Path("reports/demo")


def run_report(out: Path, *, quick: bool, reuse: bool, only: list[str] | None, setting: str | None = None,
               saved_only: bool = False) -> Path:
    from skiplab.report.build import build_report, select

    specs = select(only)
    with progress_bar() as bar:
        overall = bar.add_task("all experiments", total=len(specs))
        current: dict[str, int] = {}

        def on_experiment(i: int, n: int, spec):
            bar.update(overall, completed=i)
            if current:
                bar.update(current.pop("task"), visible=False)
            current["task"] = bar.add_task(spec.name, total=None)

            def progress(done: int, total: int, what: str) -> None:
                bar.update(current["task"], completed=done, total=total, description=f"{spec.name}: {what}")

            return progress

        index = build_report(out, quick=quick, reuse=reuse, names=only, on_experiment=on_experiment,
                             setting=setting, saved_only=saved_only)
        bar.update(overall, completed=len(specs))
    return index


@app.command("report")
def report_cmd(
    out: Path = typer.Option(..., "--out", help="Report folder: index.html, manifest.json, one folder per experiment."),
    quick: bool = typer.Option(False, "--quick", help="Quick (demo) settings for every experiment."),
    setting: Optional[str] = typer.Option(None, "--setting", help="quick, cifar (real data, ~3 h on 2 cores, nets "
                                                                  "cached) or full (the papers' budgets)."),
    reuse: bool = typer.Option(False, "--reuse", help="Reuse OUT/<experiment>/result.json when its settings match."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only this experiment (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute into a folder that already holds a report."),
    saved_only: bool = typer.Option(False, "--saved-only", help="Run nothing: the page of the results saved in OUT "
                                                                 "(e.g. a real-data set produced in pieces)."),
) -> None:
    """Run every registered experiment (or reuse saved results) and write one self-contained HTML page."""
    if (out / "index.html").exists() and not (reuse or overwrite or saved_only):
        raise ValueError(f"{out} already holds a report (index.html); pass --reuse to keep its saved results where "
                         f"the settings match, --overwrite to recompute everything, or choose another --out")
    t0 = time.perf_counter()
    index = run_report(out, quick=quick, reuse=reuse, only=only, setting=setting, saved_only=saved_only)
    console.print(f"report written in {time.perf_counter() - t0:.0f} s: {index.resolve()}", highlight=False)
    _exit_if_failed(out)


@app.command("demo")
def demo_cmd() -> None:
    """`skiplab report --quick --out reports/demo --overwrite` (the demo's own folder, rewritten each time),
    then print where the page is."""
    t0 = time.perf_counter()
    index = run_report(DEMO_OUT, quick=True, reuse=False, only=None)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s.\nOpen the report: {index.resolve()}",
                  highlight=False)
    _exit_if_failed(DEMO_OUT)


def _exit_if_failed(out: Path) -> None:
    """The page is written even if an experiment raised; the command still fails (status 1) and names it."""
    from skiplab.io import read_json

    failed = [s for s in read_json(out / "manifest.json")["sections"] if s.get("error")]
    for s in failed:
        console.print(f"[red]experiment {s['experiment']} failed:[/] {s['error']}", highlight=False)
    if failed:
        raise SystemExit(1)
