"""Space membership (which parameters sample a given architecture) and warm-starting a study from
published designs and one's own architecture files."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from hvtnas.cli import app
from hvtnas.config import ArchConfig, canonical_config
from hvtnas.models import scale_architecture, zoo
from hvtnas.search.study import load_search_spec
from hvtnas.search.warm_start import warm_start_points
from hvtnas.space import NotInSpaceError, SearchSpace, _SweepTrial
from tests.conftest import tiny_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_sample_of_a_shipped_space_is_found_again_with_its_parameters(path: Path) -> None:
    space = load_search_spec(path).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(25):
        trial = study.ask()
        arch = space.sample(trial)
        params = space.params_for(arch)
        # parameters of parts that are no part of the model (drop path; head widths of a stage
        # without attention) are left to the sampler
        assert params.items() <= trial.params.items()
        again = space.sample(optuna.trial.FixedTrial({**trial.params, **params}))
        assert canonical_config(again) == canonical_config(arch)


@pytest.mark.parametrize("name", ["animal_mnist", "cifar"])
def test_a_published_family_scaled_to_the_space_is_a_point_of_it(name: str) -> None:
    """What the warm start evaluates: every family of the comparison at both budgets (the space's
    own warm_start list) is a point of the shipped space."""
    spec = load_search_spec(ROOT / "search_spaces" / f"{name}.yaml")
    points = warm_start_points(spec)
    families = spec.experiment.warm_start.zoo
    assert len(points) == len(families) * len(spec.experiment.warm_start.flops)
    for point in points:
        # parameters outside the architecture's identity (drop path) are the sampler's: any value
        again = spec.space.sample(_SweepTrial(point.params))
        assert canonical_config(again) == canonical_config(point.arch), point.label
        family = point.label.split("@")[0]
        # the family's own parts are kept: mixers, stem, norms, FFN
        original = zoo.get_config(family)
        assert [m.kind for m in again.stages[2].mixers] == [m.kind for m in original.stages[2].mixers]
        assert again.stem.kind == original.stem.kind
        assert again.stages[0].norm == original.stages[0].norm
        assert again.stages[0].ffn == original.stages[0].ffn


def test_the_published_designs_themselves_are_points_of_the_imagenet_space() -> None:
    spec = load_search_spec(ROOT / "search_spaces" / "metaformer.yaml")
    points = warm_start_points(spec)
    assert [p.label for p in points] == spec.experiment.warm_start.zoo
    for point in points:
        published = zoo.get_config(point.label)  # at 224, every attention head is 32 wide already
        assert canonical_config(point.arch) == canonical_config(published), point.label
        again = spec.space.sample(optuna.trial.FixedTrial(point.params))
        assert canonical_config(again) == canonical_config(published), point.label


def test_membership_names_where_an_architecture_leaves_the_space() -> None:
    space = SearchSpace.from_dict(tiny_search_space())
    inside = space.sample(optuna.trial.FixedTrial({"stage1.width": 16, "stage1.mixer": "pooling"}))
    assert space.params_for(inside) == {"stage1.width": 16, "stage1.mixer": "pooling"}
    assert space.contains(inside)

    wider = ArchConfig.model_validate({**inside.to_dict(), "name": "wide"})
    wider.stages[0].width = 24
    message = r"wide is not a point .*stages\[0\]\.width: 24 is not one of 8, 16"
    with pytest.raises(NotInSpaceError, match=message):
        space.params_for(wider)
    assert not space.contains(wider)

    deeper = inside.model_copy(deep=True)
    deeper.stages[1].depth = 3
    with pytest.raises(NotInSpaceError, match=r"stages\[1\]\.depth: 3, the space has 1"):
        space.params_for(deeper)

    other_norm = inside.model_copy(deep=True)
    other_norm.stages[0].norm.eps = 1e-6  # a default the space leaves out: caught by the exact check
    with pytest.raises(NotInSpaceError, match=r"stages\[0\]\.norm\.eps: the space gives 1e-05, not 1e-06"):
        space.params_for(other_norm)


def test_heads_given_either_way_and_regularisation_do_not_change_membership() -> None:
    space = SearchSpace.from_dict(tiny_search_space())
    arch = space.sample(optuna.trial.FixedTrial({"stage1.width": 16, "stage1.mixer": "window"}))
    as_head_dim = arch.model_copy(deep=True)
    as_head_dim.stages[0].heads, as_head_dim.stages[0].head_dim = None, 8  # 2 heads of 8 at width 16
    as_head_dim.drop_path_rate = 0.3
    assert space.params_for(as_head_dim) == {"stage1.width": 16, "stage1.mixer": "window"}


def test_scaling_with_a_head_width_gives_heads_of_that_width() -> None:
    scaled = scale_architecture(zoo.get_config("swin_t"), width_mult=0.25, head_dim=8)
    assert [s.num_heads for s in scaled.stages] == [s.width // 8 for s in scaled.stages]


def _space_file(tmp_path: Path, **warm_start: object) -> Path:
    space = tiny_search_space(warm_start=warm_start)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _own_arch(tmp_path: Path, width: int, name: str = "mine") -> str:
    space = SearchSpace.from_dict(tiny_search_space())
    arch = space.sample(optuna.trial.FixedTrial({"stage1.width": width, "stage1.mixer": "window"}))
    arch = arch.model_copy(update={"name": name})
    arch.to_yaml(tmp_path / f"{name}.yaml")
    return f"{name}.yaml"


def test_warm_start_trials_come_first_labelled_with_their_design(tmp_path: Path) -> None:
    path = _space_file(tmp_path, configs=[_own_arch(tmp_path, 16)])
    result = runner.invoke(
        app, ["search", str(path), "--trials", "2", "--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    )
    assert result.exit_code == 0, result.output
    assert "trial 0 (warm start mine): trained" in result.output
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'runs/space/study.db'}")
    first, second = sorted(study.trials, key=lambda t: t.number)
    assert first.user_attrs["warm_start"] == "mine"
    assert first.state == TrialState.COMPLETE
    arch = ArchConfig.model_validate(first.user_attrs["arch"])
    assert (arch.stages[0].width, arch.stages[0].mixers[0].kind) == (16, "window")
    assert "warm_start" not in second.user_attrs  # the sampler's own
    # resuming does not queue the designs again
    resumed = runner.invoke(
        app, ["search", str(path), "--trials", "3", "--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    )
    assert resumed.exit_code == 0, resumed.output
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'runs/space/study.db'}")
    assert sum("warm_start" in t.user_attrs for t in study.trials) == 1

    report = runner.invoke(app, ["report", str(tmp_path / "runs" / "space"), "--no-cache"])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "runs" / "space" / "report.html").read_text()
    assert "warm start (published designs)" in html
    assert "trial 0 (warm start mine)" in html  # its hover on the accuracy-vs-cost plot
    csv = (tmp_path / "runs" / "space" / "report.csv").read_text().splitlines()
    assert csv[0].split(",").count("warm_start") == 1
    assert any(",mine," in row for row in csv[1:])


def test_a_warm_start_design_outside_the_space_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = _space_file(tmp_path, configs=[_own_arch(tmp_path, 16), _own_arch(tmp_path, 16, "other")])
    other = ArchConfig.from_yaml(tmp_path / "other.yaml")
    other.stages[0].width = 24
    other.to_yaml(tmp_path / "other.yaml")
    result = runner.invoke(
        app, ["search", str(path), "--trials", "2", "--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    )
    assert result.exit_code == 2
    assert "experiment.warm_start: other is not a point of" in result.output
    assert "stages[0].width: 24 is not one of 8, 16" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_warm_start_settings_are_validated(tmp_path: Path) -> None:
    path = _space_file(tmp_path, zoo=["convformer_s18", "no_such_model"], flops=[1e6])
    result = runner.invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "not in the zoo: no_such_model" in result.output
    path = _space_file(tmp_path, zoo=["convformer_s18"], flops=[-1.0])
    result = runner.invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "budgets must be positive MACs" in result.output
    # a design the space cannot express: the error names the family and the field
    path = _space_file(tmp_path, zoo=["convformer_s18"])
    result = runner.invoke(app, ["search", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "experiment.warm_start: convformer_s18 is not a point of" in result.output
    assert not (tmp_path / "runs").exists()


def test_nsga2_generations_default_to_the_warm_start_designs(tmp_path: Path) -> None:
    from hvtnas.search.experiment import SamplerConfig
    from hvtnas.search.study import open_study

    # a first generation of 16 warm-start designs and 4 random points would spend a 40-trial
    # study on random samples; the designs themselves are the first generation instead
    assert SamplerConfig(name="nsga2").generation_size(16) == 16
    assert SamplerConfig(name="nsga2").generation_size(3) == 10
    assert SamplerConfig(name="nsga2").generation_size(0) == 20
    assert SamplerConfig(name="nsga2", population_size=6).generation_size(16) == 6

    configs = [_own_arch(tmp_path, width, f"w{width}") for width in (8, 16)]
    space = tiny_search_space(warm_start={"configs": configs})
    space["experiment"]["sampler"] = {"name": "nsga2", "seed": None}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    created = open_study(load_search_spec(path), "s", storage)
    # a worker process joining the study queues nothing and builds the same sampler
    joined = open_study(load_search_spec(path), "s", storage, warm_start=[])
    for study in (created, joined):
        assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
        assert study.sampler._population_size == 10  # private: Optuna has no getter for it
