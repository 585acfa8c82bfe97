"""The proxy trainer: short, reproducible training runs whose validation accuracy ranks architectures.

One function, ``train_model``, serves a search's proxy trials (seconds each on a GPU) and
``hvtnas train`` (full fidelity, checkpoints, DDP). Design choices:

- in-memory datasets live on the training device as uint8 and are normalised and augmented
  per batch there (random crop with zero padding, horizontal flip): no host -> device copies
  or DataLoader overhead per step. Image folders go through a DataLoader with workers;
- on CUDA: bf16 autocast, channels_last and optionally ``torch.compile``;
- the loss is checked for NaN/inf (every step on CPU, every ``sync_every`` steps on CUDA, so the
  GPU is not synchronised every step) and an out-of-memory error ends the trial: both return a
  ``TrialResult`` with ``status="failed"`` and the reason, after freeing memory, never raise;
- after each epoch the validation accuracy goes to ``on_epoch``; returning ``True`` or a reason
  string stops the trial (the search's multi-objective early stopping uses this).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError
from hvtnas.models.build import ModelSpec
from hvtnas.train.data import DataConfig, DatasetError, ImageData, load_dataset

log = logging.getLogger("hvtnas.train")


class AugmentConfig(BaseModel):
    """Per-batch augmentation of the training images (on the training device)."""

    model_config = ConfigDict(extra="forbid")

    crop_padding: NonNegativeInt | None = None  # random crop after zero padding; None: resolution // 8
    hflip: bool = True  # random horizontal flip (turn off for digits/characters)


class TrainConfig(BaseModel):
    """How a model is trained. ``epochs`` and ``batch_size`` are fidelity knobs of the search."""

    model_config = ConfigDict(extra="forbid")

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128  # global: split over processes under DDP
    eval_batch_size: PositiveInt = 512
    lr: float = Field(2e-3, gt=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    weight_decay: float = Field(0.05, ge=0)  # not applied to norms, biases and other 1-d params
    warmup_epochs: float = Field(1.0, ge=0)  # linear warm-up (fractions allowed)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)  # max global grad norm; None: no clipping
    seed: int = 0
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ...
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (CUDA; pays compile time once per architecture)
    augment: AugmentConfig = AugmentConfig()
    sync_every: PositiveInt = 50  # CUDA: steps between NaN checks / progress updates
    # CPU threads for this run (None: torch's default). On a shared or small CPU, 1 thread is often
    # fastest for tiny models: a second OpenMP thread mostly waits for a descheduled peer.
    threads: PositiveInt | None = None


@dataclass
class EpochReport:
    """What ``on_epoch`` receives after every epoch (``epoch`` counts from 1)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    images_per_second: float  # training throughput of this epoch
    seconds: float  # wall time since the trial started (validation included)


@dataclass
class TrialResult:
    """The outcome of one training run; ``to_dict`` is JSON-ready (the search stores it)."""

    status: Literal["completed", "stopped", "failed"]
    reason: str | None = None  # why it stopped or failed
    epochs: list[EpochReport] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    params: int = 0

    @property
    def val_accuracy(self) -> float | None:
        return self.epochs[-1].val_accuracy if self.epochs else None

    @property
    def best_val_accuracy(self) -> float | None:
        return max(e.val_accuracy for e in self.epochs) if self.epochs else None

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def accuracy_curve(self) -> list[float]:
        return [e.val_accuracy for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "val_accuracy": self.val_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "images_per_second": self.images_per_second,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
            "params": self.params,
            "epochs": [asdict(e) for e in self.epochs],
        }


EpochCallback = Callable[[EpochReport], "bool | str | None"]
CheckpointCallback = Callable[[dict[str, Any]], None]


class TrainingDivergedError(Exception):
    """Internal: the loss became NaN or infinite."""


# --------------------------------------------------------------------------- entry points
def train_proxy(
    arch: ModelSpec,
    data: DataConfig | ImageData,
    cfg: TrainConfig | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> TrialResult:
    """Build ``arch`` (an ``ArchConfig``, dict, zoo name or YAML path) for ``data`` and train it.

    Pass a loaded ``ImageData`` to share one dataset (and its GPU copy) between trials. The
    model is built at the data's resolution with the data's channels and number of classes.
    """
    from hvtnas.models import build_model, resolve_config

    cfg = cfg or TrainConfig()
    arch_cfg = resolve_config(arch)
    if isinstance(data, DataConfig):
        data = load_dataset(data.for_arch(arch_cfg.input.channels, arch_cfg.input.resolution))
    arch_cfg = adapt_arch_to_data(arch_cfg, data)
    torch.manual_seed(cfg.seed)  # same seed, same initial weights
    model = build_model(arch_cfg)
    return train_model(model, data, cfg, on_epoch=on_epoch, progress=progress)


def adapt_arch_to_data(arch_cfg: ArchConfig, data: ImageData, *, keep_resolution: bool = False) -> ArchConfig:
    """The architecture with the dataset's channels, classes and (proxy) resolution; with
    ``keep_resolution`` its own resolution (the one it is deployed, costed and exported at)."""
    update: dict[str, int] = {"channels": data.channels, "num_classes": data.num_classes}
    if not keep_resolution:
        update["resolution"] = data.resolution
    new_input = arch_cfg.input.model_copy(update=update)
    return arch_cfg.model_copy(update={"input": new_input})


def train_model(
    model: nn.Module,
    data: ImageData,
    cfg: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    resume_state: dict[str, Any] | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> TrialResult:
    """Train ``model`` on ``data``; never raises for NaN/inf losses or out-of-memory errors.

    ``resume_state`` is a dict made by ``on_checkpoint`` earlier (see ``hvtnas.train.checkpoint``);
    ``on_checkpoint`` receives the training state after every epoch (rank 0 only under DDP).
    """
    result = TrialResult(status="completed", params=sum(p.numel() for p in model.parameters()))
    device = resolve_device(cfg.device)
    failure: str | None = None
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        _train(model, data, cfg, device, result, on_epoch, progress, resume_state, on_checkpoint)
    except TrainingDivergedError as err:
        failure = str(err)
    except torch.OutOfMemoryError as err:
        failure = f"out of memory: {_first_line(err)}"
    except RuntimeError as err:  # CPU allocators and older CUDA builds raise plain RuntimeErrors
        if not _is_oom(err):
            raise
        failure = f"out of memory: {_first_line(err)}"
    finally:
        torch.set_num_threads(threads)
    if failure is not None:
        # the exception (and with it the frames holding activations) is gone here: free memory
        result.status, result.reason = "failed", failure
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("trial failed: %s", failure)
    return result


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HvtnasError(f"train.device: unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HvtnasError(f"train.device: '{name}' requested, but CUDA is not available on this machine")
    return device


def _is_oom(err: BaseException) -> bool:
    text = str(err)
    return "out of memory" in text or "can't allocate memory" in text


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


# --------------------------------------------------------------------------- the loop
def _train(
    model: nn.Module,
    data: ImageData,
    cfg: TrainConfig,
    device: torch.device,
    result: TrialResult,
    on_epoch: EpochCallback | None,
    progress: bool,
    resume_state: dict[str, Any] | None,
    on_checkpoint: CheckpointCallback | None,
) -> None:
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    cuda = device.type == "cuda"
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    channels_last = cfg.channels_last and cuda
    torch.manual_seed(cfg.seed + rank)  # augmentation randomness; weights were initialised before

    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = _make_optimizer(model, cfg, cuda)
    start_epoch, step = 0, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        start_epoch, step = int(resume_state["epoch"]), int(resume_state["step"])
        result.epochs = [EpochReport(**e) for e in resume_state.get("history", [])]
        result.train_seconds = float(resume_state.get("train_seconds", 0.0))
        result.images_seen = int(resume_state.get("images_seen", 0))
        if "rng_cpu" in resume_state:
            torch.set_rng_state(resume_state["rng_cpu"])
        if cuda and "rng_cuda" in resume_state:
            torch.cuda.set_rng_state(resume_state["rng_cuda"], device)
    train_module: nn.Module = model
    # A model may define its training step's loss (``training_loss(x, y, label_smoothing)``): a
    # supernet samples sub-networks per step (hvtnas.search.one_shot). It runs on the model itself.
    own_loss = getattr(model, "training_loss", None)
    if own_loss is not None and (distributed or cfg.compile):
        raise HvtnasError("a model with its own training_loss (a supernet) trains without DDP and compile")
    if distributed:
        train_module = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if cfg.compile:
        train_module = torch.compile(train_module)

    local_batch = max(1, cfg.batch_size // world)
    batches = _BatchSource(data, device, local_batch, cfg, rank, world, channels_last)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)
    check_every = cfg.sync_every if cuda else 1
    bar = _ProgressBar(cfg.epochs, steps_per_epoch, enabled=progress and rank == 0)
    started = time.perf_counter() - result.train_seconds

    with bar:
        for epoch in range(start_epoch, cfg.epochs):
            train_module.train()
            loss_sum = torch.zeros((), device=device)
            seen, epoch_start = 0, time.perf_counter()
            for i, (x, y) in enumerate(batches.train_epoch(epoch)):
                lr = cfg.lr * lr_factor(step, total_steps, warmup_steps, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast:
                    if own_loss is not None:  # a supernet: the loss over the sub-networks it samples
                        loss = own_loss(x, y, cfg.label_smoothing)
                    else:
                        loss = F.cross_entropy(train_module(x), y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += loss.detach()
                step += 1
                seen += len(y)
                if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                    mean_loss = loss_sum.item() / (i + 1)  # one sync per check
                    if not math.isfinite(mean_loss):
                        raise TrainingDivergedError(
                            f"loss became {mean_loss} at epoch {epoch + 1}, step {i + 1} (lr {lr:.3g})"
                        )
                    bar.update(epoch, i + 1, mean_loss, seen * world / (time.perf_counter() - epoch_start))
            if cuda:
                torch.cuda.synchronize(device)
            train_time = time.perf_counter() - epoch_start
            if distributed:  # report the loss over all ranks' batches, as accuracy is
                dist.all_reduce(loss_sum)
                loss_sum /= world
            result.images_seen += seen * world
            result.train_seconds += train_time
            val_loss, val_acc = _evaluate(train_module, batches, autocast, distributed)
            report = EpochReport(
                epoch=epoch + 1,
                train_loss=loss_sum.item() / steps_per_epoch,
                val_loss=val_loss,
                val_accuracy=val_acc,
                lr=lr,
                images_per_second=seen * world / train_time,
                seconds=time.perf_counter() - started,
            )
            result.epochs.append(report)
            bar.epoch_done(report)
            log.info(
                "epoch %d/%d  loss %.4f  val_acc %.4f  val_loss %.4f  %.0f img/s",
                report.epoch,
                cfg.epochs,
                report.train_loss,
                report.val_accuracy,
                report.val_loss,
                report.images_per_second,
            )
            if on_checkpoint is not None and rank == 0:
                on_checkpoint(_training_state(model, optimizer, epoch + 1, step, result, device))
            if on_epoch is not None:
                verdict = on_epoch(report)
                if verdict:
                    result.status = "stopped"
                    result.reason = (
                        verdict if isinstance(verdict, str) else f"stopped after epoch {epoch + 1}"
                    )
                    return


def evaluate_model(model: nn.Module, data: ImageData, cfg: TrainConfig) -> tuple[float, float]:
    """Validation loss and accuracy of ``model`` on ``data``, measured as the trainer measures them
    after every epoch (eval mode, the same batches and precision, on ``cfg.device``)."""
    device = resolve_device(cfg.device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    batches = _BatchSource(data, device, cfg.batch_size, cfg, 0, 1, channels_last=False)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)
    return _evaluate(model.to(device), batches, autocast, distributed=False)


def training_batches(data: ImageData, cfg: TrainConfig, count: int, epoch: int = 0) -> Iterator[Tensor]:
    """The first ``count`` training batches of ``epoch`` as the trainer makes them (normalised,
    augmented, on ``cfg.device``), without labels: what BatchNorm statistics are estimated from."""
    batches = _BatchSource(data, resolve_device(cfg.device), cfg.batch_size, cfg, 0, 1, channels_last=False)
    for i, (x, _) in enumerate(batches.train_epoch(epoch)):
        if i >= count:
            return
        yield x


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _make_optimizer(model: nn.Module, cfg: TrainConfig, cuda: bool) -> torch.optim.Optimizer:
    # norms, biases, scales and position embeddings (all < 2-d) are not decayed, as in timm
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=cuda)


def _training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    result: TrialResult,
    device: torch.device,
) -> dict[str, Any]:
    """Everything needed to resume: tensors, numbers, strings and lists only (weights_only loads)."""
    state: dict[str, Any] = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": [asdict(e) for e in result.epochs],
        "train_seconds": result.train_seconds,
        "images_seen": result.images_seen,
        "rng_cpu": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    return state


@torch.no_grad()
def _evaluate(
    model: nn.Module, batches: _BatchSource, autocast: torch.autocast, distributed: bool
) -> tuple[float, float]:
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=batches.device)  # loss sum, correct, count
    for x, y in batches.val_batches():
        with autocast:
            logits = model(x)
        totals[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        totals[1] += (logits.argmax(dim=1) == y).sum()
        totals[2] += len(y)
    if distributed:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


# --------------------------------------------------------------------------- batches
class _BatchSource:
    """Normalised (and, for training, augmented) batches on the device, from GPU/CPU-resident
    tensors or from a DataLoader over an image folder. Under DDP each rank sees its own shard."""

    def __init__(
        self,
        data: ImageData,
        device: torch.device,
        batch_size: int,
        cfg: TrainConfig,
        rank: int,
        world: int,
        channels_last: bool,
    ) -> None:
        self.data, self.device, self.cfg = data, device, cfg
        self.rank, self.world, self.channels_last = rank, world, channels_last
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        pad = cfg.augment.crop_padding
        self.crop_padding = data.resolution // 8 if pad is None else pad
        n_local = data.num_train // world
        if n_local == 0:
            raise HvtnasError(f"{data.num_train} training images cannot be shared by {world} processes")
        self.batch_size = min(batch_size, n_local)
        self.steps_per_epoch = n_local // self.batch_size  # drop the last partial batch: static shapes
        if data.in_memory:
            self.tensors = data.on_device(device)
        else:
            pin = device.type == "cuda"
            workers = data.num_workers
            self.train_sampler = DistributedSampler(
                data.train_dataset, world, rank, shuffle=True, seed=cfg.seed, drop_last=True
            )
            self.train_loader = DataLoader(
                data.train_dataset,
                batch_size=self.batch_size,
                sampler=self.train_sampler,
                drop_last=True,
                num_workers=workers,
                pin_memory=pin,
                persistent_workers=workers > 0,
            )
            val_sampler = DistributedSampler(data.val_dataset, world, rank, shuffle=False, drop_last=False)
            self.val_loader = DataLoader(
                data.val_dataset,
                batch_size=cfg.eval_batch_size,
                sampler=val_sampler if world > 1 else None,
                num_workers=workers,
                pin_memory=pin,
            )

    def train_epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        if self.data.in_memory:
            x_all, y_all, _, _ = self.tensors
            # the same seeded permutation on every rank; each rank takes its strided shard
            perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
            perm = perm[self.rank :: self.world].to(self.device)
            for s in range(self.steps_per_epoch):
                idx = perm[s * self.batch_size : (s + 1) * self.batch_size]
                yield self._prepare(x_all[idx], train=True), y_all[idx]
        else:
            self.train_sampler.set_epoch(epoch)
            for x, y in _plain_worker_errors(self.train_loader):
                x = x.to(self.device, non_blocking=True)
                yield self._prepare(x, train=True), y.to(self.device, non_blocking=True)

    def val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.data.in_memory:
            _, _, x_all, y_all = self.tensors
            idx = torch.arange(self.rank, len(y_all), self.world, device=self.device)
            for s in range(0, len(idx), self.cfg.eval_batch_size):
                part = idx[s : s + self.cfg.eval_batch_size]
                yield self._prepare(x_all[part], train=False), y_all[part]
        else:
            for x, y in _plain_worker_errors(self.val_loader):
                yield self._prepare(x.to(self.device), train=False), y.to(self.device)

    def _prepare(self, x: Tensor, train: bool) -> Tensor:
        x = (x.float() - self.mean) / self.std  # uint8 -> normalised float, on the device
        if train:
            x = augment_batch(x, self.crop_padding, self.cfg.augment.hflip)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _plain_worker_errors(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """A DataLoader re-raises a worker's DatasetError with the worker's traceback in the message;
    keep only the last line (the file and the problem), as for the in-process error."""
    try:
        yield from loader
    except DatasetError as err:
        text = str(err)
        if "Original Traceback" not in text:
            raise
        last = text.strip().splitlines()[-1]
        raise DatasetError(last.removeprefix("hvtnas.train.data.DatasetError: ")) from None


def augment_batch(x: Tensor, crop_padding: int, hflip: bool) -> Tensor:
    """Random crop after zero padding and random horizontal flip, vectorised over the batch."""
    B, C, H, W = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))  # zero = the mean colour after normalisation
        dy = torch.randint(0, 2 * p + 1, (B, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (B, 1), device=x.device)
        rows = (dy + torch.arange(H, device=x.device)).view(B, 1, H, 1).expand(B, C, H, W + 2 * p)
        padded = padded.gather(2, rows)  # (B, C, H, W + 2p): each sample's rows
        cols = (dx + torch.arange(W, device=x.device)).view(B, 1, 1, W).expand(B, C, H, W)
        x = padded.gather(3, cols)  # (B, C, H, W): and its columns
    if hflip:
        flip = torch.rand(B, device=x.device) < 0.5
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    return x


# --------------------------------------------------------------------------- progress
class _ProgressBar:
    """A rich progress bar (epoch, loss, accuracy, img/s) when attached to a terminal; a no-op
    otherwise, where ``log`` reports one line per epoch."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool) -> None:
        self.enabled = enabled
        self.epochs, self.steps = epochs, steps_per_epoch
        self.last_acc: float | None = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  val_acc {task.fields[acc]}  {task.fields[ips]} img/s"),
                TimeElapsedColumn(),
                console=Console(stderr=True),  # stdout stays for results (e.g. --json)
                transient=False,
            )
            self.task = self.progress.add_task(
                "train", total=epochs * steps_per_epoch, epoch=0, epochs=epochs, loss="-", acc="-", ips="-"
            )

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, epoch: int, step_in_epoch: int, loss: float, ips: float) -> None:
        if self.enabled:
            self.progress.update(
                self.task,
                completed=epoch * self.steps + step_in_epoch,
                epoch=epoch + 1,
                loss=f"{loss:.3f}",
                ips=f"{ips:,.0f}",
            )

    def epoch_done(self, report: EpochReport) -> None:
        if self.enabled:
            self.progress.update(self.task, acc=f"{report.val_accuracy:.3f}")
