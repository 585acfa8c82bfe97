"""Shared CLI plumbing: consoles and turning library errors into one clear message + exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hvtnas.errors import HvtnasError
from hvtnas.interrupts import interrupts_raised


class _LogConsole(Console):
    """A console that never wraps a line when its output is not a terminal (a log file, a pipe,
    a CI log): rich would otherwise break every line at 80 columns there. On a terminal it wraps
    as usual. Decided at each print, so a test runner that swaps ``sys.stdout`` gets the same."""

    @property  # type: ignore[override]
    def soft_wrap(self) -> bool:
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:  # Console.__init__ sets it: decided above instead
        pass


console = _LogConsole()
err_console = _LogConsole(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


INTERRUPTED_EXIT = 130  # the shell's code for a command stopped by Ctrl-C (SIGINT)


_storage: list[str] = []  # the storage the running command uses, to name it in a fault's line


def note_storage(storage: str) -> None:
    """Name ``storage`` in the message of a storage fault (a full disk) of this command."""
    _storage[:] = [storage]


def _storage_fault(err: Exception) -> str | None:
    """One line for a database driver's error (sqlalchemy, sqlite3, psycopg), else None."""
    from optuna.exceptions import StorageInternalError

    if isinstance(err, StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__  # Optuna wraps the driver's error; that one says what happened
    if type(err).__module__.split(".")[0] not in ("sqlalchemy", "sqlite3", "psycopg"):
        return None
    cause = getattr(err, "orig", None) or err
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    where = f"storage {_storage[0]}" if _storage else "storage"
    return f"{where}: {type(cause).__name__}: {first}"


def print_table(table: Table) -> None:
    """A table on stdout: fitted to a terminal's width, at its natural width elsewhere (a log
    file or a pipe gets every row on one line, never folded at 80 columns)."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Console(file=console.file, width=100_000).measure(table).maximum
    Console(file=console.file, width=natural).print(table)


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def user_errors(func: F) -> F:
    """Bad input is the user's to fix, not a bug: print the message (no traceback), exit 2.

    A config error prints one line per problem (``file:line: field: problem``). Faults of the
    machine (a full disk, an unwritable folder) print one line naming the file and the cause
    and exit 1; Ctrl-C prints ``interrupted`` and exits 130, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _storage.clear()
        try:
            with interrupts_raised():  # Ctrl-C, and SIGTERM (preemption) as Ctrl-C
                return func(*args, **kwargs)
        except HvtnasError as err:
            problems = getattr(err, "problems", None)
            for line in problems or [str(err)]:
                print_error(line)
            raise typer.Exit(code=err.exit_code) from None
        except OSError as err:  # a full disk, no permission, an I/O error: name the file and the cause
            where = f"{err.filename}: " if err.filename else (f"storage {_storage[0]}: " if _storage else "")
            print_error(f"{where}{err.strerror or err}")
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(code=INTERRUPTED_EXIT) from None
        except Exception as err:  # a database full or gone: one line, what was told is in the study
            line = _storage_fault(err)
            if line is None:
                raise  # a bug: the traceback is for us
            print_error(line)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]
