"""Activation and peak memory.

On CUDA: measured peaks (``torch.cuda.max_memory_allocated``) of a forward pass in inference mode
and of a training step (forward + backward), parameters and their gradients excluded.
On CPU there is no allocator peak to read; the figure is an estimate: the bytes of the distinct
tensors autograd saves for backward during one forward pass (what a training step must hold at
its peak, on top of the weights), labelled ``method="estimate: saved activations"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hvtnas.costs.counter import pyramid


@dataclass
class MemoryCost:
    input_size: tuple[int, int]
    batch_size: int
    method: str  # "cuda peak" or "estimate: saved activations"
    train_activation_bytes: int  # held for backward by one training step
    inference_peak_bytes: int | None = None  # CUDA only: peak of a forward in inference mode


def _pyramid_loss(model: nn.Module, x: torch.Tensor, backbone_only: bool) -> torch.Tensor:
    if backbone_only:
        return sum(level.float().mean() for level in pyramid(model, x))
    return model(x).float().mean()


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, backbone_only: bool = False) -> int:
    """Bytes of the distinct tensors autograd keeps for backward during ``model(x)``."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if storage.data_ptr() not in params:  # weights are not activations
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _pyramid_loss(model, x, backbone_only)
    return sum(seen.values())


def measure_memory(
    model: nn.Module,
    input_size: tuple[int, int],
    batch_size: int = 1,
    in_channels: int = 3,
    backbone_only: bool = False,
) -> MemoryCost:
    """Memory of ``model`` (on its own device) at ``input_size`` = (height, width)."""
    device = next(model.parameters()).device
    # BatchNorm in training mode cannot run one image on a 1x1 map: estimate on at least two
    # images and scale (saved activations grow linearly with the batch)
    traced_batch = max(2, batch_size) if device.type != "cuda" else batch_size
    x = torch.randn(traced_batch, in_channels, *input_size, device=device)
    was_training = model.training
    buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm statistics must not move
    model.train()  # what a training step holds (BatchNorm in training mode, drop path active)
    try:
        if device.type != "cuda":
            saved = saved_activation_bytes(model, x, backbone_only) * batch_size // traced_batch
            return MemoryCost(tuple(input_size), batch_size, "estimate: saved activations", saved)
        torch.cuda.synchronize(device)
        weights = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss = _pyramid_loss(model, x, backbone_only)
        train_peak = torch.cuda.max_memory_allocated(device) - weights
        loss.backward()
        model.zero_grad(set_to_none=True)
        del loss
        model.eval()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            _pyramid_loss(model, x, backbone_only)
        inference_peak = torch.cuda.max_memory_allocated(device) - base
        return MemoryCost(tuple(input_size), batch_size, "cuda peak", int(train_peak), int(inference_peak))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
