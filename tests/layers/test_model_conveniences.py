"""Input shapes inferred at build (Dense(units), Conv2D(filters, k), BatchNorm(), GroupNorm(g)),
Sequential.predict and bnlab.save / bnlab.load."""

from __future__ import annotations

import numpy as np
import pytest

import bnlab
from bnlab.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GroupNorm,
    ReLU,
    Residual,
    Sequential,
)
from bnlab.optim import SGD

RNG = np.random.default_rng(4)


def lazy_net() -> Sequential:
    return Sequential(
        [Conv2D(4, 3, padding=1, seed=1), BatchNorm(), ReLU(),
         Residual([Conv2D(4, 3, padding=1, seed=2), GroupNorm(2)]), Flatten(), Dropout(0.5, seed=3),
         Dense(5, seed=4)]
    )  # fmt: skip


def sized_net() -> Sequential:
    return Sequential(
        [Conv2D(3, 4, 3, padding=1, seed=1), BatchNorm(4), ReLU(),
         Residual([Conv2D(4, 4, 3, padding=1, seed=2), GroupNorm(2, 4)]), Flatten(),
         Dropout(0.5, seed=3), Dense(6 * 6 * 4, 5, seed=4)]
    )  # fmt: skip


def test_build_infers_every_input_size_and_equals_the_sized_net():
    lazy, sized = lazy_net(), sized_net()
    with pytest.raises(ValueError, match="call model.build"):
        SGD.from_model(lazy, lr=0.1)  # no parameters yet: an optimizer would miss them
    lazy.build((1, 6, 6, 3))
    assert {k: v.shape for k, v in lazy.params.items()} == {
        k: v.shape for k, v in sized.params.items()
    }
    assert lazy.get_config() == sized.get_config()  # the built config has every size
    x = RNG.normal(size=(3, 6, 6, 3)).astype(np.float32)
    assert lazy.forward(x).tobytes() == sized.forward(x).tobytes()


def test_the_first_forward_builds_and_standalone_layers_are_lazy_too():
    model = lazy_net()
    x = RNG.normal(size=(2, 6, 6, 3)).astype(np.float32)
    assert model.forward(x).shape == (2, 5)
    assert model.params["6.W"].shape == (144, 5)
    dense = Dense(7)
    assert dense.forward(np.ones((2, 3), np.float32)).shape == (2, 7)
    assert dense.in_features == 3 and dense.describe() == "Dense(3->7)"
    bn = BatchNorm(axis=1)
    bn.forward(RNG.normal(size=(4, 3, 5)).astype(np.float32))
    assert bn.num_features == 3 and bn.running_mean.shape == (3,)


def test_a_shape_error_is_raised_before_any_layer_is_built():
    model = Sequential([Dense(4), Dense(3, 2)])
    with pytest.raises(ValueError, match=r"Dense\(3->2\) at index 1 expected input \(N, 3\)"):
        model.build((1, 5))
    assert model.layers[0].params == {} and model.layers[0].in_features is None
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        Dense(0)
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        BatchNorm(0)


def test_predict_batches_in_eval_mode_and_restores_the_mode():
    model = sized_net()
    model.forward(RNG.normal(size=(8, 6, 6, 3)).astype(np.float32))  # move the statistics
    model.layers[1].train()  # mixed modes are restored as they were
    x = RNG.normal(size=(7, 6, 6, 3)).astype(np.float32)
    modes = [m.training for m in model.modules()]
    got = model.predict(x, batch_size=3)
    assert [m.training for m in model.modules()] == modes
    model.eval()
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(x, batch_size=0)


def test_save_and_load_a_lazily_built_model(tmp_path):
    model = lazy_net()
    x = RNG.normal(size=(4, 6, 6, 3)).astype(np.float32)
    model.forward(x)
    bnlab.save(model, tmp_path / "m.npz")
    back = bnlab.load(tmp_path / "m.npz")
    assert back.predict(x).tobytes() == model.predict(x).tobytes()


@pytest.mark.parametrize("bad", ["abc", 3.0, None])
def test_predict_refuses_what_is_not_a_batch_of_numbers(bad):
    m = Sequential([Dense(3)])
    with pytest.raises(ValueError, match="x must be an array of examples"):
        m.predict(bad)


@pytest.mark.parametrize("bad", [None, "1,4", (1, 4.0), (True, 4)])
def test_build_refuses_a_shape_that_is_not_a_tuple_of_ints(bad):
    m = Sequential([Dense(3)])
    with pytest.raises(ValueError, match="input_shape must be a tuple of ints"):
        m.build(bad)


def test_predict_takes_a_numpy_integer_batch_size():
    m = Sequential([Dense(3, seed=0)])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x, batch_size=np.int64(2)), m.predict(x, batch_size=2))
