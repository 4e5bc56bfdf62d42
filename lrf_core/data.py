"""Labelled image/vector data for calibration, fine-tuning and evaluation (NumPy only).

A :class:`Dataset` is a frozen, self-validating pair ``(x, y)``:

* ``x`` : float32, ``(N, H, W, C)`` channels-last images or ``(N, F)`` vectors, all finite;
* ``y`` : int64 labels ``(N,)`` in ``[0, num_classes)``.

:func:`load_dataset` reads one from a URI (``sklearn:digits``, ``idx:DIR``, ``npz:PATH``,
``keras:fashion_mnist`` / ``keras:mnist``); :func:`stratified_sample` and
:func:`split_dataset` draw deterministic, class-proportional subsets;
:func:`check_fits_model_input` compares sample shapes with a model's input before any work
starts; :func:`dataset_fingerprint` hashes the content for lineage records.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from lrf_core.errors import DataError

__all__ = [
    "Dataset",
    "SCHEMES",
    "SPLITS",
    "load_dataset",
    "load_arrays",
    "RawData",
    "stratified_sample",
    "split_dataset",
    "check_fits_model_input",
    "dataset_fingerprint",
    "read_idx",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")

#: Fraction of ``sklearn:digits`` that goes to ``split="train"`` (the rest is ``"test"``).
DIGITS_TRAIN_FRACTION = 0.7
#: Seed of the deterministic train/test split of ``sklearn:digits``.
DIGITS_SPLIT_SEED = 0


# ----------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Labelled examples, validated on construction.

    Attributes
    ----------
    x : ndarray, float32, shape ``(N, H, W, C)`` (channels last) or ``(N, F)``
        Converted to float32 if given another real dtype. Must be finite.
    y : ndarray, int64, shape ``(N,)``
        Integer class labels in ``[0, num_classes)``.
    name : str
        Where the data came from (the URI, plus ``#split``), quoted in every error.
    num_classes : int
        Number of classes of the task (may exceed the classes present in ``y``).
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    num_classes: int

    def __post_init__(self) -> None:
        where = f"Data `{self.name}`"
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where}: x must hold real numbers. Received dtype {x.dtype}.")
        if x.ndim not in (2, 4):
            hint = " Add a channel axis: x[..., None]." if x.ndim == 3 else ""
            raise DataError(
                f"{where}: x must be (N, H, W, C) channels-last images or (N, F) vectors. "
                f"Received shape {x.shape}.{hint}"
            )
        if y.ndim != 1:
            raise DataError(f"{where}: y must be a 1-D vector of labels. Received shape {y.shape}.")
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{where}: x and y must have the same number of rows. "
                f"Received x {x.shape} and y {y.shape}."
            )
        if x.shape[0] == 0:
            raise DataError(f"{where} has no samples.")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                or self.num_classes < 1:
            raise DataError(f"{where}: num_classes must be a positive integer. Received {self.num_classes!r}.")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise DataError(f"{where}: labels y must be integers. Received non-integer values.")
        elif y.dtype.kind not in "iu":
            raise DataError(f"{where}: labels y must be integers. Received dtype {y.dtype}.")
        y = y.astype(np.int64, copy=False)
        bad = (y < 0) | (y >= self.num_classes)
        if np.any(bad):
            raise DataError(
                f"{where} has {int(bad.sum())} labels outside [0, {self.num_classes}) "
                f"(min {int(y.min())}, max {int(y.max())}): fix the labels or set num_classes."
            )
        x = x.astype(np.float32, copy=False)
        n_bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if n_bad:
            raise DataError(
                f"{where} has {n_bad} NaN/inf values in x: clean the data or drop those rows."
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", int(self.num_classes))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch axis."""
        return tuple(int(d) for d in self.x.shape[1:])

    def class_counts(self) -> np.ndarray:
        """Examples per class, shape ``(num_classes,)``."""
        return np.bincount(self.y, minlength=self.num_classes)

    def __repr__(self) -> str:
        present = int(np.count_nonzero(self.class_counts()))
        return (
            f"Dataset(name={self.name!r}, x={self.x.shape} {self.x.dtype}, y={self.y.shape}, "
            f"num_classes={self.num_classes}, classes_present={present})"
        )

    def _subset(self, index: np.ndarray, name: str) -> "Dataset":
        return Dataset(x=self.x[index], y=self.y[index], name=name, num_classes=self.num_classes)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawData:
    """Arrays as a loader read them, before :class:`Dataset` validates their contents.

    The pipeline hands these to its data-quality suite, which reports every problem
    (NaNs, labels, duplicates...) at once instead of stopping at the first.
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    num_classes: int


def load_arrays(uri: str, *, split: str = "train") -> RawData:
    """Load a labelled dataset's arrays from a URI (format checks only, no content checks).

    Parameters
    ----------
    uri : str
        One of (see :data:`SCHEMES`):

        * ``sklearn:digits`` -- scikit-learn's 8×8 digits, ``(N, 8, 8, 1)`` in [0, 1];
          ``train``/``test`` is a deterministic stratified 70/30 split, ``all`` is all 1797.
        * ``idx:DIR`` -- MNIST-format IDX files in ``DIR`` (``train-images-idx3-ubyte``,
          ``train-labels-idx1-ubyte``, ``t10k-…``, plain or ``.gz``), e.g.
          ``idx:/usr/share/datasets/fashion-mnist``; uint8 images scaled to [0, 1],
          ``(N, 28, 28, 1)``; ``all`` concatenates train and test.
        * ``npz:PATH`` -- a NumPy ``.npz`` with ``x``/``y`` (used whole for ``train``/``all``)
          or ``x_train``/``y_train`` and ``x_test``/``y_test``; optional ``num_classes``
          (default ``max(y) + 1``). Values are used as stored (cast to float32, no scaling);
          ``(N, H, W)`` images get a channel axis.
        * ``keras:fashion_mnist``, ``keras:mnist`` -- downloaded by ``keras.datasets``
          (needs network on first use), scaled to [0, 1], ``(N, 28, 28, 1)``.
    split : {"train", "test", "all"}

    Returns
    -------
    RawData
        Named ``"{uri}#{split}"``.

    Raises
    ------
    DataError
        Unknown scheme or split, missing or malformed file.
    """
    if not isinstance(uri, str) or ":" not in uri:
        raise DataError(
            f"Invalid dataset URI {uri!r}: expected `scheme:location` with scheme one of "
            f"{', '.join(SCHEMES)}."
        )
    if split not in SPLITS:
        raise DataError(f"Invalid split {split!r} for `{uri}`: expected one of {', '.join(SPLITS)}.")
    scheme, _, location = uri.partition(":")
    loader = _LOADERS.get(scheme)
    if loader is None:
        raise DataError(
            f"Unknown dataset scheme `{scheme}:` in `{uri}`. Supported schemes: "
            + "; ".join(f"{s}: ({desc})" for s, desc in SCHEMES.items())
            + "."
        )
    x, y, num_classes = loader(location, split, uri)
    return RawData(x=x, y=y, name=f"{uri}#{split}", num_classes=num_classes)


def load_dataset(uri: str, *, split: str = "train") -> Dataset:
    """Load a labelled dataset from a URI and validate it (see :func:`load_arrays` for URIs).

    Raises
    ------
    DataError
        Unknown scheme or split, missing or malformed file, invalid contents.
    """
    raw = load_arrays(uri, split=split)
    dataset = Dataset(x=raw.x, y=raw.y, name=raw.name, num_classes=raw.num_classes)
    logger.info("Loaded %r", dataset)
    return dataset


def _load_sklearn(location: str, split: str, uri: str):
    if location != "digits":
        raise DataError(f"Unknown scikit-learn dataset in `{uri}`: only `sklearn:digits` is supported.")
    from sklearn.datasets import load_digits  # sklearn import is slow: only when asked

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    if split == "all":
        return x, y, 10
    full = Dataset(x=x, y=y, name=uri, num_classes=10)
    train, test = split_dataset(
        full, (DIGITS_TRAIN_FRACTION, 1.0 - DIGITS_TRAIN_FRACTION), seed=DIGITS_SPLIT_SEED
    )
    part = train if split == "train" else test
    return part.x, part.y, 10


# -- IDX (MNIST format) ------------------------------------------------------------------
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into an array of its native shape.

    Format (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dims ``d``, then ``d`` uint32
    sizes, then the data in C order.

    Raises
    ------
    DataError
        Bad magic number, unknown type code, truncated or oversized data; names the file.
    """
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file `{path}` does not exist.") from None
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut .gz raises EOFError
        raise DataError(f"Cannot read IDX file `{path}`: {e}. Re-download or re-extract it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"`{path}` is not an IDX file: expected magic bytes 00 00 <type> <ndim> with type in "
            f"{{{', '.join(hex(k) for k in _IDX_DTYPES)}}}. Received {raw[:4].hex(' ') or 'an empty file'}."
        )
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file `{path}` is truncated: its header announces {ndim} dims but ends early.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    received = len(raw) - header
    if received != expected:
        what = "truncated" if received < expected else "longer than its header says"
        raise DataError(
            f"IDX file `{path}` is {what}: shape {shape} of {dtype.name} needs {expected} data "
            f"bytes, the file has {received}. Re-download or re-extract it."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(directory: str, prefix: str, kind: str, *, required: bool = True) -> Optional[str]:
    """Path of ``{prefix}-{kind}-idx{3|1}-ubyte`` (also ``.``-separated, and ``.gz``)."""
    rank = 3 if kind == "images" else 1
    stems = (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte")
    candidates = [os.path.join(directory, stem + ext) for stem in stems for ext in ("", ".gz")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    if required:
        raise DataError(
            f"No IDX {kind} file in `{directory}`: looked for "
            f"{', '.join(os.path.basename(c) for c in candidates)}."
        )
    return None


def _load_idx(location: str, split: str, uri: str):
    directory = location
    if not os.path.isdir(directory):
        hint = ""
        if "fashion" in directory:
            hint = " On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` installs /usr/share/datasets/fashion-mnist."
        raise DataError(f"IDX dataset directory `{directory}` (from `{uri}`) does not exist.{hint}")
    parts = ("train", "test") if split == "all" else (split,)
    xs, ys = [], []
    for part in parts:
        prefix = _IDX_PREFIX[part]
        images_path = _find_idx(directory, prefix, "images")
        labels_path = _find_idx(directory, prefix, "labels")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"IDX files `{images_path}` and `{labels_path}` do not match: expected images "
                f"(N, H, W) and labels (N,). Received {images.shape} and {labels.shape}."
            )
        x = images.astype(np.float32)
        if images.dtype == np.uint8:
            x /= 255.0
        xs.append(x[..., None])
        ys.append(labels.astype(np.int64))
    y = np.concatenate(ys)
    # num_classes from every label file present, so train and test agree on it.
    label_max = int(y.max())
    for part in set(_IDX_PREFIX) - set(parts):
        other = _find_idx(directory, _IDX_PREFIX[part], "labels", required=False)
        if other is not None:
            label_max = max(label_max, int(read_idx(other).max()))
    return np.concatenate(xs), y, label_max + 1


# -- npz ----------------------------------------------------------------------------------
def _load_npz(location: str, split: str, uri: str):
    path = location
    if not os.path.isfile(path):
        raise DataError(f"Dataset file `{path}` (from `{uri}`) does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise DataError(f"Cannot read `{path}`: {e}. Store plain numeric arrays.") from None
    except Exception as e:  # noqa: BLE001 - zipfile/OSError/EOFError: all mean "not a usable npz"
        raise DataError(
            f"Cannot read `{path}`: not a valid .npz archive ({type(e).__name__}: {e})."
        ) from None
    keys = sorted(arrays)
    if "x" in arrays and "y" in arrays:
        if split == "test":
            raise DataError(
                f"`{path}` has one set of examples (keys {keys}) and no test split: store "
                f"x_test/y_test, or use split='all'/'train' for the whole file."
            )
        x, y = arrays["x"], arrays["y"]
    elif split == "all" and {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        x = np.concatenate([arrays["x_train"], arrays["x_test"]])
        y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    elif split != "all" and f"x_{split}" in arrays and f"y_{split}" in arrays:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    else:
        raise DataError(
            f"`{path}` has no arrays for split '{split}': expected keys x and y, or "
            f"x_train/y_train and x_test/y_test. Received keys {keys}."
        )
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if "num_classes" in arrays:
        num_classes = int(np.asarray(arrays["num_classes"]).reshape(()))
    else:
        label_keys = [k for k in ("y", "y_train", "y_test") if k in arrays and arrays[k].size]
        if y.size == 0 or y.dtype.kind not in "iuf":
            num_classes = 1  # Dataset reports the real problem
        else:
            num_classes = int(max(np.max(arrays[k]) for k in label_keys)) + 1
    return x, y, num_classes


# -- keras.datasets (network) ------------------------------------------------------------
_KERAS_DATASETS = ("fashion_mnist", "mnist")


def _load_keras(location: str, split: str, uri: str):
    if location not in _KERAS_DATASETS:
        raise DataError(
            f"Unknown Keras dataset in `{uri}`: expected one of "
            f"{', '.join('keras:' + k for k in _KERAS_DATASETS)}."
        )
    try:
        import keras  # heavy, and may download: only when this scheme is asked for

        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, location).load_data()
    except Exception as e:  # noqa: BLE001 - any failure here means "could not get the data"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(
            f"Could not download `{uri}` through keras.datasets ({reason}). Without network, use "
            f"local IDX files instead: `apt-get install dataset-fashion-mnist`, then "
            f"`idx:/usr/share/datasets/fashion-mnist`."
        ) from None
    parts = {"train": [(x_train, y_train)], "test": [(x_test, y_test)],
             "all": [(x_train, y_train), (x_test, y_test)]}[split]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)[..., None] / 255.0
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return x, y, 10


_LOADERS: dict[str, Callable[[str, str, str], tuple]] = {
    "sklearn": _load_sklearn,
    "idx": _load_idx,
    "npz": _load_npz,
    "keras": _load_keras,
}

#: Supported URI schemes and what they point to.
SCHEMES = {
    "sklearn": "sklearn:digits",
    "idx": "idx:DIR with MNIST-format IDX files",
    "npz": "npz:PATH to a .npz with x/y or x_train/y_train/x_test/y_test",
    "keras": "keras:fashion_mnist or keras:mnist, downloaded",
}


# ----------------------------------------------------------------------------------------
# Subsets
# ----------------------------------------------------------------------------------------
def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sample sizes summing to ``n``: proportional (largest remainder), ≥1 per present class.

    Requires ``sum(counts) > n``. Ties break toward the lower class index.
    """
    total = int(counts.sum())
    quota = counts * (n / total)
    alloc = np.floor(quota).astype(np.int64)
    present = counts > 0
    if n >= int(present.sum()):
        alloc = np.where(present, np.maximum(alloc, 1), 0)
    order = np.lexsort((np.arange(counts.size), -(quota - alloc)))  # largest remainder first
    while alloc.sum() < n:
        for k in order:
            if alloc.sum() == n:
                break
            if alloc[k] < counts[k]:
                alloc[k] += 1
    while alloc.sum() > n:  # only after the ≥1 floor: take back from the most over-served
        over = np.where(alloc > 1, alloc - quota, -np.inf)
        alloc[int(np.argmax(over))] -= 1
    return alloc


def stratified_sample(dataset: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """Draw ``n`` examples with every class represented in proportion.

    Each class ``k`` with ``c_k`` of the ``N`` examples gets about ``n·c_k/N`` of them
    (largest remainder rounding) and at least one when ``n ≥`` number of classes present.
    The chosen examples keep their original order. ``n ≥ N`` returns every example, in the
    original order.

    Parameters
    ----------
    dataset : Dataset
    n : int, ≥ 1
    seed : int
        Same seed, same sample.

    Returns
    -------
    Dataset
        Named ``"{dataset.name}/sample{n}"``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"stratified_sample of `{dataset.name}`: n must be a positive integer. Received {n!r}.")
    if n >= len(dataset):
        return dataset._subset(np.arange(len(dataset)), f"{dataset.name}/sample{len(dataset)}")
    counts = dataset.class_counts()
    alloc = _allocate(counts, int(n))
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(dataset.num_classes):
        if alloc[k]:
            members = np.flatnonzero(dataset.y == k)
            chosen.append(rng.permutation(members)[: alloc[k]])
    index = np.sort(np.concatenate(chosen))
    return dataset._subset(index, f"{dataset.name}/sample{n}")


def split_dataset(
    dataset: Dataset, fractions: Sequence[float], *, seed: int = 0
) -> tuple[Dataset, ...]:
    """Split into disjoint, class-stratified parts (e.g. calibration / fine-tune / held-out).

    Within each class the examples are shuffled (``seed``) and cut at
    ``round(c_k · cumsum(fractions))``, so every part holds about ``fractions[i]`` of every
    class. Fractions may sum to less than 1 (the rest is unused), not more.

    Returns
    -------
    tuple of Dataset
        One per fraction, named ``"{dataset.name}/part{i}"``, each in original order.

    Raises
    ------
    DataError
        Fractions not positive, summing above 1, or a part that would be empty.
    """
    fracs = np.asarray(list(fractions), dtype=np.float64)
    if fracs.ndim != 1 or fracs.size == 0 or not np.all(np.isfinite(fracs)) or np.any(fracs <= 0) \
            or fracs.sum() > 1.0 + 1e-9:
        raise DataError(
            f"split_dataset of `{dataset.name}`: fractions must be positive and sum to at most 1. "
            f"Received {list(fractions)}."
        )
    bounds = np.minimum(np.cumsum(fracs), 1.0)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fracs]
    for k in range(dataset.num_classes):
        members = np.flatnonzero(dataset.y == k)
        if members.size == 0:
            continue
        members = rng.permutation(members)
        cuts = np.concatenate([[0], np.round(bounds * members.size).astype(np.int64)])
        for i in range(fracs.size):
            parts[i].append(members[cuts[i]: cuts[i + 1]])
    result = []
    for i, pieces in enumerate(parts):
        index = np.sort(np.concatenate(pieces))
        if index.size == 0:
            raise DataError(
                f"split_dataset of `{dataset.name}` ({len(dataset)} examples): part {i} "
                f"(fraction {fracs[i]:g}) would be empty. Use larger fractions or more data."
            )
        result.append(dataset._subset(index, f"{dataset.name}/part{i}"))
    return tuple(result)


# ----------------------------------------------------------------------------------------
# Checks and lineage
# ----------------------------------------------------------------------------------------
def check_fits_model_input(dataset: Dataset, input_shape: Sequence[Optional[int]]) -> None:
    """Raise unless the samples fit a model input of ``input_shape`` (no batch axis).

    ``None`` in ``input_shape`` matches any size, e.g. ``(None, None, 3)``.

    Raises
    ------
    DataError
        "Data `sklearn:digits#train` has samples of shape (8, 8, 1) but the model expects
        (28, 28, 1): ..." with what to do.
    """
    expected = tuple(None if d is None else int(d) for d in input_shape)
    received = dataset.sample_shape
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received)
    )
    if fits:
        return
    shown = "(" + ", ".join("None" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
    advice = (
        "use data with the model's input size (e.g. `idx:` Fashion-MNIST for 28×28×1 models, "
        "`sklearn:digits` for 8×8×1) or a model trained on this data."
    )
    if len(expected) == len(received) and sorted(e or 0 for e in expected) == sorted(received):
        advice = "the axes look permuted: lrflow expects channels-last data (N, H, W, C) and models."
    raise DataError(
        f"Data `{dataset.name}` has samples of shape {received} but the model expects {shown}: {advice}"
    )


def dataset_fingerprint(dataset: Dataset) -> str:
    """Hex sha256 of x and y (bytes, shapes and dtypes); the name is not included."""
    digest = hashlib.sha256()
    for arr in (dataset.x, dataset.y):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype.str}{arr.shape};".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()
