"""Dataset loaders on files the tests write in each format, and their error messages."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from hvtnas.train import data as data_module
from hvtnas.train.data import DataConfig, DatasetError, download_cifar, load_dataset, md5sum, split_indices


def _indexed_images(n: int, size: int = 8) -> np.ndarray:
    """Image i is filled with value i (n <= 256), so a split's images reveal their indices."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, size, size)).copy()


def _ids(images: torch.Tensor) -> set[int]:
    return set(images[:, 0, 0, 0].tolist())


# ----------------------------------------------------------------------------- split
def test_split_is_seeded_disjoint_and_fraction_is_a_subset() -> None:
    train, val = split_indices(100, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert not set(train.tolist()) & set(val.tolist())
    again, _ = split_indices(100, 0.2, seed=3)
    other, _ = split_indices(100, 0.2, seed=4)
    assert torch.equal(train, again) and not torch.equal(train, other)
    half, val_half = split_indices(100, 0.2, seed=3, fraction=0.5)
    assert len(half) == 40 and torch.equal(half, train[:40]) and torch.equal(val_half, val)


# ----------------------------------------------------------------------------- npz
def test_npz_gray_split_never_mixes_train_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=_indexed_images(50), labels=np.arange(50) % 5)
    data = load_dataset(DataConfig(name="npz", path=path, val_fraction=0.2, normalize=False))
    assert data.num_train == 40 and data.num_val == 10 and data.num_classes == 5
    assert data.train_images.shape == (40, 1, 8, 8) and data.train_images.dtype == torch.uint8
    assert not _ids(data.train_images) & _ids(data.val_images)
    assert _ids(data.train_images) | _ids(data.val_images) == set(range(50))
    # labels travel with their images
    assert torch.equal(data.train_images[:, 0, 0, 0].long() % 5, data.train_labels)


def test_npz_rgb_floats_resized_and_converted(tmp_path: Path) -> None:
    path = tmp_path / "rgb.npz"
    images = np.random.default_rng(0).random((12, 10, 10, 3)).astype(np.float32)  # floats in [0, 1]
    np.savez(path, images=images, labels=np.arange(12) % 3, classes=np.array(["a", "b", "c"]))
    data = load_dataset(DataConfig(name="npz", path=path, resolution=16, channels=1))
    assert data.train_images.shape[1:] == (1, 16, 16) and data.class_names == ["a", "b", "c"]
    assert data.resolution == 16 and data.channels == 1 and len(data.mean) == 1


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"images": np.zeros((5, 4, 4), np.uint8), "labels": np.zeros(4, np.int64)}, "5 images but 4 labels"),
        ({"images": np.zeros((5, 4, 4), np.uint8)}, "missing array(s) labels"),
        (
            {"images": np.zeros((5, 4), np.uint8), "labels": np.zeros(5, np.int64)},
            "'images' has shape (5, 4)",
        ),
        ({"images": np.zeros((5, 4, 4), np.uint8), "labels": np.zeros(5) + 0.5}, "labels must be integers"),
        ({"images": np.full((5, 4, 4), 300.0), "labels": np.zeros(5, np.int64)}, "range [300.0, 300.0]"),
    ],
)
def test_npz_errors_name_the_file_and_the_problem(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as err:
        load_dataset(DataConfig(name="npz", path=path))
    assert str(path) in str(err.value) and needle in str(err.value)


def test_npz_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such npz file"):
        load_dataset(DataConfig(name="npz", path=tmp_path / "absent.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(DatasetError, match="not a readable npz archive"):
        load_dataset(DataConfig(name="npz", path=corrupt))


# ----------------------------------------------------------------------------- image folders
def _write_folder(root: Path, counts: dict[str, int], size: int = 12) -> None:
    for c, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (size, size + 2), (40 * c, 10 * i, 200)).save(root / name / f"{i}.png")


def test_imagefolder_reads_classes_resizes_and_splits(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"cat": 6, "dog": 4})
    data = load_dataset(DataConfig(name="imagefolder", path=tmp_path, resolution=8, val_fraction=0.3))
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2 and not data.in_memory
    assert data.num_train == 7 and data.num_val == 3
    image, label = data.train_dataset[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label in (0, 1)
    train_files = {p for p, _ in data.train_dataset.samples}
    assert not train_files & {p for p, _ in data.val_dataset.samples}
    x, y = data.sample_batch(4)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (4,)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such image folder"):
        load_dataset(DataConfig(name="imagefolder", path=tmp_path / "absent"))
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(DataConfig(name="imagefolder", path=tmp_path))
    _write_folder(tmp_path, {"cat": 3})
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match="class folder 'dog' holds no images") as err:
        load_dataset(DataConfig(name="imagefolder", path=tmp_path, resolution=8))
    assert str(tmp_path / "dog") in str(err.value)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    data = load_dataset(DataConfig(name="imagefolder", path=tmp_path, resolution=8, normalize=False))
    broken = next(i for i, (p, _) in enumerate(data.train_dataset.samples) if p.name == "broken.png")
    with pytest.raises(DatasetError, match=r"broken\.png: not a readable image"):
        data.train_dataset[broken]


# ----------------------------------------------------------------------------- CIFAR
def _cifar_batches(name: str, n_per_batch: int = 4) -> dict[str, bytes]:
    """The python-pickle batches of CIFAR, tiny: image j of batch b has red = 10*b + j."""
    rng = np.random.default_rng(0)
    members: dict[str, bytes] = {}
    train = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    for b, member in enumerate(train):
        n = n_per_batch if name == "cifar10" else 5 * n_per_batch
        data = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = (10 * b + np.arange(n))[:, None, None]  # planar: red plane first
        key = b"labels" if name == "cifar10" else b"fine_labels"
        members[member] = pickle.dumps({b"data": data.reshape(n, 3072), key: list(np.arange(n) % 3)})
    meta = (
        {b"label_names": [b"plane", b"car", b"bird"]}
        if name == "cifar10"
        else {b"fine_label_names": [b"a", b"b", b"c"]}
    )
    members["batches.meta" if name == "cifar10" else "meta"] = pickle.dumps(meta)
    return members


def _write_cifar_archive(path: Path, name: str, members: dict[str, bytes]) -> None:
    folder = data_module.CIFAR_ARCHIVES[name]["folder"]
    with tarfile.open(path, "w:gz") as tar:
        for member, raw in members.items():
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_and_extracted_folder_give_the_same_data(tmp_path: Path, name: str) -> None:
    members = _cifar_batches(name)
    archive = tmp_path / data_module.CIFAR_ARCHIVES[name]["filename"]
    _write_cifar_archive(archive, name, members)
    folder = tmp_path / "extracted" / data_module.CIFAR_ARCHIVES[name]["folder"]
    folder.mkdir(parents=True)
    for member, raw in members.items():
        (folder / member).write_bytes(raw)
    from_archive = load_dataset(DataConfig(name=name, path=archive, normalize=False))
    from_folder = load_dataset(DataConfig(name=name, path=tmp_path / "extracted", normalize=False))
    assert from_archive.num_train + from_archive.num_val == 20 and from_archive.num_classes == 3
    assert torch.equal(from_archive.train_images, from_folder.train_images)
    assert from_archive.train_images.shape[1:] == (3, 32, 32)
    # planar rows became channels: the red plane holds the marker, constant over the image
    red = from_archive.train_images[:, 0]
    assert torch.equal(red.amin(dim=(1, 2)), red.amax(dim=(1, 2)))
    assert set(red[:, 0, 0].tolist()) | set(from_archive.val_images[:, 0, 0, 0].tolist()) == (
        {10 * b + j for b in range(5) for j in range(4)} if name == "cifar10" else set(range(20))
    )


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such CIFAR archive or folder"):
        load_dataset(DataConfig(name="cifar10", path=tmp_path / "absent.tar.gz"))
    archive = tmp_path / "cifar-10-python.tar.gz"
    _write_cifar_archive(archive, "cifar10", _cifar_batches("cifar10"))
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DatasetError, match="corrupt or unreadable CIFAR archive") as err:
        load_dataset(DataConfig(name="cifar10", path=truncated))
    assert "truncated.tar.gz" in str(err.value)
    incomplete = _cifar_batches("cifar10")
    del incomplete["data_batch_3"]
    _write_cifar_archive(tmp_path / "incomplete.tar.gz", "cifar10", incomplete)
    with pytest.raises(DatasetError, match="lacks data_batch_3"):
        load_dataset(DataConfig(name="cifar10", path=tmp_path / "incomplete.tar.gz"))
    evil = _cifar_batches("cifar10")
    evil["data_batch_1"] = pickle.dumps(Path("/etc/passwd"))  # a pickle that builds a foreign object
    _write_cifar_archive(tmp_path / "evil.tar.gz", "cifar10", evil)
    with pytest.raises(DatasetError, match="'data_batch_1' is not a readable CIFAR batch"):
        load_dataset(DataConfig(name="cifar10", path=tmp_path / "evil.tar.gz"))
    mismatch = _cifar_batches("cifar10")
    mismatch["data_batch_2"] = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]})
    _write_cifar_archive(tmp_path / "mismatch.tar.gz", "cifar10", mismatch)
    with pytest.raises(DatasetError, match="20 images but 19 labels"):
        load_dataset(DataConfig(name="cifar10", path=tmp_path / "mismatch.tar.gz"))


def test_cifar_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download step, with the network replaced by bytes in memory."""
    archive = tmp_path / "src.tar.gz"
    _write_cifar_archive(archive, "cifar10", _cifar_batches("cifar10"))
    payload = archive.read_bytes()
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(data_module.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DatasetError, match=r"md5 .* != expected c58f30108f718f92721af3b95e74349a"):
        download_cifar("cifar10", tmp_path / "dl")
    assert requested == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert not list((tmp_path / "dl").iterdir())  # nothing half-written left behind
    good = dict(data_module.CIFAR_ARCHIVES["cifar10"], md5=md5sum(archive))
    monkeypatch.setitem(data_module.CIFAR_ARCHIVES, "cifar10", good)
    data = load_dataset(DataConfig(name="cifar10", path=tmp_path / "dl2", download=True))
    assert (tmp_path / "dl2" / "cifar-10-python.tar.gz").is_file() and data.num_classes == 3


# ----------------------------------------------------------------------------- built-in sources, config
def test_digits_and_synthetic() -> None:
    digits = load_dataset(DataConfig(name="digits", resolution=16))
    assert digits.num_train + digits.num_val == 1797 and digits.num_classes == 10
    assert digits.train_images.shape[1:] == (1, 16, 16)
    a = load_dataset(DataConfig(name="synthetic", num_samples=40, image_size=8, channels=3))
    b = load_dataset(DataConfig(name="synthetic", num_samples=40, image_size=8, channels=3))
    assert torch.equal(a.train_images, b.train_images) and a.train_images.shape[1:] == (3, 8, 8)


def test_data_config_rejects_unknown_keys_and_missing_paths() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DataConfig(name="digits", bogus=1)
    with pytest.raises(ValidationError, match="dataset 'npz' needs a 'path'"):
        DataConfig(name="npz")
    with pytest.raises(ValidationError, match="'download' applies to cifar10/cifar100 only"):
        DataConfig(name="digits", download=True)
    assert DataConfig(name="digits", resolution=8).for_arch(3, 32).resolution == 8
    assert DataConfig(name="digits").for_arch(3, 32).channels == 3
