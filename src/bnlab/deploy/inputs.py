"""The training inputs of a model, named by a short data spec (for recalibration and export).

Population statistics (Algorithm 2) need the model's training inputs exactly as they were fed
to it. :func:`load_inputs` reads them from a spec, float32:

- ``"mnist"`` or ``"fashion-mnist"``: the training images, x / 255, flattened to (N, 784) when
  the model starts with a Dense layer, NHWC (N, 28, 28, 1) otherwise (the preprocessing of
  bnlab's MNIST experiments);
- a CIFAR-10 copy or an image folder, as :func:`bnlab.data.load_cifar10` takes it: the
  training images, x / 255, NHWC;
- a ``.npy``/``.npz`` file of preprocessed inputs: the array of a ``.npy``, the array ``x`` of
  an ``.npz`` (or its only array). Never unpickles; the inputs must be finite floats.

:func:`input_shape` is one example's shape for ONNX export: parsed from text such as
``"32,32,3"``, or the ``in_features`` of a model whose first layer is Dense.

Errors are ValueError (FileNotFoundError for a missing ``.npy``/``.npz``) whose message starts
with ``name`` (the argument, or the command-line flag a caller passes) and says what was
expected, what came and the fix. Nothing here writes to disk.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # layers are imported when a function runs (the bnlab command starts fast)
    from bnlab.data.limits import ByteBudget
    from bnlab.layers.base import Layer

__all__ = [
    "load_inputs",
    "load_cifar_inputs",
    "load_test_split",
    "read_array",
    "input_shape",
    "parse_input_shape",
]

_ARRAY_SUFFIXES = (".npy", ".npz")


def _first_leaf(model: Layer) -> Layer:
    from bnlab.deploy._walk import iter_leaves

    return next(iter_leaves(model))


def _starts_dense(model: Layer) -> bool:
    from bnlab.layers.dense import Dense

    return isinstance(_first_leaf(model), Dense)


def load_inputs(
    data: str | Path, model: Layer, limit: int | None = None, *, name: str = "data"
) -> np.ndarray:
    """The training inputs named by ``data`` (see the module docstring), float32, at most the
    first ``limit`` examples (all when None).

    Example::

        x = load_inputs("mnist", model, limit=600)   # (600, 784) for a Dense-first model
    """
    data = str(data)
    if data in ("mnist", "fashion-mnist"):
        from bnlab.data import load_fashion_mnist, load_mnist

        (x, _), _ = (load_mnist if data == "mnist" else load_fashion_mnist)()
        x = x[:limit].astype(np.float32) / np.float32(255)
        return x.reshape(len(x), -1) if _starts_dense(model) else x
    path = Path(data)
    if path.suffix not in _ARRAY_SUFFIXES and path.exists():
        return load_cifar_inputs(path, limit)
    if path.suffix not in _ARRAY_SUFFIXES:
        raise ValueError(
            f"{name}: expected 'mnist', 'fashion-mnist', a CIFAR-10 path or image folder, or a "
            f".npy/.npz file of inputs, got {data!r} (no such path)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no file at {path}")
    x = read_array(path, name=name)[:limit]
    _check_inputs(x, path, name)
    return x


def load_test_split(
    data: str | Path, model: Layer, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The labelled test split ``(x, y)`` of the dataset ``data`` names, preprocessed as
    :func:`load_inputs` preprocesses its training split, at most ``limit`` examples; None for
    a ``.npy``/``.npz`` of inputs (no labels). Call it after :func:`load_inputs` checked
    ``data``."""
    data = str(data)
    if data in ("mnist", "fashion-mnist"):
        from bnlab.data import load_fashion_mnist, load_mnist

        _, (x, y) = (load_mnist if data == "mnist" else load_fashion_mnist)()
        x = x[:limit].astype(np.float32) / np.float32(255)
        return (x.reshape(len(x), -1) if _starts_dense(model) else x), y[:limit]
    path = Path(data)
    if path.suffix in _ARRAY_SUFFIXES or not path.exists():
        return None
    from bnlab.data import load_cifar10

    _, (x, y) = load_cifar10(path)
    return x[:limit].astype(np.float32) / np.float32(255), y[:limit]


def _check_inputs(x: np.ndarray, path: Path, name: str) -> None:
    """Preprocessed inputs are floats of shape (N, ...), N >= 1, every value finite."""
    if x.dtype.kind != "f" or x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"{name}: {path} holds dtype {x.dtype} shape {x.shape}; expected preprocessed "
            "floats of shape (N, ...) with N >= 1"
        )
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name}: {path} holds NaN or Inf in {int(bad.sum())} of {len(x)} examples (first: "
            f"row {int(np.argmax(bad))}); population statistics need finite inputs: clean or "
            "drop those rows"
        )


def load_cifar_inputs(path: str | Path, limit: int | None = None) -> np.ndarray:
    """The training images of a CIFAR-10 copy or image folder (:func:`bnlab.data.load_cifar10`),
    x / 255, NHWC float32, at most the first ``limit``."""
    from bnlab.data import load_cifar10

    (x, _), _ = load_cifar10(Path(path))
    return x[:limit].astype(np.float32) / np.float32(255)


def read_array(path: str | Path, *, name: str = "data", max_bytes: int | None = None) -> np.ndarray:
    """The array of a ``.npy``, or the ``x`` (or only) array of a ``.npz``; never unpickles.

    The size the file declares (the ``.npy`` header; for an ``.npz`` also the zip directory)
    is checked before anything is allocated or inflated: it must fit in the file (a ``.npy``)
    and under the data limit of :mod:`bnlab.data.limits` (``max_bytes`` or
    ``$BNLAB_MAX_BYTES``; by default at most 1 GiB and 100x the file's size). Raises ValueError
    (:class:`~bnlab.data.limits.DataLimitError` past the limit) naming the file and the fix.
    """
    from bnlab.data.limits import byte_budget

    path = Path(path)
    budget = byte_budget(max_bytes, path.stat().st_size, where=name)
    fix = "save the inputs with numpy.save or numpy.savez"
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                return _read_npy(f, path.stat().st_size, budget, f"{path}", fix)
        with zipfile.ZipFile(path) as zf:
            names = [i.filename[:-4] for i in zf.infolist() if i.filename.endswith(".npy")]
            if "x" not in names and len(names) != 1:
                raise ValueError(f"{name}: {path} must hold an array 'x' or one array, has {names}")
            info = zf.getinfo(("x" if "x" in names else names[0]) + ".npy")
            with zf.open(info) as f:
                return _read_npy(f, info.file_size, budget, f"{path}:{info.filename}", fix)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"{name}: {path} cannot be read as a .npy/.npz array ({e}); {fix}"
        ) from None


def _read_npy(f: IO[bytes], size: int, budget: ByteBudget, what: str, fix: str) -> np.ndarray:
    """One ``.npy`` stream of ``size`` bytes whose header is trusted only as far as it fits."""
    where = budget.where
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)
    except ValueError as e:
        raise ValueError(f"{where}: {what} cannot be read as a .npy array ({e}); {fix}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"{where}: {what} holds dtype {dtype}; expected numbers; {fix}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size:
        raise ValueError(
            f"{where}: {what} declares shape {shape} of {dtype} ({nbytes:,} bytes) but holds "
            f"{size:,} bytes: it is truncated or crafted; {fix}"
        )
    budget.charge(nbytes, f"{what} (shape {shape}, {dtype})")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{where}: {what} is truncated; {fix}")
    arr = np.frombuffer(data, dtype=dtype).copy()
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def parse_input_shape(text: str, *, name: str = "input_shape") -> tuple[int, ...]:
    """One example's shape from ``"784"``, ``"32,32,3"`` or ``"32x32x3"``; every size >= 1."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"{name}: expected e.g. 784 or 32,32,3, got {text!r}")
    return shape


def input_shape(text: str | None, model: Layer, *, name: str = "input_shape") -> tuple[int, ...]:
    """One example's shape: ``text`` parsed (:func:`parse_input_shape`) when given, else
    ``(in_features,)`` of the model's first layer if it is Dense.

    Raises ValueError when ``text`` is empty or None and the model starts with another layer
    (a convolution's input height and width cannot be inferred)."""
    if text:
        return parse_input_shape(text, name=name)
    from bnlab.layers.dense import Dense

    first = _first_leaf(model)
    if isinstance(first, Dense) and first.in_features is not None:  # None: a lazy Dense(units)
        return (int(first.in_features),)
    raise ValueError(
        f"{name} is needed: the model starts with {type(first).__name__}, whose input "
        f"height and width cannot be inferred (e.g. {name} 32,32,3)"
    )
