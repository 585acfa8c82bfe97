"""``hvtnas convert``: a timm or official checkpoint file, converted into a zoo model's weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hvtnas.cli._common import console, user_errors


@user_errors
def convert_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="A safetensors or weights-only torch file (timm's, official or hvtnas's).")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="The zoo name or architecture YAML the weights are for.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="safetensors file to write (default: <model>.safetensors).")
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(min=0, help="Classes of the model (another number than the file's: new classifier)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load CHECKPOINT into the model (renaming timm's or the official keys), write its weights
    as safetensors in hvtnas's layout, which `hvtnas train --weights` and `build_model(checkpoint=)`
    read."""
    from hvtnas.models import build_model
    from hvtnas.models.build import resolve_config
    from hvtnas.models.weights import load_weights, save_weights

    cfg = resolve_config(model)
    built = build_model(cfg, num_classes=num_classes, init_weights=False)
    layout, skipped = load_weights(built, checkpoint)
    target = out or Path(f"{cfg.name or Path(model).stem}.safetensors")
    metadata = {"source": str(checkpoint), "layout": layout}
    save_weights(built, target, metadata=metadata)
    summary = {
        "out": str(target),
        "layout": layout,
        "tensors": len(built.state_dict()) - len(skipped),
        "new_classifier": skipped,
    }
    if as_json:
        print(json.dumps(summary))
        return
    text = f"{checkpoint} ({layout} layout) -> {target}: {summary['tensors']} tensors"
    if skipped:
        text += f"; classifier kept freshly initialised ({', '.join(skipped)})"
    console.print(text, highlight=False)
