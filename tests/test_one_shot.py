"""One-shot search: weight inheritance (extracted model == supernet path, bitwise in eval) over
random points of the shipped spaces and for every registered mixer, supernet training with the
trainer and its resume, and the ``strategy: one_shot`` study."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from hvtnas import MIXERS
from hvtnas.config import ArchConfig, InputConfig
from hvtnas.errors import HvtnasError
from hvtnas.search.one_shot import (
    OneShotConfig,
    Supernet,
    SupernetError,
    build_supernet,
    finetune,
    inherited_accuracy,
    recalibrate_batchnorm,
    save_supernet,
    train_supernet,
)
from hvtnas.space import SearchSpace
from hvtnas.train import DataConfig, TrainConfig, load_dataset
from tests.train_helpers import one_thread  # noqa: F401 - a fixture


def _same_outputs(supernet: Supernet, archs: list[ArchConfig], x: torch.Tensor) -> None:
    supernet.eval()
    for arch in archs:
        supernet.set_path(arch)
        with torch.no_grad():
            path_out = supernet(x)
            standalone = supernet.extract(arch).eval()(x)
        assert torch.equal(path_out, standalone), f"{arch}: extracted model differs from the supernet path"
        assert standalone.shape == (len(x), supernet.point(arch).input.num_classes)


@pytest.mark.parametrize("space_file", ["quickstart", "animal_mnist"])
def test_extracted_models_equal_supernet_paths(space_file: str, one_thread: None) -> None:  # noqa: F811
    space = SearchSpace.from_yaml(f"search_spaces/{space_file}.yaml")
    supernet = Supernet(space, cover_samples=4)
    torch.manual_seed(0)
    archs = [supernet.sample() for _ in range(6)] + [supernet.sample("max"), supernet.sample("min")]
    # weights moved off their initial values, so that slices of trained tensors are compared
    with torch.no_grad():
        for p in supernet.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    res = supernet.eval_arch.input
    _same_outputs(supernet, archs, torch.randn(3, res.channels, res.resolution, res.resolution))


@pytest.fixture(scope="module")
def animal_mnist_supernet() -> Supernet:
    """The default supernet of animal_mnist.yaml (seconds to build), for the tests that only read
    its weights; a test that changes them works on a copy."""
    return Supernet(SearchSpace.from_yaml("search_spaces/animal_mnist.yaml"), cover_samples=0)


def test_sub_networks_share_slices_of_one_tensor() -> None:
    space = SearchSpace.from_yaml("search_spaces/quickstart.yaml")
    supernet = Supernet(space, cover_samples=0)
    small = space.sample(_Fixed({"stage1.width": 16}))
    large = space.sample(_Fixed({"stage1.width": 32}))
    a = supernet.extract(small).state_dict()["stem.proj.weight"]
    b = supernet.extract(large).state_dict()["stem.proj.weight"]
    assert a.shape[0] == 16 and b.shape[0] == 32
    assert torch.equal(a, b[:16])  # the narrow stem is the corner of the wide one


def test_patch_merging_of_a_narrower_stage_takes_each_pixels_leading_channels(
    animal_mnist_supernet: Supernet,
    one_thread: None,  # noqa: F811
) -> None:
    """Swin's patch merging reads the 2x2 neighbourhood's four pixels one after the other (4C):
    a narrow network's second pixel must meet the weights of the wide one's second pixel's first
    channels, not those of its first pixel's last channels (a leading-corner slice)."""
    supernet, space = animal_mnist_supernet, animal_mnist_supernet.space
    merging = "patch_merging(norm=layernorm,norm_position=pre)"
    narrow, wide = (
        space.sample(_Fixed({"downsample": merging, "stage1.width": width, "stage2.width": 64}))
        for width in (16, 48)
    )
    a, b = (supernet.extract(arch).state_dict() for arch in (narrow, wide))
    reduction, norm = "stages.1.downsample.reduction.weight", "stages.1.downsample.norm.weight"
    assert a[reduction].shape == (64, 4 * 16) and b[reduction].shape == (64, 4 * 48)
    per_pixel = b[reduction].unflatten(1, (4, 48))[:, :, :16].flatten(1, 2)  # (out, 4 pixels x 16)
    assert torch.equal(a[reduction], per_pixel)
    assert torch.equal(a[norm], b[norm].unflatten(0, (4, 48))[:, :16].flatten())
    initial = copy.deepcopy(supernet.state_dict())  # the module's supernet: restored after
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            for p in supernet.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        _same_outputs(supernet, [narrow, wide], torch.randn(2, 1, 28, 28))
    finally:
        supernet.load_state_dict(initial)


def test_ffn_options_get_weights_of_their_own_when_asked(
    animal_mnist_supernet: Supernet,
    one_thread: None,  # noqa: F811
) -> None:
    space = animal_mnist_supernet.space
    shared, own = animal_mnist_supernet, Supernet(space, cover_samples=0, ffn_per_kind=True)
    mlp = space.sample(_Fixed({"ffn": "mlp"}))
    mixffn = space.sample(_Fixed({"ffn": "mixffn"}))
    fc1 = "stages.0.blocks.0.ffn.fc1.weight"
    for supernet, same in ((shared, True), (own, False)):
        a, b = (supernet.extract(arch).state_dict()[fc1] for arch in (mlp, mixffn))
        assert torch.equal(a, b) is same
    assert len(own.weights) > len(shared.weights)
    torch.manual_seed(0)
    _same_outputs(own, [own.sample() for _ in range(4)], torch.randn(2, 1, 28, 28))


def test_stem_and_downsampling_options_differing_only_in_norms_share_weights_when_asked(
    animal_mnist_supernet: Supernet,
    one_thread: None,  # noqa: F811
) -> None:
    """With ``shared_parts``, options that differ only in norm, norm position, padding or bias
    compute their channels with one convolution (the blocks after them see one basis); other
    kinds and kernels, and every option by default, have weights of their own."""
    space = animal_mnist_supernet.space
    shared, own = Supernet(space, cover_samples=0, shared_parts=True), animal_mnist_supernet
    stems = ["overlap(kernel_size=7,padding=3,norm=layernorm)", "overlap(kernel_size=7,padding=2)"]
    downs = ["conv(kernel_size=3,norm=layernorm,norm_position=post)", "conv(kernel_size=3)"]
    other = ("conv(norm=layernorm)", "conv(kernel_size=2,norm=layernorm,norm_position=post)")
    first, second, third = (
        space.sample(_Fixed({"stem": stem, "downsample": down}))
        for stem, down in ((stems[0], downs[0]), (stems[1], downs[1]), other)
    )
    for supernet, same in ((shared, True), (own, False)):
        a, b, c = (supernet.extract(arch).state_dict() for arch in (first, second, third))
        for name in ("stem.proj.weight", "stages.1.downsample.conv.weight"):
            assert torch.equal(a[name], b[name]) is same
        down = "stages.1.downsample.conv.weight"  # a 2x2 kernel is no slice of the 3x3 one's slot
        assert not torch.equal(a[down][..., :2, :2], c[down])
    assert len(own.weights) > len(shared.weights)
    torch.manual_seed(0)
    _same_outputs(shared, [first, second, third, shared.sample()], torch.randn(2, 1, 28, 28))


def test_a_classifier_reading_the_unnormalized_residual_stream_has_weights_of_its_own(
    animal_mnist_supernet: Supernet,
    one_thread: None,  # noqa: F811
) -> None:
    """PVTv2's head has no norm of its own (its last stage's output norm does that); without that
    output norm its classifier reads the raw residual stream, whose scale the normalised heads'
    shared classifier was never trained for (such paths reached losses of ~50 in training)."""
    supernet, space = animal_mnist_supernet, animal_mnist_supernet.space
    bare = "norm=None"
    raw, out_normed, normed = (
        space.sample(_Fixed({"head": head, "out_norm": out_norm}))
        for head, out_norm in ((bare, False), (bare, True), ("norm=layernorm,norm_position=pre_pool", False))
    )
    fc_raw, fc_out_normed, fc_normed = (
        supernet.extract(arch).state_dict()["head.fc.weight"] for arch in (raw, out_normed, normed)
    )
    assert torch.equal(fc_out_normed, fc_normed)  # both read normalised features: one classifier
    assert not torch.equal(fc_raw, fc_normed)
    torch.manual_seed(0)
    _same_outputs(supernet, [raw, out_normed, normed], torch.randn(2, 1, 28, 28))


def test_fused_qkv_is_sliced_part_by_part() -> None:
    space = SearchSpace.from_yaml("search_spaces/quickstart.yaml")
    supernet = Supernet(space, cover_samples=0)
    narrow, wide = (
        supernet.extract(space.sample(_Fixed({"stage2.mixer": "attention", "stage2.width": width})))
        for width in (32, 48)
    )
    name = "stages.1.blocks.0.mixer.qkv.weight"
    q_k_v = narrow.state_dict()[name].unflatten(0, (3, 32))  # (part, rows, in)
    wide_parts = wide.state_dict()[name].unflatten(0, (3, 48))
    assert torch.equal(q_k_v, wide_parts[:, :32, :32])  # the narrow query starts the wide query


class _Fixed:
    """First options and low ends, but the given values (a stand-in trial)."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        self.fixed = fixed

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.fixed.get(name, choices[0])

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self.fixed.get(name, low)

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> float:
        return self.fixed.get(name, low)


def _mixer_space(kind: str) -> dict[str, Any]:
    """Two stages with the mixer, widths, depths and MLP ratios to slice, at 32x32."""
    stage: dict[str, Any] = {"ffn": "none", "norm": "batchnorm"} if kind == "mbconv" else {}
    return {
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "patch", "norm": "layernorm"},
        "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
        "stages": [
            {
                "depth": {"int": [1, 2]},
                "width": {"choice": [16, 24, 32]},
                "heads": {"choice": [2, 4]},
                "mlp_ratio": {"choice": [2, 4]},
                "mixers": [{"kind": kind}],
                **stage,
            },
            {"depth": 1, "width": {"choice": [32, 48]}, "heads": 4, "mixers": [{"kind": kind}], **stage},
        ],
    }


@pytest.mark.parametrize("kind", MIXERS.names())
def test_every_mixer_shares_weights_in_a_supernet(kind: str, one_thread: None) -> None:  # noqa: F811
    space = SearchSpace.from_dict(_mixer_space(kind))
    supernet = Supernet(space, cover_samples=2)
    torch.manual_seed(1)
    archs = [supernet.sample("max"), supernet.sample("min"), supernet.sample()]
    _same_outputs(supernet, archs, torch.randn(2, 3, 32, 32))
    # and it trains: one sandwich step gives every path's weights a gradient
    supernet.train()
    loss = supernet.training_loss(torch.randn(4, 3, 32, 32), torch.randint(10, (4,)))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in supernet.parameters())


@pytest.mark.parametrize("distill", [True, False])
def test_the_sandwich_rules_smaller_paths_learn_the_largest_paths_predictions(
    distill: bool,
    one_thread: None,  # noqa: F811
) -> None:
    space = SearchSpace.from_dict(_mixer_space("pooling"))
    supernet = Supernet(space, cover_samples=2, sandwich_random=1, distill=distill).eval()  # no drop path
    x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
    torch.manual_seed(3)
    loss = supernet.training_loss(x, y, label_smoothing=0.1)
    torch.manual_seed(3)
    paths = [supernet.sample("max"), supernet.sample("min"), supernet.sample()]
    largest, *others = [supernet.forward_path(arch, x) for arch in paths]
    target = largest.softmax(dim=-1) if distill else y
    smoothing = 0.0 if distill else 0.1
    expected = [F.cross_entropy(largest, y, label_smoothing=0.1)]
    expected += [F.cross_entropy(logits, target, label_smoothing=smoothing) for logits in others]
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def test_a_point_outside_the_space_is_refused_with_its_place() -> None:
    space = SearchSpace.from_yaml("search_spaces/quickstart.yaml")
    supernet = Supernet(space, cover_samples=0)
    arch = space.sample(_Fixed({}))
    wider = arch.model_copy(
        update={"stages": [arch.stages[0].model_copy(update={"width": 40}), *arch.stages[1:]]}
    )
    with pytest.raises(
        SupernetError, match=r"stem .* shape \(40, .*is this architecture a point of the space"
    ):
        supernet.extract(wider)


def test_batchnorm_statistics_are_recalibrated_per_sub_network() -> None:
    space = SearchSpace.from_dict(_mixer_space("mbconv"))
    supernet = Supernet(space, cover_samples=0)
    model = supernet.extract(supernet.sample("min"))
    batches = [torch.randn(8, 3, 32, 32) * 3 + 1 for _ in range(2)]
    digits = [torch.randn(2, 1, 16, 16)]
    assert recalibrate_batchnorm(model, batches) > 0
    means = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(m.abs().sum() > 0 for m in means)  # measured, not the initial zeros
    without = Supernet(SearchSpace.from_yaml("search_spaces/quickstart.yaml"), cover_samples=0)
    assert recalibrate_batchnorm(without.extract(without.eval_arch), digits) == 0  # no BatchNorm


# ------------------------------------------------------------------------------ training
def _tiny_training() -> tuple[SearchSpace, Any, TrainConfig]:
    space = SearchSpace.from_yaml("search_spaces/quickstart.yaml")
    data = load_dataset(DataConfig(name="digits", resolution=16, fraction=0.2))
    cfg = TrainConfig(epochs=2, batch_size=64, threads=1, device="cpu", warmup_epochs=0)
    return space, data, cfg


class _KilledError(Exception):
    pass


def test_supernet_training_resumes_to_the_same_weights(
    tmp_path,
    monkeypatch,
    one_thread: None,  # noqa: F811
) -> None:
    space, data, cfg = _tiny_training()
    one_shot = OneShotConfig(cover_samples=0, sandwich_random=1)
    straight = build_supernet(space, data, one_shot)
    result = train_supernet(straight, data, cfg, tmp_path / "straight")
    assert result.status == "completed" and len(result.epochs) == 2

    def save_then_die(path, supernet, state) -> None:
        save_supernet(path, supernet, state)
        raise _KilledError

    monkeypatch.setattr("hvtnas.search.one_shot.training.save_supernet", save_then_die)

    interrupted = build_supernet(space, data, one_shot)
    with pytest.raises(_KilledError):  # the process dies after its first checkpoint
        train_supernet(interrupted, data, cfg, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "supernet.pt", weights_only=True)["epoch"] == 1
    monkeypatch.undo()
    resumed = build_supernet(space, data, one_shot)
    result = train_supernet(resumed, data, cfg, tmp_path / "resumed")
    assert len(result.epochs) == 2
    for name, p in straight.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
    # a finished supernet is loaded, not trained again
    again = build_supernet(space, data, one_shot)
    train_supernet(again, data, cfg, tmp_path / "straight")
    assert all(torch.equal(p, again.state_dict()[n]) for n, p in straight.state_dict().items())


def test_training_paths_are_drawn_within_the_constraints(
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,  # noqa: F811
) -> None:
    from hvtnas.costs import CostSettings, measure_costs

    space, data, _ = _tiny_training()
    settings = CostSettings(dense_resolution=None)

    def flops(arch: ArchConfig) -> int:
        return measure_costs(arch, settings).flops

    free = build_supernet(space, data, OneShotConfig(cover_samples=0), constraints={})
    torch.manual_seed(0)
    drawn = sorted(flops(free.sample()) for _ in range(12))
    limit = drawn[len(drawn) // 2]  # about half of the space's points are over it
    constrained = build_supernet(space, data, OneShotConfig(cover_samples=0), constraints={"flops": limit})
    assert all(flops(constrained.sample()) <= limit for _ in range(12))
    assert flops(constrained.sample("max")) > limit  # the sandwich's largest path stays the largest
    off = OneShotConfig(cover_samples=0, constrained_sampling=False)
    assert build_supernet(space, data, off, constraints={"flops": limit}).accept is None
    impossible = build_supernet(space, data, OneShotConfig(cover_samples=0), constraints={"flops": 1})
    monkeypatch.setattr("hvtnas.search.one_shot.supernet.ACCEPT_ATTEMPTS", 10)
    with pytest.raises(SupernetError, match="within the experiment's constraints"):
        impossible.sample()


def test_a_checkpoint_of_another_supernet_is_refused(tmp_path, one_thread: None) -> None:  # noqa: F811
    space, data, cfg = _tiny_training()
    supernet = build_supernet(space, data, OneShotConfig(cover_samples=0))
    train_supernet(supernet, data, cfg.model_copy(update={"epochs": 1}), tmp_path)
    other_tree = copy.deepcopy(space.tree)
    other_tree["stages"][2]["width"] = {"choice": [48, 64, 96]}
    other = build_supernet(SearchSpace.from_dict(other_tree), data, OneShotConfig(cover_samples=0))
    with pytest.raises(Exception, match="a supernet of other slots"):
        train_supernet(other, data, cfg, tmp_path)


def test_inherited_accuracy_of_a_trained_supernet_beats_chance(tmp_path, one_thread: None) -> None:  # noqa: F811
    space, data, cfg = _tiny_training()
    supernet = build_supernet(space, data, OneShotConfig(cover_samples=0))  # uniform: random paths
    train_supernet(supernet, data, cfg.model_copy(update={"epochs": 3, "lr": 0.005}), tmp_path)
    torch.manual_seed(1)
    paths = [supernet.sample() for _ in range(4)]
    mean = sum(inherited_accuracy(supernet, arch, data, cfg)[1] for arch in paths) / len(paths)
    assert mean > 0.2  # 10 classes: chance is 0.1 (0.30 measured)
    assert supernet.point(supernet.eval_arch).input == InputConfig(channels=1, resolution=16, num_classes=10)


def _supernet_trained_one_epoch(tmp_path) -> tuple[Supernet, Any, TrainConfig]:
    space, data, cfg = _tiny_training()
    supernet = build_supernet(space, data, OneShotConfig(cover_samples=0))
    train_supernet(supernet, data, cfg.model_copy(update={"epochs": 1, "lr": 0.005}), tmp_path)
    return supernet, data, cfg


def test_finetuning_inherited_weights_trains_the_path_alone_and_leaves_the_supernet(
    tmp_path,
    one_thread: None,  # noqa: F811
) -> None:
    supernet, data, cfg = _supernet_trained_one_epoch(tmp_path)
    before = {n: p.clone() for n, p in supernet.state_dict().items()}
    arch = supernet.eval_arch
    _, as_inherited = inherited_accuracy(supernet, arch, data, cfg)
    tuned = [
        inherited_accuracy(supernet, arch, data, cfg, finetune_steps=4, finetune_lr=0.005) for _ in range(2)
    ]
    assert tuned[0] == tuned[1]  # the same batches and draws for every evaluation
    assert tuned[0][1] != as_inherited  # the steps changed the weights that were evaluated
    assert all(torch.equal(p, before[n]) for n, p in supernet.state_dict().items())  # on a copy
    subset = data.training_subset(4 * cfg.batch_size, seed=cfg.seed)
    assert subset.num_train == 4 * cfg.batch_size and subset.num_val == data.num_val


def test_a_head_refit_trains_the_classifier_head_on_the_inherited_backbone(
    tmp_path,
    one_thread: None,  # noqa: F811
) -> None:
    supernet, data, cfg = _supernet_trained_one_epoch(tmp_path)
    arch = supernet.eval_arch
    model = supernet.extract(arch)
    inherited = {n: p.detach().clone() for n, p in model.named_parameters()}
    finetune(model, data, cfg, 4, 0.005, scope="head")
    assert all(p.requires_grad for p in model.parameters())  # what trains is the caller's again
    for name, param in model.named_parameters():
        assert torch.equal(param, inherited[name]) is not name.startswith("head."), name
    refit = [
        inherited_accuracy(supernet, arch, data, cfg, finetune_steps=4, finetune_scope="head") for _ in "ab"
    ]
    assert refit[0] == refit[1]  # the same batches for every evaluation
    with pytest.raises(HvtnasError, match="scope"):
        finetune(supernet.extract(arch), data, cfg, 1, scope="stem")


def test_finetuning_rates_default_to_the_rate_measured_best_for_their_scope() -> None:
    experiment = TrainConfig(lr=0.002)
    assert OneShotConfig().finetune_scope == "head"
    assert OneShotConfig().finetune_rate(experiment) == pytest.approx(0.002)  # the head: the experiment's
    every_weight = OneShotConfig(finetune_scope="all")
    assert every_weight.finetune_rate(experiment) == pytest.approx(0.0005)  # the supernet's
    own = OneShotConfig(train=TrainConfig(lr=0.001), finetune_scope="all")
    assert own.finetune_rate(experiment) == pytest.approx(0.001)
    assert OneShotConfig(finetune_lr=0.01).finetune_rate(experiment) == 0.01
    with pytest.raises(ValidationError, match="finetune_scope"):
        OneShotConfig(finetune_scope="stem")


def test_finetune_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="finetune_steps"):
        OneShotConfig(finetune_steps=-1)
    with pytest.raises(ValidationError, match="finetune_lr"):
        OneShotConfig(finetune_lr=0)


def test_the_supernet_trains_at_a_fraction_of_the_experiments_rate_unless_given_its_own_recipe() -> None:
    """One path's step moves weights every path shares: by default the supernet takes the
    experiment's recipe at a quarter of its rate (measured to rank better); a recipe of its own
    is taken as written."""
    experiment = TrainConfig(epochs=3, lr=0.002, batch_size=64)
    default = OneShotConfig().supernet_recipe(experiment)
    assert default.lr == pytest.approx(0.0005)
    assert default.model_dump(exclude={"lr"}) == experiment.model_dump(exclude={"lr"})
    own = TrainConfig(epochs=30, lr=0.003)
    assert OneShotConfig(train=own).supernet_recipe(experiment) == own
    assert OneShotConfig().rule == "uniform"


# ------------------------------------------------------------------------------ the study
def test_one_shot_study_evaluates_inherited_weights_and_exports_them(tmp_path, one_thread: None) -> None:  # noqa: F811
    import optuna
    import yaml
    from typer.testing import CliRunner

    from hvtnas.cli import app
    from hvtnas.models.weights import load_weights
    from tests.conftest import tiny_search_space

    space = tiny_search_space(
        stage2_depth={"int": [1, 3]},
        constraints={"params": 6000},
        strategy="one_shot",
        one_shot={"cover_samples": 0, "train": {"epochs": 2, "batch_size": 64, "threads": 1, "lr": 0.005}},
    )
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    runner = CliRunner()
    search = ["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-cache", "--trials", "10"]
    result = runner.invoke(app, search)
    assert result.exit_code == 0, result.output
    assert "one-shot: supernet of" in result.output
    run = tmp_path / "runs" / "space"
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{run / 'study.db'}")
    outcomes = {t.user_attrs["outcome"] for t in study.trials}
    assert "inherited" in outcomes and "trained" not in outcomes
    assert outcomes <= {"inherited", "over_budget", "duplicate"}
    inherited = [t for t in study.trials if t.user_attrs["outcome"] == "inherited"]
    for t in inherited:
        assert "training" not in t.user_attrs and t.values[0] == t.user_attrs["inherited"]["val_accuracy"]
        assert t.user_attrs["costs"]["params"] <= 6000  # constraints are checked before, as ever
    assert max(t.values[0] for t in inherited) > 0.2  # chance: 0.1
    assert "inherited" in result.output.splitlines()[-1]
    # a rerun resumes: the supernet is loaded, not trained again
    again = runner.invoke(app, [*search[:-1], "12"])
    assert again.exit_code == 0, again.output
    assert "0 epochs" not in again.output and "(0 s of training" not in again.output

    assert runner.invoke(app, ["report", str(run), "--no-cache"]).exit_code == 0
    out = tmp_path / "exports"
    exported = runner.invoke(app, ["export", str(run), "--out", str(out), "--safetensors"])
    assert exported.exit_code == 0, exported.output
    config = next(out.glob("*.yaml"))
    arch = ArchConfig.from_yaml(config)
    assert arch.metadata["outcome"] == "inherited"
    number = int(config.stem.rpartition("trial")[2])
    # the exported weights are the inherited ones: they reproduce the trial's accuracy
    from hvtnas.models import build_model
    from hvtnas.train.trainer import evaluate_model

    model = build_model(arch)
    load_weights(model, config.with_suffix(".safetensors"))
    data = load_dataset(DataConfig(name="digits", resolution=16))
    _, accuracy = evaluate_model(model, data, TrainConfig(device="cpu"))
    assert accuracy == study.trials[number].values[0]


def test_experiment_refuses_one_shot_settings_that_cannot_apply() -> None:
    from pydantic import ValidationError

    from hvtnas.search.experiment import ExperimentConfig

    with pytest.raises(ValidationError, match="apply to 'strategy: one_shot' only"):
        ExperimentConfig.model_validate({"one_shot": {"rule": "uniform"}})
    with pytest.raises(ValidationError, match="add 'accuracy' to objectives"):
        ExperimentConfig.model_validate({"objectives": ["flops", "params"], "strategy": "one_shot"})
    with pytest.raises(ValidationError, match="rule"):
        ExperimentConfig.model_validate({"strategy": "one_shot", "one_shot": {"rule": "greedy"}})
    exp = ExperimentConfig.model_validate({"strategy": "one_shot", "one_shot": {"rule": "uniform"}})
    assert ExperimentConfig.model_validate(exp.model_dump(mode="json")) == exp  # round-trips
