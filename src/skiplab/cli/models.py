"""`skiplab models`, `skiplab summary` and `skiplab convert`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from skiplab.cli.app import app, console
from skiplab.registry import list_models
from skiplab.summary import parse_input_size, summarize


def _fmt_int(n: int) -> str:
    return f"{n:,}"


@app.command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*' or '*plain*'."),
    family: Optional[str] = typer.Option(None, help="Only this family (resnet, cifar_resnet, densenet, ...)."),
) -> None:
    """List registered models: name, family, params, GFLOPs at the default input, skip connections."""
    names = list_models(pattern, family=family)
    if not names:
        raise ValueError(f"no model matches pattern {pattern!r}" + (f" in family {family!r}" if family else ""))
    table = Table(title=f"{len(names)} models (GFLOPs: 2 per multiply-add, torch.utils.flop_counter)")
    for col, justify in [("name", "left"), ("family", "left"), ("input", "left"), ("params", "right"),
                         ("GFLOPs", "right"), ("skips", "right")]:
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name in names:
        s = summarize(name)
        table.add_row(name, s.family, "x".join(map(str, s.input_size)), _fmt_int(s.params), f"{s.gflops:.3f}",
                      str(s.skips))
    console.print(table)


@app.command("summary")
def summary_cmd(
    name: str = typer.Argument(..., help="Registered model name (see `skiplab models`)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", help="One sample's shape, e.g. 3,32,32."),
) -> None:
    """Per-stage output shape, parameters, FLOPs and skip connections of one model."""
    size = parse_input_size(input_size) if input_size else None
    s = summarize(name, size)
    table = Table(title=f"{name} ({s.family}) at input {'x'.join(map(str, s.input_size))}")
    for col in ("part", "output shape", "params", "MFLOPs", "skips"):
        table.add_column(col, justify="left" if col in ("part", "output shape") else "right")
    for row in s.stages:
        table.add_row(row.name, "x".join(map(str, row.output_shape)), _fmt_int(row.params),
                      f"{row.flops / 1e6:,.1f}", str(row.skips))
    table.add_row("[bold]total", "", f"[bold]{_fmt_int(s.params)}", f"[bold]{s.flops / 1e6:,.1f}", f"[bold]{s.skips}")
    console.print(table)
    console.print(f"{s.gflops:.3f} GFLOPs = {s.gmacs:.3f} G multiply-adds per sample")


@app.command("convert")
def convert_cmd(
    source: str = typer.Argument(..., help="Weights to convert: torchvision / timm / segmentation_models_pytorch "
                                           ".pth, Keras .h5, safetensors."),
    model: str = typer.Option(..., help="The skiplab model the weights are for (see `skiplab models`)."),
    out: str = typer.Option(..., help="Where to write: .safetensors (skiplab's format, with the model's name)."),
    model_kwargs: Optional[str] = typer.Option(None, help="Model build kwargs as JSON, e.g. '{\"num_classes\": 10}'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Load another library's checkpoint into a skiplab model and save it as safetensors (model name and kwargs
    in its metadata, so `skiplab eval --weights OUT` needs no --model)."""
    from pathlib import Path

    from skiplab.cli.train import _json_dict
    from skiplab.registry import create_model
    from skiplab.weights import save_weights

    target = Path(out)
    if target.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors; got {out!r}")
    if target.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    net = create_model(model, weights=source, **(_json_dict("model-kwargs", model_kwargs) or {}))
    save_weights(net, target)
    console.print(f"{source} -> {target} ({model}, {sum(p.numel() for p in net.parameters()):,} parameters)",
                  highlight=False)
