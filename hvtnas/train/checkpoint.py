"""Checkpoints that never unpickle arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts
(state dicts, optimizer state, RNG state, the epoch history) with the architecture config as a
JSON string; it is read back with ``torch.load(weights_only=True)``, which refuses anything else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvtnas.config import ArchConfig
from hvtnas.errors import ConfigError, HvtnasError

CHECKPOINT_FORMAT = 1


class CheckpointError(HvtnasError):
    """A checkpoint file is missing, corrupt or not an hvtnas checkpoint."""


def save_checkpoint(path: str | Path, state: dict[str, Any], arch: ArchConfig) -> Path:
    """Write ``state`` (from the trainer's ``on_checkpoint``) and the architecture atomically:
    a crash while writing leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "arch_json": json.dumps(arch.to_dict()), "format": CHECKPOINT_FORMAT}
    partial = path.with_name(path.name + ".part")
    torch.save(payload, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True``; ``arch`` holds the ``ArchConfig``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign / unsafe files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable hvtnas checkpoint ({first})") from None
    if not isinstance(payload, dict) or "arch_json" not in payload or "model" not in payload:
        raise CheckpointError(f"{path}: not an hvtnas checkpoint (no 'model' and 'arch_json' entries)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format')!r}; "
            f"this hvtnas reads format {CHECKPOINT_FORMAT}"
        )
    try:
        payload["arch"] = ArchConfig.from_dict(json.loads(payload["arch_json"]), source=str(path))
    except (json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: the stored architecture config is invalid ({err})") from None
    return payload


def load_model(path: str | Path) -> nn.Module:
    """The trained model of a checkpoint, built from its stored architecture (CPU, eval mode)."""
    from hvtnas.models import build_model

    payload = load_checkpoint(path)
    model = build_model(payload["arch"])
    model.load_state_dict(payload["model"])
    return model.eval()
