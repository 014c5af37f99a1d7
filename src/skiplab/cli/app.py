"""The typer application, global options and user-error handling.

A user error (bad argument, unknown model, missing file) prints one clear line and exits with status 2,
without a traceback; ``skiplab --debug ...`` shows the traceback.
"""
from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="skiplab",
    help="skiplab: skip connections — blocks, models with plain twins, training and experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

# Exceptions that mean "the user asked for something invalid", not "skiplab has a bug".
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)

# Sub-command modules; each registers its commands on ``app`` when imported.
COMMAND_MODULES = ("models", "data", "train", "experiment", "report", "bench")


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    """skiplab: skip connections — blocks, models with plain twins, training and experiments."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in COMMAND_MODULES:
        importlib.import_module(f"skiplab.cli.{name}")
    debug = "--debug" in argv
    try:
        app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except USER_ERRORS as e:
        if debug:
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False)
        raise SystemExit(2) from None
    except Exception as e:  # click's own usage errors (bad option value, unknown option, missing argument)
        # Matched by shape, not imported: typer >= 0.2x vendors click as typer._click (no `click` module),
        # older typer raises click's own classes; both have show() and exit_code.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            raise SystemExit(e.exit_code) from None
        if type(e).__name__ == "Abort":
            err_console.print("aborted")
            raise SystemExit(130) from None
        raise
