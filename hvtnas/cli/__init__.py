"""The ``hvtnas`` command line: a thin layer over the library, one module per command."""

from __future__ import annotations

import typer

from hvtnas.cli.build import build_command
from hvtnas.cli.mixers import mixers_command
from hvtnas.cli.search import dashboard_command, export_command, report_command, search_command
from hvtnas.cli.space import space_app
from hvtnas.cli.train import train_command
from hvtnas.cli.weights import convert_command
from hvtnas.cli.zoo import zoo_command

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
app.add_typer(space_app, name="space")


def main() -> None:
    app()
