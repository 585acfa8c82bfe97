"""The ``hvtnas`` command line: a thin layer over the library, one module per command."""

from __future__ import annotations

import sys
from types import TracebackType


def _quiet_interrupt(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    """Ctrl-C while the command line starts (torch takes seconds to import): one word, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, value, traceback)


if sys.excepthook is sys.__excepthook__:  # set before anything loads (commands import torch when they run)
    sys.excepthook = _quiet_interrupt

import typer  # noqa: E402

from hvtnas.cli.build import build_command  # noqa: E402
from hvtnas.cli.mixers import mixers_command  # noqa: E402
from hvtnas.cli.search import dashboard_command, export_command, report_command, search_command  # noqa: E402
from hvtnas.cli.space import space_app  # noqa: E402
from hvtnas.cli.studies import show_command, studies_command  # noqa: E402
from hvtnas.cli.train import train_command  # noqa: E402
from hvtnas.cli.weights import convert_command  # noqa: E402
from hvtnas.cli.zoo import zoo_command  # noqa: E402

app = typer.Typer(
    name="hvtnas",
    help="Neural architecture search over the MetaFormer design space of hierarchical vision transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("zoo")(zoo_command)
app.command("build")(build_command)
app.command("mixers")(mixers_command)
app.command("train")(train_command)
app.command("convert")(convert_command)
app.command("search")(search_command)
app.command("export")(export_command)
app.command("report")(report_command)
app.command("dashboard")(dashboard_command)
app.command("studies")(studies_command)
app.command("show")(show_command)
app.add_typer(space_app, name="space")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a command's own handling (click's start-up)
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
