"""Shared CLI plumbing: consoles and turning library errors into one clear message + exit 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hvtnas.errors import HvtnasError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Bad input is the user's to fix, not a bug: print the message (no traceback), exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HvtnasError as err:
            err_console.print(
                f"[bold red]error:[/] {escape(str(err))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
