"""The command line, as users call it: exit codes, JSON output, error messages without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


def _without_torch(*commands: list[str]) -> subprocess.CompletedProcess:
    """Run ``hvtnas`` commands in one fresh interpreter; it prints whether torch was imported."""
    code = (
        "import sys\n"
        "from hvtnas.cli import main\n"
        f"for argv in {[list(c) for c in commands]!r}:\n"
        "    sys.argv = ['hvtnas', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, (argv, exit.code)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_help_does_not_import_torch() -> None:
    commands = [["--help"]] + [[c, "--help"] for c in ("search", "studies", "show", "build", "train", "zoo")]
    result = _without_torch(*commands, ["space", "show", "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch imported: False"), result.stdout[-500:]
    assert "studies" in result.stdout and "--more" in result.stdout and "--timeout" in result.stdout
    # the real entry point too: `python -m hvtnas --help` with torch made unimportable
    blocked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['torch'] = None; "
            "sys.argv = ['hvtnas', '--help']; import runpy; runpy.run_module('hvtnas', run_name='__main__')",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert blocked.returncode == 0 and "search" in blocked.stdout, blocked.stderr


def test_help_texts_written_out_match_the_library() -> None:
    from typing import get_args

    from hvtnas.cli.train import DATASETS
    from hvtnas.train.data import DatasetName

    assert get_args(DatasetName) == DATASETS


def _fake_study(storage: str, name: str, n_trained: int) -> None:
    """A study as the search leaves it (objectives, outcomes, architectures), without training."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from hvtnas.config import ArchConfig

    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "flops"])
    dist = {"x": FloatDistribution(0, 1)}
    for i in range(n_trained):
        arch = ArchConfig.model_validate(tiny_config(["pooling"] * (i + 1))).to_dict()
        attrs = {"arch": arch, "arch_key": f"k{i}", "outcome": "trained"}
        if i == 0:
            attrs["warm_start"] = "poolformer_s12@2M"
        study.add_trial(
            create_trial(
                params={"x": 0.1}, distributions=dist, values=[0.5 + 0.1 * i, 2e6 * (i + 1)], user_attrs=attrs
            )
        )
    over = {"arch": arch, "arch_key": "big", "outcome": "over_budget", "constraint_violations": ["flops"]}
    study.add_trial(create_trial(params={"x": 0.2}, distributions=dist, values=[0.0, 3e9], user_attrs=over))
    failed = {"outcome": "failed"}
    study.add_trial(
        create_trial(params={"x": 0.3}, distributions=dist, state=TrialState.FAIL, user_attrs=failed)
    )


def test_studies_lists_each_study_with_counts_and_show_prints_the_front(tmp_path: Path) -> None:
    from hvtnas.cli.studies import describe_arch
    from hvtnas.config import ArchConfig
    from hvtnas.summary import describe

    runs = tmp_path / "runs"
    for name, n in (("alpha", 2), ("beta", 3)):
        (runs / name).mkdir(parents=True)
        _fake_study(f"sqlite:///{runs / name / 'study.db'}", name, n)
    (runs / "empty").mkdir()  # not a run folder: skipped
    listed = runner.invoke(app, ["studies", str(runs), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["study"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"alpha", "beta"}
    assert rows["beta"]["outcomes"] == {"trained": 3, "over_budget": 1, "failed": 1}
    assert rows["beta"]["trials"] == 5 and rows["beta"]["best_accuracy"] == pytest.approx(0.7)
    url = f"sqlite:///{runs / 'alpha' / 'study.db'}"
    by_url = json.loads(runner.invoke(app, ["studies", "--storage", url, "--json"]).stdout)
    assert [(r["study"], r["where"], r["trials"]) for r in by_url] == [("alpha", url, 4)]
    table = runner.invoke(app, ["studies", str(runs)])
    assert table.exit_code == 0 and "2 trained, 1 over budget, 1 failed" in table.stdout

    shown = runner.invoke(app, ["show", str(runs / "beta")])
    assert shown.exit_code == 0, shown.output
    arch = ArchConfig.model_validate(tiny_config(["pooling"]))
    assert describe_arch(arch.to_dict()) == describe(arch)
    front = [line for line in shown.stdout.splitlines() if describe(arch).split(":")[0] in line]
    assert len(front) == 3  # every trained trial is on this front; over budget and failed are not
    assert "2.00 MMACs" in shown.stdout and "0.5000" in shown.stdout
    assert "warm start poolformer_s12@2M" in shown.stdout and describe(arch) in shown.stdout
    every = json.loads(runner.invoke(app, ["show", str(runs / "beta"), "--all", "--json"]).stdout)
    assert [r["outcome"] for r in every] == ["trained"] * 3 + ["over_budget", "failed"]
    assert every[3]["values"] == {"flops": 3e9}  # never the placeholder accuracy of an untrained trial

    # neither command loads torch
    result = _without_torch(["studies", str(runs)], ["show", str(runs / "alpha")])
    assert result.returncode == 0, result.stderr
    assert "alpha" in result.stdout and result.stdout.strip().endswith("torch imported: False")


def test_output_is_never_wrapped_at_80_columns_outside_a_terminal() -> None:
    from hvtnas.cli._common import console

    long = "trial 12: over budget (not trained: " + "params 1.3e+05 > 1e+05; " * 8 + ")"
    with console.capture() as captured:
        console.print(long, highlight=False)
    assert captured.get().rstrip("\n") == long
