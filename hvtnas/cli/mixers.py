"""``hvtnas mixers``: the token-mixer registry and each mixer's parameters."""

from __future__ import annotations

import inspect

from rich.table import Table

from hvtnas.cli._common import console
from hvtnas.models.mixers import MIXERS


def mixers_command() -> None:
    """List the token mixers an architecture config or search space can use, with their parameters."""
    table = Table(title="token mixers")
    table.add_column("kind", no_wrap=True)
    table.add_column("heads")
    table.add_column("parameters (default)")
    table.add_column("what it is")
    for kind in MIXERS:
        cls = MIXERS.get(kind)
        params = ", ".join(
            f"{name}={field.default!r}" for name, field in cls.Params.model_fields.items() if name != "kind"
        )
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ").split(": ")[0]
        table.add_row(kind, "yes" if cls.uses_heads else "", params or "-", doc)
    console.print(table)
