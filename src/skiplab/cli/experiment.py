"""`skiplab experiment NAME [--quick] [--set KEY=VALUE ...] --out DIR`: run one experiment and save its folder."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from skiplab.cli.app import app, console
from skiplab.experiments import experiments, get_experiment
from skiplab.experiments.base import parse_override


def progress_bar() -> Progress:
    """The progress display shared by `experiment`, `report` and `demo` (to stderr-safe rich console)."""
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}", justify="left"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False)


def print_claims(result) -> None:
    for c in getattr(result, "claims", []):
        verdict = "[green]held[/]" if c.held else "[red]did not hold[/]"
        console.print(f"  {verdict}: {c.statement}\n    [dim]{c.evidence}[/]", highlight=False)


@app.command("experiment")
def experiment_cmd(
    name: Optional[str] = typer.Argument(None, help="Experiment to run (omit, or --list, to list them)."),
    quick: bool = typer.Option(False, "--quick/--full", help="--quick: the small demo setting (seconds); --full "
                                                             "(default): the paper's setting (a GPU run)."),
    setting: Optional[str] = typer.Option(None, "--setting", help="quick, cifar or full. cifar: real CIFAR-10 / "
                                          "MNIST at paper widths on a budget for a 2-core CPU; trained nets are "
                                          "cached, so a stopped run continues where it stopped."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for result.json, PNGs and manifest.json "
                                                             "(default: reports/<NAME>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a result already saved in --out."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting, KEY=VALUE (tuples comma-separated); "
                                                     "repeatable."),
    list_: bool = typer.Option(False, "--list", help="List the registered experiments and exit."),
) -> None:
    """Run one experiment, save its Result (JSON), figures (PNG) and manifest, and print the verdicts."""
    if list_ or name is None:
        table = Table(title="experiments (skiplab experiment NAME --quick --out DIR)")
        table.add_column("name")
        table.add_column("question")
        for spec in experiments():
            table.add_row(spec.name, spec.question)
        console.print(table)
        return
    from skiplab.report.artifacts import rerun_command, save_experiment

    spec = get_experiment(name)
    overrides = dict(parse_override(spec.config_cls, s) for s in set_)
    from skiplab.experiments.base import resolve_setting

    setting = resolve_setting(quick, setting)
    cfg = spec.config(setting=setting, **overrides)
    folder = out if out is not None else Path("reports") / name
    if (folder / "result.json").exists() and not overwrite:  # a full run can take hours: never lose one silently
        raise ValueError(f"{folder} already holds a saved {name} result (result.json); pass --overwrite to replace "
                         f"it, or choose another --out")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every rank runs (collectives); only rank 0 reports
        spec.run(cfg)
        return
    t0 = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(name, total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{name}: {what}")

        result = spec.run(cfg, progress=progress)
    saved = save_experiment(spec, result, folder, setting=setting,
                            command=rerun_command(name, folder, setting=setting, overrides=list(set_)))
    print_claims(result)
    console.print(f"ran in {time.perf_counter() - t0:.1f} s; wrote {saved.result}, {saved.manifest} and "
                  f"{len(saved.figures)} figures in {saved.directory}", highlight=False)
