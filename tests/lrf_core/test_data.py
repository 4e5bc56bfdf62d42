"""Tests of lrf_core.data: loaders, validation, stratified subsets, shape checks, fingerprints."""

from __future__ import annotations

import gzip
import os
import socket
import struct

import numpy as np
import pytest

from lrf_core.data import (
    Dataset,
    check_fits_model_input,
    dataset_fingerprint,
    load_dataset,
    read_idx,
    split_dataset,
    stratified_sample,
)
from lrf_core.errors import DataError

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _rows(ds: Dataset) -> list[tuple[bytes, int]]:
    return sorted((row.tobytes(), int(label)) for row, label in zip(ds.x, ds.y))


def _toy(n_per_class=(30, 20, 10), shape=(4,)) -> Dataset:
    y = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    x = np.arange(y.size * int(np.prod(shape)), dtype=np.float32).reshape((y.size, *shape))
    return Dataset(x=x, y=y, name="toy", num_classes=len(n_per_class))


# -- sklearn:digits ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return {split: load_dataset("sklearn:digits", split=split) for split in ("train", "test", "all")}


def test_digits_shapes_dtypes_and_range(digits):
    train, test, full = digits["train"], digits["test"], digits["all"]
    assert full.x.shape == (1797, 8, 8, 1)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert train.x.shape[1:] == (8, 8, 1) and test.x.shape[1:] == (8, 8, 1)
    assert float(full.x.min()) == 0.0 and float(full.x.max()) == 1.0
    assert train.num_classes == test.num_classes == 10
    assert len(train) == 1258 and len(test) == 539  # 70 / 30 of each class
    assert train.name == "sklearn:digits#train"


def test_digits_train_and_test_partition_all(digits):
    train, test, full = digits["train"], digits["test"], digits["all"]
    assert len(train) + len(test) == len(full)
    assert sorted(_rows(train) + _rows(test)) == _rows(full)
    # every class in both, in the same proportions (±1)
    np.testing.assert_allclose(train.class_counts() / 0.7, full.class_counts(), atol=2)
    assert np.all(test.class_counts() > 0)


def test_digits_split_is_deterministic(digits):
    again = load_dataset("sklearn:digits", split="train")
    assert dataset_fingerprint(again) == dataset_fingerprint(digits["train"])
    assert dataset_fingerprint(digits["test"]) != dataset_fingerprint(digits["train"])


# -- stratified_sample / split_dataset -----------------------------------------------------
def test_stratified_sample_has_every_class_in_proportion(digits):
    sample = stratified_sample(digits["train"], 100, seed=3)
    counts = sample.class_counts()
    assert len(sample) == 100
    assert np.all(counts >= 1)
    expected = digits["train"].class_counts() * 100 / len(digits["train"])
    assert np.all(np.abs(counts - expected) < 1.0)


def test_stratified_sample_is_deterministic_per_seed(digits):
    a = stratified_sample(digits["train"], 50, seed=1)
    b = stratified_sample(digits["train"], 50, seed=1)
    c = stratified_sample(digits["train"], 50, seed=2)
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    assert dataset_fingerprint(a) != dataset_fingerprint(c)


def test_stratified_sample_keeps_rare_class_when_n_small():
    sample = stratified_sample(_toy((50, 50, 1)), 3, seed=0)
    assert sample.class_counts().tolist() == [1, 1, 1]


def test_stratified_sample_n_at_least_size_returns_all_in_order():
    toy = _toy()
    sample = stratified_sample(toy, 10_000, seed=5)
    np.testing.assert_array_equal(sample.x, toy.x)
    np.testing.assert_array_equal(sample.y, toy.y)


def test_stratified_sample_rejects_nonpositive_n():
    with pytest.raises(DataError, match="n must be a positive integer"):
        stratified_sample(_toy(), 0)


def test_split_dataset_parts_are_disjoint_and_stratified():
    toy = _toy((30, 20, 10))
    parts = split_dataset(toy, (0.5, 0.3, 0.2), seed=0)
    assert [len(p) for p in parts] == [30, 18, 12]
    assert [p.class_counts().tolist() for p in parts] == [[15, 10, 5], [9, 6, 3], [6, 4, 2]]
    ids = [set(p.x[:, 0].tolist()) for p in parts]  # x[:, 0] is unique per row in _toy
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(i) for i in ids) == len(toy)


@pytest.mark.parametrize("fractions", [(0.8, 0.3), (0.5, 0.0), (), (-0.1, 0.5)])
def test_split_dataset_rejects_bad_fractions(fractions):
    with pytest.raises(DataError, match="fractions must be positive and sum to at most 1"):
        split_dataset(_toy(), fractions)


def test_split_dataset_empty_part_raises():
    with pytest.raises(DataError, match="part 1 .* would be empty"):
        split_dataset(_toy((3, 3, 3)), (0.9, 0.01))


# -- IDX ------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_dir(directory, *, compress: bool, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}" + (".gz" if compress else "")
            payload = _idx_bytes(arr)
            with (gzip.open if compress else open)(os.path.join(directory, name), "wb") as f:
                f.write(payload)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path, compress):
    arrays = _write_idx_dir(tmp_path, compress=compress)
    train = load_dataset(f"idx:{tmp_path}", split="train")
    test = load_dataset(f"idx:{tmp_path}", split="test")
    assert train.x.shape == (6, 28, 28, 1) and test.x.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(train.x[..., 0], arrays["train"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test.y, arrays["t10k"][1])
    assert train.num_classes == 3
    assert len(load_dataset(f"idx:{tmp_path}", split="all")) == 10


def test_idx_truncated_file_names_the_file(tmp_path):
    _write_idx_dir(tmp_path, compress=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte` is truncated: shape \(6, 28, 28\) of uint8 needs 4704 data bytes, the file has 984"):
        load_dataset(f"idx:{tmp_path}", split="train")


def test_idx_truncated_gzip_names_the_file(tmp_path):
    _write_idx_dir(tmp_path, compress=True)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:15])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_dataset(f"idx:{tmp_path}", split="test")


def test_idx_bad_magic_is_rejected(tmp_path):
    path = tmp_path / "x-idx"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"x-idx` is not an IDX file.*12 34 08 01"):
        read_idx(str(path))


def test_idx_missing_directory_and_file(tmp_path):
    with pytest.raises(DataError, match="`/nonexistent/fashion` .* does not exist"):
        load_dataset("idx:/nonexistent/fashion")
    with pytest.raises(DataError, match="No IDX images file in .*train-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path}")


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    ds = load_dataset(f"idx:{FASHION_DIR}", split="test")
    assert ds.x.shape == (10000, 28, 28, 1) and ds.num_classes == 10
    assert ds.class_counts().tolist() == [1000] * 10
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0


# -- npz --------------------------------------------------------------------------------
def test_npz_with_x_and_y(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).random((12, 5, 5), dtype=np.float32)
    np.savez(path, x=x, y=np.arange(12) % 4)
    ds = load_dataset(f"npz:{path}")
    assert ds.x.shape == (12, 5, 5, 1)  # channel axis added
    np.testing.assert_array_equal(ds.x[..., 0], x)
    assert ds.num_classes == 4
    with pytest.raises(DataError, match="no test split"):
        load_dataset(f"npz:{path}", split="test")


def test_npz_with_train_test_keys_and_num_classes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((6, 3)), y_train=[0, 1, 2, 0, 1, 2],
             x_test=np.ones((2, 3)), y_test=[1, 1], num_classes=7)
    train = load_dataset(f"npz:{path}", split="train")
    test = load_dataset(f"npz:{path}", split="test")
    assert train.x.shape == (6, 3) and test.x.shape == (2, 3)
    assert float(test.x.sum()) == 6.0
    assert train.num_classes == test.num_classes == 7
    assert len(load_dataset(f"npz:{path}", split="all")) == 8


def test_npz_nan_values_are_reported(tmp_path):
    path = tmp_path / "p.npz"
    x = np.zeros((5, 2), dtype=np.float32)
    x[0, 0], x[2, 1], x[4, 0] = np.nan, np.inf, -np.inf
    np.savez(path, x=x, y=[0, 1, 0, 1, 0])
    with pytest.raises(DataError, match=r"Data `npz:.*p\.npz#train` has 3 NaN/inf values in x"):
        load_dataset(f"npz:{path}")


def test_npz_missing_file_and_wrong_keys(tmp_path):
    with pytest.raises(DataError, match=r"`/no/such\.npz` .* does not exist"):
        load_dataset("npz:/no/such.npz")
    path = tmp_path / "k.npz"
    np.savez(path, images=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"no arrays for split 'train'.*\['images'\]"):
        load_dataset(f"npz:{path}")


# -- Dataset validation ---------------------------------------------------------------
def test_dataset_rejects_labels_out_of_range():
    with pytest.raises(DataError, match=r"has 2 labels outside \[0, 3\) \(min -1, max 3\)"):
        Dataset(x=np.zeros((4, 2)), y=np.array([0, -1, 3, 2]), name="d", num_classes=3)


def test_dataset_rejects_mismatched_rows_and_bad_rank():
    with pytest.raises(DataError, match=r"same number of rows.*\(4, 2\).*\(3,\)"):
        Dataset(x=np.zeros((4, 2)), y=np.zeros(3, dtype=int), name="d", num_classes=1)
    with pytest.raises(DataError, match="Add a channel axis"):
        Dataset(x=np.zeros((4, 2, 2)), y=np.zeros(4, dtype=int), name="d", num_classes=1)


def test_dataset_casts_and_reprs():
    ds = Dataset(x=np.zeros((3, 2), dtype=np.float64), y=[0, 1, 1], name="d", num_classes=4)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert repr(ds) == "Dataset(name='d', x=(3, 2) float32, y=(3,), num_classes=4, classes_present=2)"


# -- URIs ------------------------------------------------------------------------------
def test_unknown_scheme_lists_supported_schemes():
    with pytest.raises(DataError) as info:
        load_dataset("s3://bucket/data.npz")
    message = str(info.value)
    assert "Unknown dataset scheme `s3:`" in message
    for scheme in ("sklearn:", "idx:", "npz:", "keras:"):
        assert scheme in message


def test_unknown_split_is_rejected():
    with pytest.raises(DataError, match="Invalid split 'val'.*train, test, all"):
        load_dataset("sklearn:digits", split="val")


def _network_available() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(_network_available(), reason="network available: would download")
def test_keras_scheme_without_network_suggests_idx():
    with pytest.raises(DataError, match=r"Could not download `keras:fashion_mnist`.*idx:/usr/share/datasets/fashion-mnist"):
        load_dataset("keras:fashion_mnist")


# -- checks and fingerprints -------------------------------------------------------------
def test_check_fits_model_input_mismatch_message(digits):
    with pytest.raises(DataError) as info:
        check_fits_model_input(digits["train"], (28, 28, 1))
    assert str(info.value).startswith(
        "Data `sklearn:digits#train` has samples of shape (8, 8, 1) but the model expects (28, 28, 1): "
    )


def test_check_fits_model_input_accepts_wildcards_and_hints_channels_first(digits):
    check_fits_model_input(digits["train"], (8, 8, 1))
    check_fits_model_input(digits["train"], (None, None, 1))
    with pytest.raises(DataError, match="channels-last"):
        check_fits_model_input(digits["train"], (1, 8, 8))


def test_fingerprint_depends_on_content_not_name():
    toy = _toy()
    renamed = Dataset(x=toy.x, y=toy.y, name="other", num_classes=toy.num_classes)
    relabelled = Dataset(x=toy.x, y=toy.y[::-1].copy(), name="toy", num_classes=toy.num_classes)
    reshaped = Dataset(x=toy.x.reshape(len(toy), 2, 2, 1), y=toy.y, name="toy", num_classes=3)
    fp = dataset_fingerprint(toy)
    assert len(fp) == 64
    assert dataset_fingerprint(renamed) == fp
    assert dataset_fingerprint(relabelled) != fp
    assert dataset_fingerprint(reshaped) != fp
