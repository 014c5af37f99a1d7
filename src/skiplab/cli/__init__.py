"""The ``skiplab`` command. Each sub-command group lives in its own module and registers on ``app``."""
from __future__ import annotations

from skiplab.cli.app import app, main

__all__ = ["app", "main"]
