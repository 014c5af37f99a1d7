"""`skiplab data list|info|prepare`: what datasets exist, which files they take, and decoding them into the cache."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from skiplab.cli.app import app, console

data_app = typer.Typer(help="Datasets: list them, show their files and URLs, decode them into the cache.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list")
def list_cmd() -> None:
    """Every dataset name `--data` and load_dataset() accept."""
    from skiplab.data import dataset_info, list_datasets

    table = Table(title="datasets (skiplab data info NAME for files and URLs)")
    for col in ("name", "task", "shape", "classes", "description"):
        table.add_column(col)
    for name in list_datasets():
        info = dataset_info(name)
        shape = "x".join(map(str, info.image_shape)) if all(info.image_shape) else "any"
        table.add_row(name, info.task, shape, str(info.num_classes or "any"), info.description)
    console.print(table)


@data_app.command("info")
def info_cmd(name: str = typer.Argument(..., help="Dataset name (skiplab data list)."),
             data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder (or archive) to look in.")
             ) -> None:
    """Accepted file forms, official URLs and md5s, options, and where files are looked for."""
    from skiplab.data import cache_root, data_root, dataset_info

    info = dataset_info(name)
    console.print(f"[bold]{info.name}[/]: {info.description}")
    console.print(f"splits: {', '.join(info.splits) or 'any split folder'}; options: {', '.join(info.options)}")
    console.print("accepted forms: " + "; ".join(info.forms))
    for spec in info.download_specs():
        console.print(f"  {spec.filename}  {spec.size:,} bytes  md5 {spec.md5}  {spec.urls[0]}")
    console.print(f"looked for in: {data_root(data_dir)}   cache: {cache_root()}", highlight=False)


@data_app.command("prepare")
def prepare_cmd(name: str = typer.Argument(..., help="Dataset name (skiplab data list)."),
                data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder (or archive) holding it."),
                download: bool = typer.Option(False, "--download", help="Fetch missing official files."),
                strict: bool = typer.Option(False, "--strict", help="Refuse anything but the official release.")
                ) -> None:
    """Decode every split once into the cache (later loads take milliseconds) and print what was found."""
    from skiplab.data import NonOfficialDataWarning, dataset_info, load_dataset

    info = dataset_info(name)
    opts = {"strict": True} if strict and "strict" in info.options else {}
    table = Table(title=f"{info.name}")
    for col in ("split", "images", "shape", "classes", "mean", "std", "seconds"):
        table.add_column(col)
    for split in info.splits or ("train", "test"):
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NonOfficialDataWarning)
            ds = load_dataset(info.name, split, data_dir=data_dir, download=download, **opts)
        for w in caught:
            console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
        table.add_row(split, f"{len(ds):,}", "x".join(map(str, ds.image_shape)), str(ds.num_classes),
                      " ".join(f"{m:.4f}" for m in ds.mean), " ".join(f"{s:.4f}" for s in ds.std),
                      f"{time.perf_counter() - t0:.2f}")
    console.print(table)
