"""``hvtnas zoo``: the published backbones the generator reproduces."""

from __future__ import annotations

import json
from typing import Annotated

import torch
import typer
from rich.table import Table

from hvtnas.cli._common import console, user_errors
from hvtnas.models import build_model, zoo
from hvtnas.summary import count_params


def _mixers(cfg) -> str:
    seen: list[str] = []
    for stage in cfg.stages:
        for m in stage.mixers:
            if m.kind not in seen:
                seen.append(m.kind)
    return "+".join(seen)


@user_errors
def zoo_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """List the zoo: each published backbone with its parameter count and the paper's figures."""
    rows = []
    for name in zoo.names():
        cfg = zoo.get_config(name)
        with torch.device("meta"):  # shapes only: no memory, no weight init (20x faster)
            params = count_params(build_model(cfg))
        published = zoo.PUBLISHED.get(name)
        rows.append(
            {
                "name": name,
                "params": params,
                "depths": [s.depth for s in cfg.stages],
                "widths": [s.width for s in cfg.stages],
                "mixers": _mixers(cfg),
                "published_params_m": published.params_m if published else None,
                "published_gmacs": published.gmacs if published else None,
                "published_top1": published.top1 if published else None,
            }
        )
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="hvtnas zoo: ImageNet-1k configs, 224x224 unless noted (paper = official figures)")
    table.add_column("model", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("paper", justify="right")
    table.add_column("GMACs", justify="right")
    table.add_column("top-1", justify="right")
    table.add_column("depths", no_wrap=True)
    table.add_column("mixers")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            f"{r['published_params_m']}M" if r["published_params_m"] else "-",
            str(r["published_gmacs"] or "-"),
            str(r["published_top1"] or "-"),
            "-".join(map(str, r["depths"])),
            r["mixers"],
        )
    console.print(table)
