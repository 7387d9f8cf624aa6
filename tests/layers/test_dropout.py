import numpy as np
import pytest
import torch

from bnlab.layers import Dropout, layer_from_config


def test_eval_is_identity_as_torch(rng):
    x = rng.standard_normal((4, 10)).astype(np.float32)
    layer = Dropout(0.5, seed=0).eval()
    t = torch.nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(layer.forward(x), t(torch.from_numpy(x)).numpy())
    np.testing.assert_array_equal(layer.backward(x), x)


def test_training_mask_is_inverted_and_seeded(rng):
    x = np.ones((200, 500), np.float32)
    a, b = Dropout(0.25, seed=3), Dropout(0.25, seed=3)
    ya, yb = a.forward(x), b.forward(x)
    np.testing.assert_array_equal(ya, yb)
    assert set(np.unique(ya)) == {0.0, np.float32(1 / 0.75)}
    assert abs((ya == 0).mean() - 0.25) < 0.01  # 100k Bernoulli draws: sd 0.0014
    assert abs(ya.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(a.backward(dy), dy * ya)  # mask is 0 or 1 / (1 - rate)
    assert not np.array_equal(a.forward(x), ya)  # a fresh mask every step


def test_gradient_finite_differences(rng, gradcheck):
    layer = Dropout(0.4, seed=1)
    layer.astype(np.float64)
    x = rng.standard_normal((5, 6))
    # the mask must stay fixed across the perturbed evaluations: freeze the generator state
    state = layer.rng.bit_generator.state

    class Frozen(Dropout):
        def forward(self, x):  # noqa: ANN001, ANN202
            layer.rng.bit_generator.state = state
            return layer.forward(x)

        def backward(self, dy, *, need_input_grad=True):  # noqa: ANN001, ANN202
            return layer.backward(dy)

    gradcheck(Frozen(0.4), x, rng)


def test_bad_rate_and_config():
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="rate"):
            Dropout(rate)
    layer = Dropout(0.3, seed=5, name="d")
    clone = layer_from_config("Dropout", layer.get_config())
    np.testing.assert_array_equal(clone.forward(np.ones((3, 4))), layer.forward(np.ones((3, 4))))


def test_generators_declares_the_mask_stream_for_checkpoints():
    """Issue 15: the checkpoint saves what generators() declares; restoring that state
    replays the same masks."""
    layer = Dropout(0.5, seed=3)
    assert layer.generators() == {"rng": layer.rng}
    x = np.ones((4, 6), np.float32)
    layer.forward(x)
    state = layer.generators()["rng"].bit_generator.state
    expected = layer.forward(x).copy()
    other = Dropout(0.5, seed=99)
    other.generators()["rng"].bit_generator.state = state
    np.testing.assert_array_equal(other.forward(x), expected)
