"""``hvtnas train CONFIG.yaml``: train one architecture at full fidelity, with checkpoints."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from hvtnas.cli._common import console, err_console, user_errors

# hvtnas.train.data.DatasetName, written out so that `hvtnas --help` needs no torch (a test keeps them equal)
DATASETS = ("digits", "synthetic", "npz", "imagefolder", "cifar10", "cifar100")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _log_epochs_to_stderr() -> None:
    logger = logging.getLogger("hvtnas.train")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


@user_errors
def train_command(
    config: Annotated[
        Path, typer.Argument(help="A run config (arch + data + train) or an architecture config YAML.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: the config's, else runs/train/<name>)."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Override train.batch_size.")] = None,
    dataset: Annotated[str | None, typer.Option(help=f"Override data.name ({', '.join(DATASETS)}).")] = None,
    data_path: Annotated[Path | None, typer.Option(help="Override data.path.")] = None,
    resolution: Annotated[int | None, typer.Option(min=1, help="Override data.resolution.")] = None,
    device: Annotated[
        str | None, typer.Option(help="Override train.device (auto, cpu, cuda, cuda:1).")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final metrics as one JSON object.")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Start from these weights (safetensors or weights-only torch file; hvtnas's, timm's "
            "or official layout) instead of a random initialisation."
        ),
    ] = None,
    safetensors: Annotated[
        bool, typer.Option("--safetensors", help="Also write the trained weights as OUT/model.safetensors.")
    ] = False,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also OUT/model.onnx, checked with onnxruntime (extra 'export').")
    ] = False,
    card: Annotated[
        bool, typer.Option("--card", help="Also OUT/model_card.md: costs, latency, accuracy and recipe.")
    ] = False,
    recipe: Annotated[
        bool,
        typer.Option(
            "--recipe/--no-recipe",
            help="An exported architecture trains with its search's data and training settings "
            "(metadata.recipe) unless --no-recipe; options override single settings either way.",
        ),
    ] = True,
) -> None:
    """Train an architecture, checkpointing after every epoch; write metrics.json and the checkpoint."""
    from pydantic import ValidationError

    from hvtnas.train.data import DataConfig
    from hvtnas.train.run import (
        RunConfigError,
        apply_recipe,
        default_output_dir,
        prefixed_validation_errors,
        read_run_config,
        run_training,
    )
    from hvtnas.train.trainer import TrainConfig

    run, arch = read_run_config(config)
    recipe_note = None
    if recipe:
        run, recipe_note = apply_recipe(run, arch, str(config))
    data_updates = {
        k: v
        for k, v in {"name": dataset, "path": data_path, "resolution": resolution}.items()
        if v is not None
    }
    train_updates = {
        k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "device": device}.items() if v
    }
    problems: list[str] = []
    # validate the overrides as the config would be, naming the section they land in
    try:
        data_cfg = DataConfig.model_validate({**run.data.model_dump(), **data_updates})
    except ValidationError as err:
        problems += prefixed_validation_errors(err, prefix="data")
    try:
        train_cfg = TrainConfig.model_validate({**run.train.model_dump(), **train_updates})
    except ValidationError as err:
        problems += prefixed_validation_errors(err, prefix="train")
    if problems:
        raise RunConfigError(problems, f"{config} (with the command-line options)")
    run = run.model_copy(update={"data": data_cfg, "train": train_cfg})
    if recipe_note is not None:
        given = {
            **{f"data.{k}": v for k, v in data_updates.items()},
            **{f"train.{k}": v for k, v in train_updates.items()},
        }
        if given:
            recipe_note += "; overridden: " + ", ".join(f"{k}={v}" for k, v in given.items())
        err_console.print(recipe_note + " (--no-recipe: train without it)", highlight=False)
    elif (arch.metadata or {}).get("recipe") and not recipe:
        err_console.print(
            "--no-recipe: the search's data and training settings are not used", highlight=False
        )
    output_dir = out or run.output_dir or default_output_dir(arch)
    show_bar = sys.stderr.isatty() if progress is None else progress
    show_bar = show_bar and int(os.environ.get("RANK", "0")) == 0
    if not show_bar and not as_json:  # quiet logs: one line per epoch on stderr
        _log_epochs_to_stderr()
    which = {k for k, on in {"safetensors": safetensors, "onnx": onnx, "card": card}.items() if on}
    if "onnx" in which:  # before hours of training, not after
        from hvtnas.models.onnx import require_onnxruntime

        require_onnxruntime()
    result = run_training(
        run, arch, output_dir, resume=resume, progress=show_bar, weights=weights, artifacts=which
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks for all
        raise typer.Exit(code=1 if result.status == "failed" else 0)
    if as_json:
        print(json.dumps({**result.to_dict(), "output_dir": str(output_dir)}))
    elif result.status == "failed":
        err_console.print(f"[bold red]training failed:[/] {result.reason}", highlight=False)
    else:
        acc = result.val_accuracy
        console.print(
            f"{result.status}: {len(result.epochs)} epochs, validation accuracy "
            f"{'n/a' if acc is None else f'{acc:.4f}'}, {result.images_per_second:,.0f} img/s; "
            f"checkpoint and metrics in {output_dir}",
            highlight=False,
        )
    if result.status == "failed":
        raise typer.Exit(code=1)
