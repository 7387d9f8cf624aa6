"""penalty_loss/add_penalty_grads find the penalties of nested containers, in forward order."""

from __future__ import annotations

import numpy as np

from bnlab.layers import Dense, Sequential, Sigmoid
from bnlab.layers.base import Layer
from bnlab.optim import L1, L2, add_penalty_grads, penalty_loss


def test_nested_containers_are_walked_like_modules():
    inner = Sequential([Dense(3, 4, seed=0, kernel_regularizer=L2(0.5)), Sigmoid()])
    model = Sequential([inner, Dense(4, 2, seed=1, kernel_regularizer=L1(0.25))])
    w0, w1 = inner[0].params["W"], model[1].params["W"]
    want = 0.5 * float(np.square(w0, dtype=np.float64).sum())
    want += 0.25 * float(np.abs(w1).sum(dtype=np.float64))
    assert penalty_loss(model) == want
    add_penalty_grads(model)
    np.testing.assert_array_equal(inner[0].grads["W"], (2 * 0.5 * w0).astype(np.float32))
    np.testing.assert_array_equal(model[1].grads["W"], (0.25 * np.sign(w1)).astype(np.float32))


class _OwnWalk(Layer):
    """A container that yields its layers from its own modules() (no sublayers())."""

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        self.inner = layers

    def modules(self):  # noqa: ANN201
        yield self
        yield from self.inner

    def backward(self, dy, *, need_input_grad=True):  # noqa: ANN001, ANN201
        return dy


def test_a_container_with_its_own_modules_is_walked_through_it():
    dense = Dense(3, 2, seed=0, kernel_regularizer=L2(1.0))
    assert penalty_loss(_OwnWalk([dense])) == float(
        np.square(dense.params["W"], dtype=np.float64).sum()
    )


def test_penalties_collected_once_give_the_same_loss_and_grads():
    """What a training step does: declared_penalties once, passed to both functions."""
    from bnlab.optim import declared_penalties

    inner = Sequential([Dense(3, 4, seed=0, kernel_regularizer=L2(0.5)), Sigmoid()])
    model = Sequential([inner, Dense(4, 2, seed=1, kernel_regularizer=L1(0.25)), Dense(2, 2)])
    pens = declared_penalties(model)
    assert [(layer, name) for layer, name, _ in pens] == [(inner[0], "W"), (model[1], "W")]
    assert penalty_loss(model, pens) == penalty_loss(model)
    add_penalty_grads(model, pens)
    once = {k: g.copy() for k, g in model.grads.items()}
    for g in model.grads.values():
        g[...] = 0
    add_penalty_grads(model)
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, once[k])
    assert declared_penalties(Sequential([Dense(2, 2), Sigmoid()])) == []
