"""What every ``geonas`` command shares: the console, the API URL option, and one-line errors."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from search_spaces.errors import GeonasError

__all__ = ["console", "DEFAULT_URL", "UrlOption", "friendly"]

console = Console(width=None if sys.stdout.isatty() else 130)
DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = typer.Option(DEFAULT_URL, "--url", envvar="GEONAS_URL", help="The geonas API.")


def friendly(fn):
    """Print a GeonasError as one red line and exit 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GeonasError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None

    return wrapper
