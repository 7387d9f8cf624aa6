"""End to end: the paper's MNIST network with BN trains to >= 95% in 3,000 steps of 60."""

import numpy as np

from bnlab.data import BatchIterator, load_mnist
from bnlab.initializers import normal
from bnlab.layers import BatchNorm, Dense, Sequential, Sigmoid
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import SGD


def _bn_mlp(seed: int) -> Sequential:
    layers: list = []
    sizes = [784, 100, 100, 100]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [Dense(n_in, n_out, use_bias=False, init=normal(0.1), seed=seed + i)]
        layers += [BatchNorm(n_out), Sigmoid()]
    return Sequential([*layers, Dense(100, 10, init=normal(0.1), seed=seed + 9)])


def test_sigmoid_bn_mlp_reaches_95_percent_within_3000_steps() -> None:
    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train = x_train.reshape(-1, 784).astype(np.float32) / 255
    x_test = x_test.reshape(-1, 784).astype(np.float32) / 255
    model = _bn_mlp(seed=0)
    loss_fn, opt = SoftmaxCrossEntropy(), SGD.from_model(model, lr=1.0)
    batches = BatchIterator(x_train, y_train, batch_size=60, seed=0).batches()
    losses = []
    for _ in range(3000):
        xb, yb = next(batches)
        loss, dlogits = loss_fn(model.forward(xb), yb)
        model.backward(dlogits)
        opt.step()
        losses.append(loss)
    model.eval()
    accuracy = float((model.forward(x_test).argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.95, accuracy
    print(f"test accuracy after 3000 steps: {accuracy:.4f}")
    assert np.mean(losses[-100:]) < 0.5 * np.mean(losses[:100])
