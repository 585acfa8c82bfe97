"""The command line, as users call it: exit codes, JSON output, error messages without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hvtnas.cli import app
from hvtnas.models import zoo
from tests.conftest import tiny_config

runner = CliRunner()


def test_zoo_lists_every_model_with_its_params() -> None:
    result = runner.invoke(app, ["zoo", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == zoo.names()
    swin = next(r for r in rows if r["name"] == "swin_t")
    assert swin["params"] == 28_288_354 and swin["published_gmacs"] == 4.5


def test_zoo_table() -> None:
    result = runner.invoke(app, ["zoo"])
    assert result.exit_code == 0
    assert "swin_t" in result.stdout and "28,288,354" in result.stdout


def test_build_json_is_exactly_one_object() -> None:
    result = runner.invoke(app, ["build", "pvt_v2_b0", "--resolution", "64", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # fails if anything else is printed
    assert data["params"] == 3_666_760 and isinstance(data["params"], int)
    assert data["stages"] == [
        {"channels": 32, "height": 16, "width": 16},
        {"channels": 64, "height": 8, "width": 8},
        {"channels": 160, "height": 4, "width": 4},
        {"channels": 256, "height": 2, "width": 2},
    ]


def test_build_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(["window", "shifted_window"])))
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == 0, result.output
    assert "stage4" in result.stdout and "64 x 1 x 1" in result.stdout


def _assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_bad_config_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    cfg = tiny_config(["attention"])
    cfg["stages"][2]["heads"] = 5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "heads: 5" in text)
    result = runner.invoke(app, ["build", str(path)])
    _assert_user_error(result, f"{path}:{line}:", "stages[2].heads: 5 does not divide width 48")


def test_unknown_mixer_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config(["fancy_attention"])))
    _assert_user_error(runner.invoke(app, ["build", str(path)]), "unknown token mixer 'fancy_attention'")


def test_yaml_syntax_error_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("stages: [\n  {depth: 2,\n")
    _assert_user_error(runner.invoke(app, ["build", str(path)]), "YAML syntax error", str(path))


def test_missing_file_and_unknown_name_exit_2(tmp_path: Path) -> None:
    _assert_user_error(runner.invoke(app, ["build", str(tmp_path / "gone.yaml")]), "no such file")
    _assert_user_error(runner.invoke(app, ["build", "swin_xl"]), "neither a zoo model", "swin_t")


def test_mixers_lists_the_registry() -> None:
    result = runner.invoke(app, ["mixers"])
    assert result.exit_code == 0
    assert "shifted_window" in result.stdout and "sr_ratio" in result.stdout


def test_the_installed_command_runs(tmp_path: Path) -> None:
    """Through a real process: the entry point, stdout/stderr separation and the exit code."""
    ok = subprocess.run(
        [sys.executable, "-m", "hvtnas", "build", "swin_t", "--resolution", "32", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["params"] == 28_288_354
    path = tmp_path / "bad.yaml"
    path.write_text("stages:\n  - {depth: 0, width: 8, mixers: [pooling]}\n")
    bad = subprocess.run(
        [sys.executable, "-m", "hvtnas", "build", str(path)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "stages[0].depth" in bad.stderr and "Traceback" not in bad.stderr and bad.stdout == ""
