"""The proxy trainer on CPU: it learns, stops on request, survives NaN and OOM, resumes exactly."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from hvtnas.models import build_model
from hvtnas.train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from hvtnas.train.data import DataConfig, DatasetError, ImageData, load_dataset
from hvtnas.train.trainer import (
    EpochReport,
    TrainConfig,
    adapt_arch_to_data,
    augment_batch,
    lr_factor,
    train_model,
    train_proxy,
)
from tests.train_helpers import one_thread, small_arch

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset(DataConfig(name="digits", resolution=8))  # the digits' own 8x8


@pytest.fixture(scope="module")
def synthetic() -> ImageData:
    return load_dataset(
        DataConfig(name="synthetic", num_samples=160, image_size=8, channels=1, num_classes=4)
    )


def quick(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 32, "augment": {"hflip": False}, **overrides})


def test_proxy_trial_on_digits_is_well_above_chance(digits: ImageData) -> None:
    reports: list[EpochReport] = []
    cfg = quick(epochs=3, lr=5e-3, warmup_epochs=0.3, augment={"crop_padding": 0, "hflip": False})
    result = train_proxy(small_arch(), digits, cfg, on_epoch=lambda r: reports.append(r) and None)
    assert result.status == "completed" and result.reason is None
    assert [r.epoch for r in reports] == [1, 2, 3] and result.epochs == reports
    assert result.val_accuracy > 0.8, result.accuracy_curve  # chance is 0.1; ~0.95 measured
    assert result.images_seen == 3 * (digits.num_train // 32) * 32 and result.images_per_second > 0
    assert math.isfinite(reports[-1].val_loss) and reports[-1].lr < reports[0].lr  # cosine decayed


def test_the_same_seed_gives_the_same_trial(synthetic: ImageData) -> None:
    a = train_proxy(small_arch(["pooling"]), synthetic, quick(epochs=2, seed=5))
    b = train_proxy(small_arch(["pooling"]), synthetic, quick(epochs=2, seed=5))
    assert a.to_dict()["epochs"][-1]["train_loss"] == b.to_dict()["epochs"][-1]["train_loss"]
    assert a.accuracy_curve == b.accuracy_curve


def test_progress_bar_runs(synthetic: ImageData, capsys: pytest.CaptureFixture[str]) -> None:
    result = train_proxy(small_arch(["pooling"]), synthetic, quick(epochs=2), progress=True)
    assert result.status == "completed"
    assert "epoch 2/2" in capsys.readouterr().err  # rich draws the bar on stderr, stdout stays clean


def test_the_epoch_callback_stops_the_trial_with_its_reason(synthetic: ImageData) -> None:
    result = train_proxy(
        small_arch(["pooling"]), synthetic, quick(epochs=5), on_epoch=lambda r: "dominated at epoch 1"
    )
    assert result.status == "stopped" and result.reason == "dominated at epoch 1"
    assert len(result.epochs) == 1
    result = train_proxy(small_arch(["pooling"]), synthetic, quick(epochs=5), on_epoch=lambda r: r.epoch == 2)
    assert result.status == "stopped" and len(result.epochs) == 2 and "after epoch 2" in result.reason


class _Explodes(nn.Module):
    """A classifier whose output becomes NaN from its ``after``-th training forward on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.calls, self.after = 0, after

    def forward(self, x: Tensor) -> Tensor:
        self.calls += self.training
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and self.calls >= self.after else out


class _RaisesOnForward(nn.Module):
    def __init__(self, make_error: Callable[[], Exception]) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.make_error = make_error  # a fresh exception per raise, as the allocator raises
        self.activations: list[weakref.ref] = []

    def forward(self, x: Tensor) -> Tensor:
        activation = self.fc(x.flatten(1))  # memory held by the failing frame, to be given back
        self.activations.append(weakref.ref(activation))
        raise self.make_error()


def test_nan_loss_ends_the_trial_with_a_reason(synthetic: ImageData) -> None:
    result = train_model(_Explodes(after=3), synthetic, quick(epochs=3))
    assert result.status == "failed"
    assert result.reason.startswith("loss became nan at epoch 1, step 3"), result.reason
    assert result.epochs == []


@pytest.mark.parametrize(
    ("error_type", "message"),
    [
        (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 20.00 GiB"),
        (RuntimeError, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB"),
    ],
)
def test_out_of_memory_ends_the_trial_with_a_reason(
    synthetic: ImageData, error_type: type[Exception], message: str
) -> None:
    model = _RaisesOnForward(lambda: error_type(message))
    result = train_model(model, synthetic, quick())
    assert result.status == "failed" and result.reason == f"out of memory: {message}"
    assert all(p.grad is None for p in model.parameters())
    assert model.activations and all(ref() is None for ref in model.activations)  # freed


def test_other_errors_are_bugs_and_raise(synthetic: ImageData) -> None:
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train_model(_RaisesOnForward(lambda: RuntimeError("shape mismatch")), synthetic, quick())


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_augmentation_crops_windows_of_the_padded_image_and_flips() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    assert torch.equal(augment_batch(x, 0, hflip=False), x)
    torch.manual_seed(0)
    cropped = augment_batch(x.repeat(32, 1, 1, 1), 1, hflip=False)
    padded = torch.nn.functional.pad(x.repeat(32, 1, 1, 1), (1, 1, 1, 1))
    for i in range(len(cropped)):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    assert any(not torch.equal(cropped[i], x[i % 2]) for i in range(len(cropped)))  # not all centred
    flipped = augment_batch(x.repeat(32, 1, 1, 1), 0, hflip=True)
    n_flipped = sum(torch.equal(f, x[i % 2].flip(-1)) for i, f in enumerate(flipped))
    n_same = sum(torch.equal(f, x[i % 2]) for i, f in enumerate(flipped))
    assert n_flipped + n_same == 64 and 0 < n_flipped < 64


def test_imagefolder_trains_through_a_dataloader_with_workers(tmp_path: Path) -> None:
    for c, colour in enumerate([(250, 20, 20), (20, 20, 250)]):
        (tmp_path / f"c{c}").mkdir()
        for i in range(12):
            Image.new("RGB", (10, 10), tuple(v + i for v in colour)).save(tmp_path / f"c{c}" / f"{i}.png")
    data = load_dataset(DataConfig(name="imagefolder", path=tmp_path, resolution=8, num_workers=1))
    arch = small_arch(["pooling"]) | {"input": {"channels": 3, "resolution": 8, "num_classes": 2}}
    result = train_proxy(arch, data, quick(epochs=2, batch_size=8, lr=5e-3))
    assert result.status == "completed" and len(result.epochs) == 2
    assert result.images_seen == 2 * 16  # 19 training images -> 2 full batches of 8 per epoch
    # a file that breaks later: the worker's error arrives as one plain line naming the file
    for path, _ in data.train_dataset.samples:
        path.write_bytes(b"truncated")
    with pytest.raises(DatasetError) as err:
        train_proxy(arch, data, quick(epochs=1, batch_size=8))
    assert "not a readable image" in str(err.value) and "Traceback" not in str(err.value)


def test_checkpoint_round_trip_and_exact_resume(synthetic: ImageData, tmp_path: Path) -> None:
    arch = adapt_arch_to_data(build_model(small_arch()).arch_config, synthetic)
    cfg = quick(epochs=2, seed=1)
    torch.manual_seed(0)
    straight = build_model(arch)
    train_model(straight, synthetic, cfg)

    torch.manual_seed(0)
    first = build_model(arch)
    path = tmp_path / "ck.pt"
    interrupted = train_model(
        first,
        synthetic,
        cfg,
        on_checkpoint=lambda state: save_checkpoint(path, state, arch),
        on_epoch=lambda r: "simulated interruption",
    )
    assert interrupted.status == "stopped" and len(interrupted.epochs) == 1
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["arch"] == arch
    restored = load_model(path)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(restored(x), first.eval()(x))  # the stored weights are the trained ones

    torch.manual_seed(123)  # resuming must not depend on the global RNG at the time
    resumed = build_model(arch)
    result = train_model(resumed, synthetic, cfg, resume_state=state)
    assert [e.epoch for e in result.epochs] == [1, 2] and result.status == "completed"
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoints_refuse_arbitrary_objects_and_corrupt_files(tmp_path: Path) -> None:
    rogue = tmp_path / "rogue.pt"
    torch.save({"model": {}, "arch_json": "{}", "format": 1, "payload": Path("/tmp")}, rogue)
    with pytest.raises(CheckpointError, match=r"rogue\.pt: not a readable hvtnas checkpoint"):
        load_checkpoint(rogue)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 garbage")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: not a readable hvtnas checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an hvtnas checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
