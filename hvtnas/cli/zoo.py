"""``hvtnas zoo``: the published backbones the generator reproduces, with their measured costs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from hvtnas.cli._common import console, user_errors

if TYPE_CHECKING:
    from hvtnas.config import ArchConfig


def _mixers(cfg: ArchConfig) -> str:
    kinds = dict.fromkeys(m.kind for stage in cfg.stages for m in stage.mixers)  # ordered, unique
    return "+".join(kinds)


@user_errors
def zoo_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
    use_cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse and store measured costs.")
    ] = True,
) -> None:
    """List the zoo: each published backbone with its parameters and FLOPs beside the paper's figures."""
    from rich.table import Table

    from hvtnas.costs import CostCache, CostSettings, measure_costs
    from hvtnas.models import zoo

    cache = CostCache() if use_cache else None
    rows = []
    for name in zoo.names():
        cfg = zoo.get_config(name)
        costs = measure_costs(cfg, CostSettings(dense_resolution=None), cache=cache)
        published = zoo.PUBLISHED.get(name)
        rows.append(
            {
                "name": name,
                "params": costs.params,
                "flops": costs.flops,
                "flops_attention": costs.flops_attention,
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
    table = Table(
        title="hvtnas zoo at each model's input size (GMACs: multiply-accumulates; paper: official figures)"
    )
    table.add_column("model", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("paper", justify="right")
    table.add_column("GMACs", justify="right")
    table.add_column("paper", justify="right")
    table.add_column("top-1", justify="right")
    table.add_column("mixers")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            f"{r['published_params_m']}M" if r["published_params_m"] else "-",
            f"{r['flops'] / 1e9:.2f}",
            str(r["published_gmacs"] or "-"),
            str(r["published_top1"] or "-"),
            r["mixers"],
        )
    console.print(table)
