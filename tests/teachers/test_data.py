"""Built-in data sets and user files, with clear errors for bad files."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from teachers.data import TOY_2D, DataError, digits, load_array_file, load_data, toy_2d


@pytest.mark.parametrize("name", sorted(TOY_2D))
def test_toy_distributions(name):
    split = toy_2d(name, 500, 100, seed=1)
    assert split.train.shape == (500, 2) and split.held_out.shape == (100, 2)
    assert split.train.dtype == torch.float32 and torch.isfinite(split.train).all()
    assert torch.equal(split.train, toy_2d(name, 500, 100, seed=1).train)  # seeded
    assert not torch.equal(split.train[:100], split.held_out)


def test_digits():
    split = digits()
    assert split.train.shape == (1347, 1, 8, 8) and split.held_out.shape == (450, 1, 8, 8)
    both = torch.cat([split.train, split.held_out])
    assert both.min() == -1.0 and both.max() == 1.0
    assert split.is_image


def test_npy_npz_parquet_round_trip(tmp_path):
    arr = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", images=arr, labels=np.arange(40))
    tensor_type = pa.fixed_shape_tensor(pa.float32(), (1, 8, 8))
    storage = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), 64)
    pq.write_table(pa.table({"x": pa.ExtensionArray.from_storage(tensor_type, storage)}), tmp_path / "c.parquet")
    pq.write_table(
        pa.table({"x": [row.reshape(-1).tolist() for row in arr], "y": list(range(40))}), tmp_path / "d.parquet"
    )
    expected = torch.from_numpy(arr)
    assert torch.equal(load_array_file(tmp_path / "a.npy"), expected)
    assert torch.equal(load_array_file(tmp_path / "b.npz", key="images"), expected)
    assert torch.equal(load_array_file(tmp_path / "c.parquet"), expected)
    assert torch.equal(load_array_file(tmp_path / "d.parquet", key="x", data_shape=(1, 8, 8)), expected)
    split = load_data("file", path=str(tmp_path / "a.npy"), seed=0)
    assert split.train.shape[0] + split.held_out.shape[0] == 40


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load_array_file(tmp_path / "missing.npy")
    np.save(tmp_path / "ints.npy", np.arange(10).reshape(5, 2))
    with pytest.raises(DataError, match="dtype int64 is not floating point"):
        load_array_file(tmp_path / "ints.npy")
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(DataError, match="has no sample axis"):
        load_array_file(tmp_path / "flat.npy")
    np.save(tmp_path / "shape.npy", np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"samples have shape \[3\], data.shape is \[2\]"):
        load_array_file(tmp_path / "shape.npy", data_shape=(2,))
    np.save(tmp_path / "nan.npy", np.full((5, 2), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="NaN or Inf"):
        load_array_file(tmp_path / "nan.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; set data.key"):
        load_array_file(tmp_path / "two.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_array_file(tmp_path / "x.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_array_file(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"x": [[1.0, 2.0], [3.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(DataError, match="unequal lengths|rows hold"):
        load_array_file(tmp_path / "ragged.parquet", key="x")
    with pytest.raises(DataError, match="unknown data source"):
        load_data("imagenet")


def test_synthetic_32_images():
    split = load_data("synthetic-32", n_train=64, n_held_out=16, seed=3)
    assert split.train.shape == (64, 3, 32, 32) and split.held_out.shape == (16, 3, 32, 32)
    assert split.is_image and split.name == "synthetic-32" and split.train.dtype == torch.float32
    assert split.kind == "image" and load_data("two_moons", n_train=8, n_held_out=4).kind == "vector"
    both = torch.cat([split.train, split.held_out])
    assert both.min() >= -1.0 and both.max() <= 1.0 and both.std() > 0.2
    assert torch.equal(split.train, load_data("synthetic-32", n_train=64, n_held_out=16, seed=3).train)  # seeded
    assert not torch.equal(split.train, load_data("synthetic-32", n_train=64, n_held_out=16, seed=4).train)
    # smooth: neighbouring pixels differ far less than random pixels do
    step = (both[..., 1:] - both[..., :-1]).abs().mean()
    assert step < 0.25 * (both - both[torch.randperm(80)]).abs().mean()
