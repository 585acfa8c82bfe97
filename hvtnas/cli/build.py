"""``hvtnas build``: build one architecture and describe it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from hvtnas.cli._common import console, user_errors
from hvtnas.summary import summarize


@user_errors
def build_command(
    model: Annotated[str, typer.Argument(help="A zoo name (see `hvtnas zoo`) or an architecture YAML file.")],
    resolution: Annotated[
        int | None, typer.Option(min=1, help="Input size for the stage shapes (default: the config's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Build a model and print its parameters and the feature pyramid's shapes."""
    summary = summarize(model, resolution=resolution)
    if as_json:
        print(json.dumps(summary.to_dict()))
        return
    table = Table(title=f"{summary.name or model} at {summary.resolution}x{summary.resolution}")
    for col in ("part", "output (C x H x W)", "stride", "params"):
        table.add_column(col, justify="left" if col == "part" else "right")
    table.add_row("stem", "", "", f"{summary.params_per_part['stem']:,}")
    for i, stage in enumerate(summary.stages):
        table.add_row(
            f"stage{i + 1}",
            f"{stage['channels']} x {stage['height']} x {stage['width']}",
            str(4 * 2**i),
            f"{summary.params_per_part[f'stage{i + 1}']:,}",
        )
    table.add_row("head", "", "", f"{summary.params_per_part['head']:,}")
    table.add_row("[bold]total[/]", "", "", f"[bold]{summary.params:,}[/] ({summary.params / 1e6:.2f}M)")
    console.print(table)
