"""``hvtnas train`` as users call it: exit codes, files written, resume, one clear message on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hvtnas.cli import app
from hvtnas.train.checkpoint import load_checkpoint, load_model
from tests.train_helpers import one_thread, small_arch

pytestmark = pytest.mark.usefixtures(one_thread.__name__)
runner = CliRunner()


def _run_config(tmp_path: Path, **overrides: Any) -> Path:
    cfg = {
        "arch": small_arch(["pooling"]),
        "data": {"name": "digits", "resolution": 8},
        "train": {"epochs": 1, "batch_size": 64, "augment": {"hflip": False}},
        "output_dir": "out",
        **overrides,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _assert_user_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_train_writes_checkpoint_and_metrics_then_resumes(tmp_path: Path) -> None:
    config = _run_config(tmp_path)
    result = runner.invoke(app, ["train", str(config), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert metrics["status"] == "completed" and len(metrics["epochs"]) == 1
    out = tmp_path / "out"  # relative to the config file
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.json", "arch.yaml", "run.yaml"}
    assert json.loads((out / "metrics.json").read_text())["val_accuracy"] == metrics["val_accuracy"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["arch"].input.num_classes == 10
    assert load_model(out / "checkpoint.pt").arch_config.name == "small"

    again = runner.invoke(app, ["train", str(config)])
    _assert_user_error(again, "checkpoint.pt already exists", "--resume")

    resumed = runner.invoke(app, ["train", str(config), "--resume", "--epochs", "2", "--json"])
    assert resumed.exit_code == 0, resumed.output
    epochs = json.loads(resumed.stdout)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[0] == metrics["epochs"][0]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_a_bare_architecture_config_trains_with_command_line_data(tmp_path: Path) -> None:
    arch = tmp_path / "arch.yaml"
    arch.write_text(yaml.safe_dump(small_arch(["pooling"])))
    out_args = ["--out", str(tmp_path / "o"), "--no-progress"]
    result = runner.invoke(
        app,
        ["train", str(arch), "--dataset", "synthetic", "--resolution", "8", "--epochs", "1", *out_args],
    )
    assert result.exit_code == 0, result.output
    assert "completed: 1 epochs" in result.stdout and (tmp_path / "o" / "checkpoint.pt").is_file()
    assert "epoch 1/1  loss " in result.stderr and "val_acc" in result.stderr  # quiet log, not a bar


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"data": {"name": "digits", "bogus": 1}}, ["run.yaml:", "data.bogus: unknown key"]),
        ({"train": {"epochs": 0}}, ["train.epochs", "greater than 0"]),
        ({"data": {"name": "npz", "path": "missing.npz"}}, ["missing.npz: no such npz file"]),
        ({"data": {"name": "imagenet"}}, ["data.name", "'digits'"]),
        (
            {"arch": {"stages": [{"depth": 1, "width": 10, "heads": 3, "mixers": ["attention"]}]}},
            ["3 does not divide"],
        ),
    ],
)
def test_bad_configs_give_one_clear_message(tmp_path: Path, overrides: dict, needles: list[str]) -> None:
    result = runner.invoke(app, ["train", str(_run_config(tmp_path, **overrides))])
    _assert_user_error(result, *needles)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_bad_command_lines(tmp_path: Path) -> None:
    _assert_user_error(
        runner.invoke(app, ["train", str(tmp_path / "absent.yaml")]), "absent.yaml: no such file"
    )
    config = _run_config(tmp_path)
    _assert_user_error(
        runner.invoke(app, ["train", str(config), "--resume"]),
        "--resume",
        "does not exist (nothing to resume)",
    )
    _assert_user_error(runner.invoke(app, ["train", str(config), "--dataset", "npz"]), "needs a 'path'")
    _assert_user_error(runner.invoke(app, ["train", str(config), "--device", "gpu"]), "unknown device 'gpu'")
    corrupt = tmp_path / "out" / "checkpoint.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    _assert_user_error(
        runner.invoke(app, ["train", str(config), "--resume"]), "not a readable hvtnas checkpoint"
    )


def test_ddp_under_torchrun_on_cpu(tmp_path: Path) -> None:
    """Two processes with the Gloo backend: one JSON result from rank 0, one checkpoint."""
    pytest.importorskip("torch.distributed.run")
    import subprocess
    import sys

    config = _run_config(tmp_path, train={"epochs": 1, "batch_size": 64, "device": "cpu"})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "hvtnas", "train", str(config), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    metrics = json.loads(lines[0])
    # 2 ranks x 32 images per step (global batch 64) x steps of each rank's half of the data
    assert metrics["status"] == "completed" and metrics["images_seen"] == 2 * 32 * ((1797 - 359) // 2 // 32)
    assert load_checkpoint(tmp_path / "out" / "checkpoint.pt")["epoch"] == 1
