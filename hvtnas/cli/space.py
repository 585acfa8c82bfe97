"""``hvtnas space show | sample``: what a search space contains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hvtnas.cli._common import console, user_errors
from hvtnas.io import safe_file_name

space_app = typer.Typer(help="Inspect a search space file.", no_args_is_help=True)


def _summary(cfg) -> str:
    stages = " | ".join(f"{s.depth}x{s.width} {'+'.join(m.kind for m in s.mixers)}" for s in cfg.stages)
    return f"stem {cfg.stem.kind}, pe {cfg.pos_embed.kind}: {stages}"


@space_app.command("show")
@user_errors
def show_command(
    path: Annotated[Path, typer.Argument(help="A search space YAML file.")],
    samples: Annotated[int, typer.Option("-n", "--samples", min=0, help="Random samples to print.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
) -> None:
    """Print the space's dimensions, its number of distinct architectures and a few samples."""
    from rich.table import Table

    from hvtnas.search import load_search_spec
    from hvtnas.space import iter_samples

    spec = load_search_spec(path)  # validates the experiment section too
    space = spec.space
    table = Table(title=f"search space {path}")
    for col in ("parameter", "kind", "values", "exists when"):
        table.add_column(col, no_wrap=col == "parameter")
    for dim in space.dimensions():
        table.add_row(dim.name, dim.kind, dim.values, dim.condition or "always")
    console.print(table)
    size = space.size()
    console.print(
        f"distinct architectures: {'infinite (continuous ranges)' if size == float('inf') else f'{size:,}'}"
    )
    exp = spec.experiment
    console.print(
        f"objectives: {', '.join(exp.objectives)}; constraints: {exp.constraints or 'none'}; "
        f"data: {exp.data.name}; {exp.train.epochs} epochs; sampler: {exp.sampler.name}",
        highlight=False,
    )
    for cfg in iter_samples(space, samples, seed):
        console.print(f"- {_summary(cfg)}", highlight=False)


@space_app.command("sample")
@user_errors
def sample_command(
    path: Annotated[Path, typer.Argument(help="A search space YAML file.")],
    n: Annotated[int, typer.Option("-n", min=1, help="How many architectures.")] = 5,
    out: Annotated[Path, typer.Option(help="Folder for the architecture configs.")] = Path("samples"),
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
) -> None:
    """Write ``n`` random architectures of the space as config files that `hvtnas build` takes."""
    from hvtnas.space import SearchSpace, iter_samples

    space = SearchSpace.from_yaml(path)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_file_name(path.stem)  # "...yaml" has the stem ".."
    for i, cfg in enumerate(iter_samples(space, n, seed)):
        cfg = cfg.model_copy(update={"name": cfg.name or f"{stem}_sample{i:03d}"})
        target = out / f"{stem}_sample{i:03d}.yaml"
        cfg.to_yaml(target)
        console.print(f"{target}: {_summary(cfg)}", highlight=False)
