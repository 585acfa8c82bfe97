"""Files other tools read, written beside an exported config or a trained model: weights as
safetensors, a verified ONNX graph, and a model card (see ``hvtnas.card``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from hvtnas.card import ModelCard
from hvtnas.costs import CostCache, CostSettings, measure_costs

ARTIFACTS = ("safetensors", "onnx", "card")


def fill_costs(
    card: ModelCard, model: nn.Module, settings: CostSettings, cache: CostCache | None
) -> ModelCard:
    """The card with the costs it lacks measured on ``model`` (params, FLOPs, dense FLOPs and,
    where ``settings`` asks for it, latency)."""
    if card.params is not None and card.flops is not None and card.flops_dense is not None and card.latency:
        return card
    costs = measure_costs(model, settings, cache=cache)
    return replace(
        card,
        params=card.params if card.params is not None else costs.params,
        flops=card.flops if card.flops is not None else costs.flops,
        flops_dense=card.flops_dense if card.flops_dense is not None else costs.flops_dense,
        dense_resolution=card.dense_resolution
        or (str(costs.dense_resolution) if costs.dense_resolution is not None else None),
        latency=card.latency or (costs.latency.model_dump(mode="json") if costs.latency else None),
    )


def write_artifacts(
    model: nn.Module,
    folder: Path,
    stem: str,
    which: set[str],
    card: ModelCard | None = None,
    card_name: str | None = None,
) -> dict[str, Path]:
    """Write ``which`` of ``ARTIFACTS`` for ``model`` into ``folder`` as ``<stem>.safetensors``,
    ``<stem>.onnx`` and the card (``card_name``, default ``<stem>.md``); returns what -> path.
    The ONNX graph is checked against the model's outputs before it is kept."""
    from hvtnas.models.weights import save_weights

    written: dict[str, Path] = {}
    notes: list[str] = []
    if "safetensors" in which:
        written["weights"] = save_weights(model, folder / f"{stem}.safetensors")
    if "onnx" in which:
        from hvtnas.models.onnx import export_onnx

        result = export_onnx(model, folder / f"{stem}.onnx")
        written["ONNX"] = Path(result.path)
        b, c, h, w = result.input_shape
        notes.append(
            f"The ONNX graph (opset {result.opset}, input `image` of shape (batch, {c}, {h}, {w}), output "
            f"`{result.output_name}`) was checked with onnxruntime {result.onnxruntime_version}: largest "
            f"difference from PyTorch {result.max_abs_diff:.2g} on a random batch of {b}."
        )
    if "card" in which and card is not None:
        files = {**card.files, **{what: path.name for what, path in written.items()}}
        card = replace(card, files=files, notes=[*card.notes, *notes])
        written["card"] = card.write(folder / (card_name or f"{stem}.md"))
    return written
