"""Search spaces: parsing, readable Optuna names, conditional parameters, counting, errors, CLI."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hvtnas import ArchConfig, ConfigError, build_model
from hvtnas.cli import app
from hvtnas.space import SearchSpace, iter_samples
from tests.conftest import tiny_config

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(**stage0: object) -> dict:
    cfg = tiny_config(["pooling"])
    cfg["stem"] = {"kind": {"choice": ["patch", "overlap"]}, "norm": "layernorm"}
    cfg["stages"][0].update(stage0)
    cfg["stages"][1]["mixers"] = {
        "choice": [
            ["pooling"],
            [{"kind": "spatial_reduction", "sr_ratio": {"choice": [2, 4]}}],
            [{"kind": "window", "window_size": {"int": [3, 7], "step": 2}}, "shifted_window"],
        ]
    }
    return cfg


def test_names_are_readable_and_conditional_parameters_live_under_their_mixer() -> None:
    space = SearchSpace.from_dict(_space(width={"choice": [16, 32]}))
    dims = {d.name: d for d in space.dimensions()}
    assert list(dims) == [
        "stem.kind",
        "stage1.width",
        "stage2.mixer",
        "stage2.spatial_reduction.sr_ratio",
        "stage2.window.window_size",
    ]
    assert dims["stage2.window.window_size"].condition.startswith("stage2.mixer = window")
    assert dims["stage2.window.window_size"].size == 3
    # 2 stems x 2 widths x (pooling + 2 reductions + 3 window sizes)
    assert space.size() == 2 * 2 * (1 + 2 + 3)


def test_sampling_through_optuna_gives_valid_architectures() -> None:
    space = SearchSpace.from_dict(_space(depth={"int": [1, 3]}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_mixers = set()
    for _ in range(12):
        trial = study.ask()
        cfg = space.sample(trial)
        assert isinstance(cfg, ArchConfig)
        kind = cfg.stages[1].mixers[0].kind
        seen_mixers.add(kind)
        # a conditional parameter is asked for only when its mixer is chosen
        assert ("stage2.window.window_size" in trial.params) == (kind == "window")
        assert ("stage2.spatial_reduction.sr_ratio" in trial.params) == (kind == "spatial_reduction")
        if kind == "window":
            assert cfg.stages[1].mixers[0].window_size == trial.params["stage2.window.window_size"]
        study.tell(trial, 0.0)
    assert seen_mixers == {"pooling", "spatial_reduction", "window"}


def test_named_leaves_are_shared() -> None:
    cfg = tiny_config(["pooling"])
    for stage in cfg["stages"]:
        stage["mlp_ratio"] = {"choice": [2, 4], "name": "mlp_ratio"}
    space = SearchSpace.from_dict(cfg)
    assert [d.name for d in space.dimensions()] == ["mlp_ratio"] and space.size() == 2
    for sample in iter_samples(space, 5, seed=3):
        assert len({s.mlp_ratio for s in sample.stages}) == 1


def test_fixed_config_is_a_space_of_one() -> None:
    space = SearchSpace.from_dict(tiny_config(["window", "shifted_window"]))
    assert space.size() == 1 and space.dimensions() == []
    [sample] = list(iter_samples(space, 1))
    assert sample == ArchConfig.from_dict(tiny_config(["window", "shifted_window"]))


def _problems(data: dict, tmp_path: Path) -> list[str]:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_yaml(path)
    return err.value.problems


@pytest.mark.parametrize(
    ("stage0", "expected"),
    [
        ({"width": {"choice": []}}, "stages[0].width.choice: List should have at least 1 item"),
        ({"depth": {"int": [3, 1]}}, "stages[0].depth: low <= high must hold, but got (low=3, high=1)"),
        ({"mlp_ratio": {"float": [0.0, 2.0], "log": True}}, "a log range needs low > 0"),
        ({"depth": {"int": [1, 2], "stepp": 2}}, "stages[0].depth.stepp: unknown key"),
        ({"depth": {"choice": [1], "int": [1, 2]}}, "a leaf is one of choice/int/float"),
        (
            {"mixers": {"choice": [["pooling"], ["windw"]]}},
            "with stage1.mixer = windw: stages[0].mixers[0]: unknown token mixer 'windw'",
        ),
        (
            {"width": {"choice": [16, 17]}},
            "with stage1.width = 17: stages[0].heads: 2 does not divide width 17",
        ),
    ],
)
def test_bad_spaces_name_the_field_and_line(stage0: dict, expected: str, tmp_path: Path) -> None:
    problems = _problems(_space(**stage0), tmp_path)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"{tmp_path / 'space.yaml'}:") for p in problems)


def test_cli_show_and_sample(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_space(width={"choice": [16, 32]}), sort_keys=False))
    runner = CliRunner()
    shown = runner.invoke(app, ["space", "show", str(path), "-n", "2"])
    assert shown.exit_code == 0, shown.output
    assert "stage2.window.window_size" in shown.stdout and "distinct architectures: 24" in shown.stdout
    sampled = runner.invoke(app, ["space", "sample", str(path), "-n", "3", "--out", str(tmp_path / "out")])
    assert sampled.exit_code == 0, sampled.output
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert len(files) == 3
    for file in files:
        assert build_model(file).forward_features  # each sample builds again from its file
    bad = runner.invoke(app, ["space", "show", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "no such file" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parent.parent.joinpath("search_spaces").glob("*.yaml"))
)
def test_shipped_spaces_parse_and_their_samples_build(path: Path) -> None:
    from hvtnas.search import load_search_spec

    space = load_search_spec(path).space  # the experiment section is validated too
    assert space.size() > 1
    for cfg in iter_samples(space, 3, seed=0):
        model = build_model(cfg)
        assert model(torch.zeros(1, cfg.input.channels, 32, 32)).shape == (1, cfg.input.num_classes)
