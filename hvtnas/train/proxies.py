"""Zero-cost proxies: scores of an untrained network from one batch, usable as a search objective
or a pre-filter before proxy training.

- ``synflow`` (Tanaka et al. 2020): data-free; sum |theta * d R / d theta| with R the output of
  the |weight|-linearised network on an all-ones input (in float64, eval mode);
- ``naswot`` (Mellor et al. 2021): log-determinant of the Hamming-similarity kernel of the
  binary activation codes (pre-activation > 0 at every activation layer) over the batch;
- ``jacob_cov`` (NASWOT v1): correlation of the input Jacobians across the batch;
- ``grad_norm``: sum over parameters of the L2 norm of the loss gradient;
- ``snip`` (Lee et al. 2019): sum |theta * d loss / d theta|;
- ``params`` and ``flops``: the baselines every proxy should beat.

All proxies take a model (not modified: they work on a copy where they must change it) and a
batch ``(x, y)`` of normalised images; higher means "predicted better" for every one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hvtnas.models.layers import ACTIVATIONS
from hvtnas.train.data import ImageData

ProxyFn = Callable[[nn.Module, Tensor, Tensor], float]


def synflow(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = copy.deepcopy(model).double().eval()  # eval: no dropout / drop path; float64: no overflow
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    total = sum((p * p.grad).abs().sum().item() for p in net.parameters() if p.grad is not None)
    return float(total)


def naswot(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = copy.deepcopy(model).train()  # train mode as in the paper (batchnorm uses batch stats)
    n = len(x)
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    act_types = tuple(ACTIVATIONS.values())
    hooks = []

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        codes = (inputs[0].detach().reshape(n, -1) > 0).double()  # (N, units): which units fire
        # Hamming similarity: units where two samples agree (both on or both off)
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    for module in net.modules():
        if isinstance(module, act_types):
            hooks.append(module.register_forward_hook(record))
    if not hooks:
        return float("nan")  # no activation layer: the proxy is undefined for this network
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


def jacob_cov(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = copy.deepcopy(model).train()
    inputs = x.clone().requires_grad_(True)
    net(inputs).sum().backward()
    jacobians = inputs.grad.reshape(len(x), -1)  # (N, C*H*W)
    corr = torch.corrcoef(jacobians.double())
    corr = torch.nan_to_num(corr, nan=0.0)
    eigenvalues = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-torch.sum(torch.log(eigenvalues.clamp_min(0) + k) + 1.0 / (eigenvalues.clamp_min(0) + k)))


def _loss_grads(model: nn.Module, x: Tensor, y: Tensor) -> nn.Module:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return net


def grad_norm(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = _loss_grads(model, x, y)
    return float(sum(p.grad.norm().item() for p in net.parameters() if p.grad is not None))


def snip(model: nn.Module, x: Tensor, y: Tensor) -> float:
    net = _loss_grads(model, x, y)
    return float(sum((p * p.grad).abs().sum().item() for p in net.parameters() if p.grad is not None))


def params(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(sum(p.numel() for p in model.parameters()))


def count_flops(model: nn.Module, x: Tensor) -> float:
    """Forward MACs of one input, counted the way ``hvtnas.costs`` counts them (attention included),
    on the meta device: nothing is computed (``hvtnas.costs.counter``)."""
    from hvtnas.costs.counter import count_calls

    was_training = model.training
    model.eval()  # the count of a deployed model: no drop path, BatchNorm in inference form
    try:
        return float(count_calls(model, (x[:1],)).total)
    finally:
        model.train(was_training)


def flops(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return count_flops(model, x)


ZERO_COST_PROXIES: dict[str, ProxyFn] = {
    "synflow": synflow,
    "naswot": naswot,
    "jacob_cov": jacob_cov,
    "grad_norm": grad_norm,
    "snip": snip,
    "params": params,
    "flops": flops,
}


def zero_cost_scores(
    arch: Any, data: ImageData, names: list[str] | None = None, batch_size: int = 64, seed: int = 0
) -> dict[str, float]:
    """Score an architecture (``ArchConfig``, dict, zoo name or YAML path) built for ``data``,
    with freshly initialised weights (seeded) and one seeded batch of its training images."""
    from hvtnas.models import build_model, resolve_config
    from hvtnas.train.trainer import adapt_arch_to_data

    arch_cfg = adapt_arch_to_data(resolve_config(arch), data)
    torch.manual_seed(seed)
    model = build_model(arch_cfg)
    x, y = data.sample_batch(batch_size, seed=seed)
    return score_model(model, x, y, names=names, seed=seed)


def score_model(
    model: nn.Module, x: Tensor, y: Tensor, names: list[str] | None = None, seed: int = 0
) -> dict[str, float]:
    """Every requested proxy's score (NaN where a proxy is undefined or not finite)."""
    from hvtnas.errors import HvtnasError

    names = names or list(ZERO_COST_PROXIES)
    unknown = [n for n in names if n not in ZERO_COST_PROXIES]
    if unknown:
        raise HvtnasError(
            f"unknown zero-cost proxy {', '.join(unknown)}; known: {', '.join(ZERO_COST_PROXIES)}"
        )
    scores = {}
    for name in names:
        torch.manual_seed(seed)  # drop path / dropout draws are the same for every architecture
        value = ZERO_COST_PROXIES[name](model, x, y)
        scores[name] = value if math.isfinite(value) else float("nan")
    return scores
