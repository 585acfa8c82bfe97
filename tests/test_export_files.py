"""Exports out: ONNX graphs that compute what the model does, safetensors that rebuild the same
model, and model cards with the search's (or the training run's) evidence."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hvtnas import build_model
from hvtnas.cli import app
from hvtnas.models.onnx import ExportError, export_onnx
from hvtnas.train.checkpoint import load_model
from tests.conftest import tiny_config, tiny_search_space
from tests.train_helpers import one_thread, small_arch

try:
    import onnx  # noqa: F401
    import onnxruntime as ort
except ImportError as err:
    ort, NO_ORT = (
        None,
        f"ONNX export needs the 'export' extra ({err.name} missing): pip install -e '.[export]'",
    )
else:
    NO_ORT = ""
needs_onnxruntime = pytest.mark.skipif(ort is None, reason=NO_ORT)
pytestmark = pytest.mark.usefixtures(one_thread.__name__)
runner = CliRunner()


def _onnx_outputs(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


@needs_onnxruntime
@pytest.mark.parametrize(
    "mixers", [["window", "shifted_window"], [{"kind": "spatial_reduction", "sr_ratio": 2}]]
)
def test_onnx_export_computes_what_the_model_does(tmp_path: Path, mixers: list) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(mixers)).eval()
    result = export_onnx(model, tmp_path / "tiny.onnx")
    assert result.max_abs_diff < 1e-4 and result.input_shape == (2, 3, 32, 32)
    x = torch.randn(3, 3, 32, 32)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        torch.testing.assert_close(_onnx_outputs(tmp_path / "tiny.onnx", x), model(x), rtol=1e-3, atol=1e-4)


def test_onnx_without_onnxruntime_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(ExportError, match=r"hvtnas\[export\]"):
        export_onnx(build_model(tiny_config(["pooling"])), tmp_path / "x.onnx")


@needs_onnxruntime
def test_export_writes_card_onnx_and_weights_that_rebuild_the_model(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_search_space(), sort_keys=False))
    searched = runner.invoke(
        app, ["search", str(space), "--runs-dir", str(tmp_path / "runs"), "--trials", "2"]
    )
    assert searched.exit_code == 0, searched.output
    out = tmp_path / "exports"
    exported = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "runs" / "space"),
            "--top",
            "1",
            "--out",
            str(out),
            "--card",
            "--onnx",
            "--safetensors",
        ],
    )
    assert exported.exit_code == 0, exported.output
    (config,) = out.glob("*.yaml")
    stem = config.stem
    assert {p.name for p in out.iterdir()} == {
        f"{stem}.{ext}" for ext in ("yaml", "md", "onnx", "safetensors")
    }
    card = (out / f"{stem}.md").read_text()
    for needle in (
        "## Architecture",
        "| parameters |",
        "FLOPs",
        "dense FLOPs (backbone) at 1280x800",
        "latency | median",
        "study: space",
        "Recipe:",
        "digits",
    ):
        assert needle in card, needle
    model = build_model(config, checkpoint=out / f"{stem}.safetensors").eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(_onnx_outputs(out / f"{stem}.onnx", x), model(x), rtol=1e-3, atol=1e-4)


@needs_onnxruntime
def test_train_writes_the_trained_weights_onnx_and_card(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    run = {
        "arch": small_arch(["pooling"]),
        "data": {"name": "digits", "resolution": 8},
        "train": {"epochs": 1, "batch_size": 64, "augment": {"hflip": False}},
        "output_dir": "out",
    }
    config.write_text(yaml.safe_dump(run, sort_keys=False))
    result = runner.invoke(
        app, ["train", str(config), "--json", "--no-progress", "--safetensors", "--onnx", "--card"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["files"]) == {"weights", "ONNX", "card"}
    trained = load_model(out / "checkpoint.pt").eval()
    rebuilt = build_model(out / "arch.yaml", checkpoint=out / "model.safetensors").eval()
    from_checkpoint = build_model(out / "arch.yaml", checkpoint=out / "checkpoint.pt").eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), trained(x), rtol=0, atol=0)
        torch.testing.assert_close(from_checkpoint(x), trained(x), rtol=0, atol=0)
        torch.testing.assert_close(_onnx_outputs(out / "model.onnx", x), trained(x), rtol=1e-3, atol=1e-4)
    card = (out / "model_card.md").read_text()
    assert f"Validation accuracy **{metrics['val_accuracy']:.4f}**" in card and "epochs: 1" in card
    assert "latency | median" in card and "model.onnx" in card
