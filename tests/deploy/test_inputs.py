"""bnlab.deploy.inputs: the training inputs named by a data spec, and one example's shape."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

from bnlab.deploy.inputs import (
    input_shape,
    load_cifar_inputs,
    load_inputs,
    parse_input_shape,
    read_array,
)
from bnlab.layers import BatchNorm, Conv2D, Dense, Sequential

SRC = Path(__file__).resolve().parents[2] / "src" / "bnlab"


def _dense() -> Sequential:
    return Sequential([Dense(5, 3, seed=0), BatchNorm(3)])


def test_npy_is_read_as_saved(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(9, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_inputs(tmp_path / "x.npy", _dense()), x)
    np.testing.assert_array_equal(load_inputs(str(tmp_path / "x.npy"), _dense(), limit=4), x[:4])


def test_npz_takes_x_or_its_only_array(tmp_path: Path, rng: np.random.Generator) -> None:
    x, other = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    np.savez(tmp_path / "a.npz", x=x, y=other)
    np.savez(tmp_path / "b.npz", inputs=other)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npz"), x)
    np.testing.assert_array_equal(read_array(tmp_path / "b.npz"), other)
    assert load_inputs(tmp_path / "a.npz", _dense()).dtype == np.float64  # as saved
    np.savez(tmp_path / "c.npz", a=x, b=other)
    with pytest.raises(ValueError, match=r"data: .*c\.npz must hold an array 'x' or one array"):
        read_array(tmp_path / "c.npz")


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds dtype object; expected numbers"):
        read_array(tmp_path / "o.npy")
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="save the inputs with numpy.save"):
        read_array(tmp_path / "z.npz")


@pytest.mark.parametrize(
    ("x", "words"),
    [
        (np.ones((4, 5), np.int64), "dtype int64 shape (4, 5)"),
        (np.ones(5, np.float32), "shape (5,)"),
        (np.ones((0, 5), np.float32), "with N >= 1"),
    ],
)
def test_inputs_must_be_floats_of_examples(x: np.ndarray, words: str, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError) as e:
        load_inputs(tmp_path / "x.npy", _dense(), name="--data")
    assert str(e.value).startswith("--data: ") and words in str(e.value)


def test_non_finite_rows_are_counted_and_named(tmp_path: Path) -> None:
    x = np.zeros((10, 3), np.float32)
    x[4, 0], x[7, 2] = np.inf, np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(
        ValueError, match=r"^data: .* NaN or Inf in 2 of 10 examples \(first: row 4"
    ):
        load_inputs(tmp_path / "x.npy", _dense())


def test_unknown_spec_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^data: expected 'mnist', .* got 'x\.csv' \(no such"):
        load_inputs("x.csv", _dense())
    with pytest.raises(FileNotFoundError, match="^--data: no file at"):
        load_inputs(tmp_path / "missing.npy", _dense(), name="--data")


def test_cifar_folder_is_scaled_nhwc(tmp_path: Path, rng: np.random.Generator) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    raw = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        raw[name] = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        batch = {b"data": raw[name], b"labels": [0, 1]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    x = load_inputs(d, Sequential([Conv2D(3, 2, 3, seed=0), BatchNorm(2)]))
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.float32
    first = raw["data_batch_1"][0].reshape(3, 32, 32).transpose(1, 2, 0)  # CHW rows -> HWC
    np.testing.assert_array_equal(x[0], first.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(load_cifar_inputs(d, limit=3), x[:3])


@pytest.mark.parametrize(
    ("text", "shape"), [("784", (784,)), ("32,32,3", (32, 32, 3)), ("32x32x3", (32, 32, 3))]
)
def test_parse_input_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "a,b", "0,3", "3,-1", ","])
def test_bad_input_shape_names_the_argument(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--input-shape: expected e\.g\. 784 or 32,32,3, got"):
        parse_input_shape(text, name="--input-shape")


def test_input_shape_of_a_dense_model_and_of_a_conv_model() -> None:
    assert input_shape(None, _dense()) == (5,)
    assert input_shape("7", _dense()) == (7,)  # what is given wins
    conv = Sequential([Conv2D(1, 2, 3), BatchNorm(2)])
    assert input_shape("6,6,1", conv) == (6, 6, 1)
    with pytest.raises(ValueError, match=r"^input_shape is needed: the model starts with Conv2D"):
        input_shape(None, conv)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_deploy_floor_has_no_command_line_code() -> None:
    """Floor 3 imports neither argparse nor the floor-5 command, not even inside a function."""
    checked = 0
    for path in sorted((SRC / "deploy").glob("*.py")):
        bad = {m for m in _imports(path) if m == "argparse" or m.startswith("bnlab.cli")}
        assert not bad, (path.name, bad)
        checked += 1
    assert checked >= 10
