"""Data sets that need no download, and user data from local files.

Every loader returns a ``DataSplit``: a training set and a disjoint held-out
set (for evaluation and the real-vs-real floor), both ``float32`` tensors of
shape ``(N, *data_shape)``. Images live in ``[-1, 1]`` with shape ``(C, H, W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from guide_store.errors import BezierDistillError
from teachers.registry import Registry

__all__ = [
    "DataError",
    "DataSplit",
    "TOY_2D",
    "DATA_SOURCES",
    "toy_2d",
    "digits",
    "synthetic_images",
    "load_array_file",
    "load_data",
]


class DataError(BezierDistillError, ValueError):
    """A data source is missing or holds the wrong kind of array; the message says which and why."""


@dataclass(frozen=True)
class DataSplit:
    """Real data, split once: ``train`` for fitting, ``held_out`` for evaluation."""

    train: Tensor
    held_out: Tensor
    name: str

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    @property
    def kind(self) -> str:
        """``image`` or ``vector``: which metrics score samples of this data (FID or sliced W2 and energy)."""
        return "image" if self.is_image else "vector"


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    angles = torch.arange(8) * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    idx = torch.randint(0, 8, (n,), generator=g)
    return centers[idx] + 0.15 * torch.randn(n, 2, generator=g)


def _two_moons(n: int, g: torch.Generator) -> Tensor:
    upper = torch.rand(n, generator=g) < 0.5
    theta = torch.rand(n, generator=g) * math.pi
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return pts + 0.05 * torch.randn(n, 2, generator=g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1)


TOY_2D = {"eight_gaussians": _eight_gaussians, "two_moons": _two_moons, "checkerboard": _checkerboard}


def toy_2d(name: str, n_train: int, n_held_out: int, seed: int = 0) -> DataSplit:
    """A 2-D toy distribution, ``(N, 2)``; train and held-out are independent draws."""
    if name not in TOY_2D:
        raise DataError(f"unknown 2-D distribution {name!r}; known: {sorted(TOY_2D)}")
    g = torch.Generator().manual_seed(seed)
    pts = TOY_2D[name](n_train + n_held_out, g).float()
    return DataSplit(train=pts[:n_train], held_out=pts[n_train:], name=name)


def digits(n_held_out: int = 450, seed: int = 0) -> DataSplit:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to ``[-1, 1]``, shape ``(N, 1, 8, 8)``."""
    from sklearn.datasets import load_digits  # scikit-learn takes a second to import; only digits need it

    images = torch.from_numpy(load_digits().images.astype(np.float32)) / 8.0 - 1.0
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    images = images[perm].unsqueeze(1).contiguous()
    if not 0 < n_held_out < images.shape[0]:
        raise DataError(f"digits has {images.shape[0]} images; n_held_out must be in 1..{images.shape[0] - 1}")
    return DataSplit(train=images[n_held_out:], held_out=images[:n_held_out], name="digits")


def synthetic_images(n: int, shape: tuple[int, int, int] = (3, 32, 32), blobs: int = 4, seed: int = 0) -> Tensor:
    """``n`` smooth colour images ``(n, C, H, W)`` in ``[-1, 1]``, a pure function of ``seed``: each is
    ``tanh`` of a sum of ``blobs`` Gaussian blobs, ``sum_k c_k exp(-|p - m_k|^2 / (2 r_k^2))``, with centres
    ``m_k`` uniform in the unit square, radii ``r_k`` in ``[0.08, 0.3]`` and colours ``c_k`` (``(C,)``) in
    ``[-2, 2]``. Made for benchmarks: a data set of a real image size that needs no download."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, blobs, 2, generator=g)
    radii = 0.08 + 0.22 * torch.rand(n, blobs, generator=g)
    colours = 4.0 * torch.rand(n, blobs, c, generator=g) - 2.0
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    images = torch.zeros(n, c, h, w)
    for k in range(blobs):  # one blob at a time keeps memory at one (n, H, W) map
        d2 = (ys - centres[:, k, 0, None, None]) ** 2 + (xs - centres[:, k, 1, None, None]) ** 2
        bump = torch.exp(-d2 / (2 * radii[:, k, None, None] ** 2))
        images += colours[:, k, :, None, None] * bump[:, None]
    return torch.tanh(images)


def digit_labels(seed: int = 0) -> Tensor:
    """Labels of ``digits(seed=seed)`` in the same (shuffled) order, train and held-out concatenated."""
    from sklearn.datasets import load_digits  # scikit-learn takes a second to import; only digits need it

    target = torch.from_numpy(load_digits().target.astype(np.int64))
    perm = torch.randperm(target.shape[0], generator=torch.Generator().manual_seed(seed))
    return target[perm]


def load_array_file(path: str | Path, key: str | None = None, data_shape: tuple[int, ...] | None = None) -> Tensor:
    """Read ``(N, *data_shape)`` floats from ``.npy``, ``.npz`` (``key`` picks the array) or ``.parquet``
    (``key`` names the tensor column). Raises ``DataError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _read_npy(path)
    elif suffix == ".npz":
        arr = _read_npz(path, key)
    elif suffix == ".parquet":
        arr = _read_parquet(path, key, data_shape)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; known: .npy, .npz, .parquet")
    return _validate_array(arr, path, data_shape)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"{path}: not a plain numeric .npy array ({err})") from err


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if key is None and len(names) != 1:
                raise DataError(f"{path}: holds arrays {names}; set data.key to choose one")
            name = key if key is not None else names[0]
            if name not in names:
                raise DataError(f"{path}: has no array {name!r}; it holds {names}")
            return archive[name]
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npz archive ({err})") from err


def _read_parquet(path: Path, column: str | None, data_shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    if column is None:
        if table.num_columns != 1:
            raise DataError(f"{path}: has columns {table.column_names}; set data.key to the tensor column")
        column = table.column_names[0]
    if column not in table.column_names:
        raise DataError(f"{path}: has no column {column!r}; columns: {table.column_names}")
    col = table.column(column).combine_chunks()
    if isinstance(col.type, pa.FixedShapeTensorType):
        return col.to_numpy_ndarray()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        flat = col.flatten()
        while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        values = flat.to_numpy(zero_copy_only=False)
        n = len(col)
        if n == 0 or values.size % n:
            raise DataError(f"{path}: column {column!r} rows have unequal lengths")
        shape = data_shape if data_shape is not None else (values.size // n,)
        if math.prod(shape) * n != values.size:
            raise DataError(
                f"{path}: column {column!r} rows hold {values.size // n} values, "
                f"data.shape {list(shape)} needs {math.prod(shape)}"
            )
        return values.reshape(n, *shape)
    raise DataError(f"{path}: column {column!r} has type {col.type}; expected a tensor or list column")


def _validate_array(arr: np.ndarray, path: Path, data_shape: tuple[int, ...] | None) -> Tensor:
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: dtype {arr.dtype} is not floating point; expected float16, float32 or float64")
    if arr.ndim < 2:
        raise DataError(f"{path}: shape {list(arr.shape)} has no sample axis; expected (N, *data_shape)")
    if data_shape is not None and tuple(arr.shape[1:]) != tuple(data_shape):
        raise DataError(f"{path}: samples have shape {list(arr.shape[1:])}, data.shape is {list(data_shape)}")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: holds NaN or Inf values")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _toy_source(name: str, n_train: int, n_held_out: int, seed: int, *_) -> DataSplit:
    return toy_2d(name, n_train, n_held_out, seed)


def _digits_source(n_train: int, n_held_out: int, seed: int, *_) -> DataSplit:
    return digits(n_held_out=n_held_out, seed=seed)


def _synthetic_32_source(n_train: int, n_held_out: int, seed: int, *_) -> DataSplit:
    images = synthetic_images(n_train + n_held_out, (3, 32, 32), seed=seed)
    return DataSplit(train=images[:n_train], held_out=images[n_train:], name="synthetic-32")


def _file_source(
    n_train: int,
    n_held_out: int,
    seed: int,
    path: str | None,
    key: str | None,
    data_shape: tuple[int, ...] | None,
    held_out_fraction: float,
) -> DataSplit:
    if path is None:
        raise DataError("data.path is required when data.name is 'file'")
    arr = load_array_file(path, key, data_shape)
    perm = torch.randperm(arr.shape[0], generator=torch.Generator().manual_seed(seed))
    n_out = max(1, int(round(arr.shape[0] * held_out_fraction)))
    if n_out >= arr.shape[0]:
        raise DataError(f"{path}: {arr.shape[0]} samples are too few to hold {n_out} out for evaluation")
    arr = arr[perm]
    return DataSplit(train=arr[n_out:], held_out=arr[:n_out], name=Path(path).stem)


# every value ``data.name`` may take: name -> loader(n_train, n_held_out, seed, path, key, data_shape,
# held_out_fraction)
DATA_SOURCES: Registry[Callable[..., DataSplit]] = Registry(
    "data source",
    {
        **{name: partial(_toy_source, name) for name in TOY_2D},
        "digits": _digits_source,
        "synthetic-32": _synthetic_32_source,
        "file": _file_source,
    },
)


def load_data(
    name: str,
    *,
    n_train: int = 20000,
    n_held_out: int = 2000,
    seed: int = 0,
    path: str | None = None,
    key: str | None = None,
    data_shape: tuple[int, ...] | None = None,
    held_out_fraction: float = 0.25,
) -> DataSplit:
    """Pick a data source by name (``DATA_SOURCES``): a 2-D toy, ``digits``, ``synthetic-32`` (3x32x32 blobs)
    or ``file`` (with ``path``)."""
    if name not in DATA_SOURCES:
        raise DataError(f"unknown data source {name!r}; known: {', '.join(DATA_SOURCES)}")
    return DATA_SOURCES[name](n_train, n_held_out, seed, path, key, data_shape, held_out_fraction)
