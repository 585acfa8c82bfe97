"""Datasets behind one interface: ``DataConfig`` (pydantic, embeddable in experiment YAML) ->
``load_dataset`` -> ``ImageData`` with a seeded train/validation split.

Every source yields uint8 images ``(N, C, H, W)`` at the proxy resolution plus int64 labels;
normalisation (per-channel mean/std of the training split) and augmentation happen per batch on
the training device, so the same code serves CPU and GPU-resident data. Image folders stay on
disk and are read by a DataLoader with workers.

Sources: ``cifar10`` / ``cifar100`` (python-pickle archive or its extracted folder, optional
download), ``imagefolder`` (class sub-folders, Pillow), ``npz`` (``images`` + ``labels``),
``digits`` (scikit-learn's bundled 8x8 digits, offline), ``synthetic`` (seeded, learnable).
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator
from torch import Tensor
from torch.utils.data import Dataset, Subset

from hvtnas.errors import HvtnasError

DatasetName = Literal["digits", "synthetic", "npz", "imagefolder", "cifar10", "cifar100"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# The official archives (https://www.cs.toronto.edu/~kriz/cifar.html) and their md5 sums.
CIFAR_ARCHIVES: dict[str, dict[str, str]] = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "filename": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "filename": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
    },
}


class DatasetError(HvtnasError):
    """A dataset cannot be read: bad path, corrupt file, inconsistent contents."""


class DataConfig(BaseModel):
    """Which data a proxy trial or ``hvtnas train`` uses, and how it is prepared.

    ``resolution`` and ``fraction`` are fidelity knobs of the search; ``channels`` and
    ``resolution`` default to the architecture's when left out (see ``for_arch``).
    """

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = "digits"
    path: Path | None = None  # npz file, image folder, or CIFAR archive / extracted folder
    download: bool = False  # cifar only: fetch the archive into `path` if it is missing
    resolution: PositiveInt | None = None  # square size images are resized to
    channels: Literal[1, 3] | None = None  # convert gray <-> RGB; None: the data's own
    val_fraction: float = Field(0.2, gt=0, lt=1)  # held out from the training data, never trained on
    split_seed: int = 0  # the train/validation split depends on this seed only
    fraction: float = Field(1.0, gt=0, le=1)  # subset of the training split (fidelity knob)
    normalize: bool = True  # per-channel mean/std of the training split
    num_workers: NonNegativeInt = 2  # imagefolder only: DataLoader worker processes
    # synthetic only
    num_samples: PositiveInt = 512
    num_classes: PositiveInt = 10
    image_size: PositiveInt = 32

    @model_validator(mode="after")
    def _path_fits_source(self) -> DataConfig:
        if self.name in ("npz", "imagefolder", "cifar10", "cifar100") and self.path is None:
            raise ValueError(f"dataset '{self.name}' needs a 'path'")
        if self.download and self.name not in CIFAR_ARCHIVES:
            raise ValueError(f"'download' applies to cifar10/cifar100 only, not '{self.name}'")
        return self

    def for_arch(self, channels: int, resolution: int) -> DataConfig:
        """This config with the architecture's channels / resolution where it left them open."""
        return self.model_copy(
            update={
                "channels": self.channels or channels,
                "resolution": self.resolution or resolution,
            }
        )


@dataclass
class ImageData:
    """A loaded dataset: uint8 tensors for in-memory sources, a lazy ``Dataset`` for folders."""

    name: str
    num_classes: int
    channels: int
    resolution: int
    mean: tuple[float, ...]  # per channel, on the 0..255 scale
    std: tuple[float, ...]
    train_images: Tensor | None = None  # (N, C, H, W) uint8
    train_labels: Tensor | None = None  # (N,) int64
    val_images: Tensor | None = None
    val_labels: Tensor | None = None
    train_dataset: Dataset | None = None  # imagefolder: items are (uint8 CHW tensor, label)
    val_dataset: Dataset | None = None
    class_names: list[str] = field(default_factory=list)
    num_workers: int = 0
    _device_cache: dict[str, tuple[Tensor, ...]] = field(default_factory=dict, repr=False)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def num_train(self) -> int:
        return len(self.train_labels) if self.train_labels is not None else len(self.train_dataset)

    @property
    def num_val(self) -> int:
        return len(self.val_labels) if self.val_labels is not None else len(self.val_dataset)

    def sample_batch(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` normalised training images (float, CPU) and their labels: the zero-cost proxies' batch."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.num_train, generator=g)[:n]
        if self.in_memory:
            x, y = self.train_images[idx], self.train_labels[idx]
        else:
            items = [self.train_dataset[i] for i in idx.tolist()]
            x = torch.stack([img for img, _ in items])
            y = torch.tensor([label for _, label in items])
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() - mean) / std, y

    def training_subset(self, n: int, seed: int = 0) -> ImageData:
        """The same dataset with ``n`` of its training images (a fixed random choice by ``seed``)
        and all of its validation images: what a few fine-tuning steps train on."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.num_train, generator=g)[: min(n, self.num_train)]
        if self.in_memory:
            images, labels = self.train_images[idx], self.train_labels[idx]
            return replace(self, train_images=images, train_labels=labels, _device_cache={})
        return replace(self, train_dataset=Subset(self.train_dataset, idx.tolist()), _device_cache={})

    def on_device(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four tensors on ``device``, copied once and reused by every trial of a search."""
        assert self.in_memory
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = tuple(
                t.to(device) for t in (self.train_images, self.train_labels, self.val_images, self.val_labels)
            )
        return self._device_cache[key]  # type: ignore[return-value]


# --------------------------------------------------------------------------- public entry point
def load_dataset(cfg: DataConfig) -> ImageData:
    """Read, split, subset and resize the dataset ``cfg`` describes."""
    if cfg.name == "imagefolder":
        return _load_imagefolder(cfg)
    if cfg.name == "digits":
        images, labels, classes = _read_digits()
    elif cfg.name == "synthetic":
        images, labels, classes = _make_synthetic(cfg)
    elif cfg.name == "npz":
        images, labels, classes = _read_npz(_existing(cfg.path, "npz file"))
    else:
        images, labels, classes = _read_cifar(cfg)
    return _split_in_memory(cfg, images, labels, classes)


# --------------------------------------------------------------------------- in-memory sources
def _split_in_memory(
    cfg: DataConfig, images: np.ndarray, labels: np.ndarray, classes: list[str]
) -> ImageData:
    """images: (N, H, W, C) uint8; labels: (N,) ints in [0, num_classes)."""
    n = len(labels)
    train_idx, val_idx = split_indices(n, cfg.val_fraction, cfg.split_seed, cfg.fraction)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # NHWC -> NCHW
    x = _convert_channels(x, cfg.channels)
    x = resize_uint8(x, cfg.resolution)
    y = torch.from_numpy(labels.astype(np.int64))
    train_x, val_x = x[train_idx].contiguous(), x[val_idx].contiguous()
    mean, std = channel_stats(train_x) if cfg.normalize else ((0.0,) * x.shape[1], (255.0,) * x.shape[1])
    return ImageData(
        name=cfg.name,
        num_classes=len(classes),
        channels=x.shape[1],
        resolution=x.shape[-1],
        mean=mean,
        std=std,
        train_images=train_x,
        train_labels=y[train_idx],
        val_images=val_x,
        val_labels=y[val_idx],
        class_names=classes,
    )


def split_indices(n: int, val_fraction: float, seed: int, fraction: float = 1.0) -> tuple[Tensor, Tensor]:
    """A seeded shuffle split into disjoint train / validation indices; ``fraction`` keeps a
    prefix of the (shuffled) training part, so smaller fractions are subsets of larger ones."""
    if n < 2:
        raise DatasetError(f"a dataset needs at least 2 images to split into train and validation, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    n_train = max(1, round(len(train_idx) * fraction))
    return train_idx[:n_train], val_idx


def _convert_channels(x: Tensor, channels: int | None) -> Tensor:
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as Pillow's "L"
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DatasetError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")


def resize_uint8(x: Tensor, size: int | None, chunk: int = 4096) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of uint8 NCHW images, in chunks to bound memory."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    out = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        shrink = size < max(x.shape[-2:])
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out.append(part.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images (0..255 scale); std floored to avoid /0."""
    xf = x.float()
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1.0)
    return tuple(mean.tolist()), tuple(std.tolist())


def _read_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]  # 0..16 -> 0..255
    return images, digits.target, [str(i) for i in range(10)]


def _make_synthetic(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Seeded class prototypes plus noise: learnable, so throughput runs train on real signal."""
    rng = np.random.default_rng(cfg.split_seed)
    c = cfg.channels or 3
    size = cfg.image_size
    prototypes = rng.uniform(40, 215, size=(cfg.num_classes, size, size, c))
    labels = rng.integers(0, cfg.num_classes, size=cfg.num_samples)
    noise = rng.normal(0, 40, size=(cfg.num_samples, size, size, c))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels, [f"class{i}" for i in range(cfg.num_classes)]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = {"images", "labels"} - keys
            if missing:
                raise DatasetError(
                    f"{path}: missing array(s) {', '.join(sorted(missing))}; an npz dataset holds "
                    "'images' [N,H,W] or [N,H,W,C] and 'labels' [N] "
                    f"(found: {', '.join(sorted(keys)) or 'none'})"
                )
            images, labels = archive["images"], archive["labels"]
            names = [str(c) for c in archive["classes"]] if "classes" in keys else None
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"{path}: not a readable npz archive ({err})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DatasetError(
            f"{path}: 'images' has shape {images.shape}; expected [N,H,W] or [N,H,W,C] with C = 1 or 3"
        )
    labels = _check_labels(labels, len(images), str(path))
    images = _to_uint8(images, str(path))
    num_classes = int(labels.max()) + 1
    if names is not None and len(names) < num_classes:
        raise DatasetError(
            f"{path}: 'classes' names {len(names)} classes but labels go up to {num_classes - 1}"
        )
    return images, labels, names or [str(i) for i in range(num_classes)]


def _check_labels(labels: np.ndarray, num_images: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"{where}: labels must be one-dimensional, got shape {labels.shape}")
    if len(labels) != num_images:
        raise DatasetError(f"{where}: {num_images} images but {len(labels)} labels; the counts must match")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {labels.min()}")
    return labels.astype(np.int64)


def _to_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        lo, hi = float(images.min()), float(images.max())
        if lo >= 0 and hi <= 1:  # floats in [0, 1]
            return (images * 255).round().astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return images.round().astype(np.uint8)
    elif np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    raise DatasetError(
        f"{where}: images must be uint8, integers in 0..255 or floats in [0, 1] / [0, 255]; "
        f"got dtype {images.dtype} with range [{images.min()}, {images.max()}]"
    )


def _existing(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        raise DatasetError(f"data.path: {path}: no such {what}")
    return path


# --------------------------------------------------------------------------- CIFAR
def _read_cifar(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The official python-pickle batches, from the .tar.gz archive or its extracted folder.

    Only the training batches are read (split into train/validation); the test batch is kept
    out of architecture selection.
    """
    meta = CIFAR_ARCHIVES[cfg.name]
    assert cfg.path is not None
    path = cfg.path
    if cfg.download and not path.exists():
        path = download_cifar(cfg.name, path)
    if path.is_dir() and (path / meta["folder"]).is_dir():
        path = path / meta["folder"]  # the folder the archive was extracted into
    elif path.is_dir() and (path / meta["filename"]).is_file():
        path = path / meta["filename"]  # a download folder
    if not path.exists():
        hint = " (set download: true to fetch it)" if not cfg.download else ""
        raise DatasetError(f"{path}: no such CIFAR archive or folder{hint}")
    train_members = [f"data_batch_{i}" for i in range(1, 6)] if cfg.name == "cifar10" else ["train"]
    meta_member = "batches.meta" if cfg.name == "cifar10" else "meta"
    label_key = b"labels" if cfg.name == "cifar10" else b"fine_labels"
    names_key = b"label_names" if cfg.name == "cifar10" else b"fine_label_names"
    raw = _cifar_members(path, [*train_members, meta_member])
    batches = [_unpickle(raw[m], path, m) for m in train_members]
    info = _unpickle(raw[meta_member], path, meta_member)
    try:
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in info[names_key]]
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a {cfg.name} python-pickle dataset (missing or bad {err})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: CIFAR rows must hold 3072 values (3x32x32), got shape {data.shape}")
    labels = _check_labels(labels, len(data), str(path))
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are planar RGB -> NHWC
    return images, labels, classes


def _cifar_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """The named batch files' bytes, from a folder or a .tar.gz archive."""
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in names:
            member = path / name
            if not member.is_file():
                raise DatasetError(f"{path}: missing '{name}' (expected the extracted CIFAR python batches)")
            found[name] = member.read_bytes()
        return found
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                base = Path(member.name).name
                if base in names and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[base] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: corrupt or unreadable CIFAR archive ({err})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(
            f"{path}: the archive lacks {', '.join(missing)}; is it the python version of CIFAR?"
        )
    return found


class _PlainUnpickler(pickle.Unpickler):
    """CIFAR batches are dicts of bytes, lists and numpy arrays: refuse anything else, so a
    tampered archive cannot run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: bytes, path: Path, member: str) -> dict:
    import io

    try:
        obj = _PlainUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a corrupt or foreign file
        raise DatasetError(f"{path}: '{member}' is not a readable CIFAR batch ({err})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: '{member}' holds a {type(obj).__name__}, expected a dict")
    return obj


def download_cifar(name: str, dest: Path) -> Path:
    """Download the official archive to ``dest`` (a folder or the archive's path) and check its md5."""
    meta = CIFAR_ARCHIVES[name]
    target = dest / meta["filename"] if dest.suffix not in (".gz", ".tgz") else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(meta["url"], timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"cannot download {meta['url']} ({err}); place the archive at {target}") from None
    digest = md5sum(partial)
    if digest != meta["md5"]:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"{meta['url']}: md5 {digest} != expected {meta['md5']}; download corrupt")
    partial.replace(target)
    return target


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- image folders
class ImageFolderDataset(Dataset):
    """(path, label) pairs read with Pillow, converted and resized to uint8 CHW tensors."""

    def __init__(self, samples: list[tuple[Path, int]], channels: int, resolution: int) -> None:
        self.samples = samples
        self.mode = "L" if channels == 1 else "RGB"
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert(self.mode).resize((self.resolution, self.resolution), Image.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetError(f"{path}: not a readable image ({err})") from None
        if array.ndim == 2:
            array = array[..., None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1), label


def _load_imagefolder(cfg: DataConfig) -> ImageData:
    root = _existing(cfg.path, "image folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; an imagefolder dataset is a folder of class sub-folders")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders (expected {root}/<class>/<image files>)")
    samples: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(
                f"{class_dir}: class folder '{class_dir.name}' holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        samples.extend((f, label) for f in files)
    channels = cfg.channels or 3
    if cfg.resolution is None:
        from PIL import Image

        with Image.open(samples[0][0]) as first:
            resolution = max(first.size)
    else:
        resolution = cfg.resolution
    train_idx, val_idx = split_indices(len(samples), cfg.val_fraction, cfg.split_seed, cfg.fraction)
    train = ImageFolderDataset([samples[i] for i in train_idx.tolist()], channels, resolution)
    val = ImageFolderDataset([samples[i] for i in val_idx.tolist()], channels, resolution)
    if cfg.normalize:  # statistics from a deterministic sample of the training images
        probe = torch.stack([train[i][0] for i in range(0, len(train), max(1, len(train) // 256))])
        mean, std = channel_stats(probe)
    else:
        mean, std = (0.0,) * channels, (255.0,) * channels
    return ImageData(
        name=cfg.name,
        num_classes=len(class_dirs),
        channels=channels,
        resolution=resolution,
        mean=mean,
        std=std,
        train_dataset=train,
        val_dataset=val,
        class_names=[d.name for d in class_dirs],
        num_workers=cfg.num_workers,
    )
