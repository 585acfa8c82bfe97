"""ONNX export, verified: the file's outputs (onnxruntime) are compared with PyTorch's.

Needs the optional ``export`` extra (``pip install "hvtnas[export]"``: onnx and onnxruntime). The
graph is traced at one input size (window partitioning and padding depend on it) with a dynamic
batch dimension.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvtnas.errors import HvtnasError

OPSET = 17


class ExportError(HvtnasError):
    """An export that cannot be written or whose file does not compute what the model does."""


@dataclass
class OnnxExport:
    path: str
    opset: int
    input_shape: tuple[int, int, int, int]  # (batch, channels, height, width); the batch is dynamic
    output_name: str
    max_abs_diff: float  # onnxruntime vs PyTorch on a random batch
    atol: float
    rtol: float
    onnxruntime_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401  (the exporter's checker)
        import onnxruntime
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs onnx and onnxruntime ({err.name} is missing): pip install 'hvtnas[export]'"
        ) from None
    return onnxruntime


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    resolution: int | tuple[int, int] | None = None,
    opset: int = OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> OnnxExport:
    """Write ``model`` (in eval mode) as ONNX at ``resolution`` (default: its config's) and check
    that onnxruntime's outputs on a random batch of 2 match PyTorch's within ``atol + rtol * |ref|``;
    raises ``ExportError`` (the file is removed) when they do not."""
    ort = require_onnxruntime()
    cfg = getattr(model, "arch_config", None)
    if resolution is None:
        resolution = cfg.input.resolution if cfg is not None else 224
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    channels = cfg.input.channels if cfg is not None else 3
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    output_name = "logits" if getattr(model, "num_classes", 1) else "features"
    device = next(model.parameters()).device
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,  # the TorchScript exporter: no onnxscript needed
                opset_version=opset,
                input_names=["image"],
                output_names=[output_name],
                dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
            )
        with torch.no_grad():
            reference = model(x).float().cpu().numpy()
    finally:
        model.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(None, {"image": x.cpu().numpy()})
    diff = abs(outputs - reference)
    max_diff = float(diff.max())
    if outputs.shape != reference.shape or (diff > atol + rtol * abs(reference)).any():
        path.unlink(missing_ok=True)
        raise ExportError(
            f"the ONNX graph of {getattr(cfg, 'name', None) or 'the model'} does not reproduce PyTorch's "
            f"outputs (max |difference| {max_diff:.3g}, shapes {outputs.shape} vs {reference.shape}); "
            "no file written"
        )
    return OnnxExport(
        path=str(path),
        opset=opset,
        input_shape=(2, channels, height, width),
        output_name=output_name,
        max_abs_diff=max_diff,
        atol=atol,
        rtol=rtol,
        onnxruntime_version=ort.__version__,
    )
