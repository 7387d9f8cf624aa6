import json

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    layer_from_config,
)


def mlp(seed: int = 0) -> Sequential:
    return Sequential(
        [
            Flatten(),
            Dense(16, 8, seed=seed),
            Sigmoid(),
            Dense(8, 8, seed=seed + 1),
            Sigmoid(),
            Dense(8, 3, seed=seed + 2),
        ]
    )


def cifar10_cnn() -> Sequential:
    """Keras' cifar10_cnn example (dropout in eval is the identity, so it is left in)."""
    return Sequential([
        Conv2D(3, 32, 3, padding="same", seed=1), ReLU(), Conv2D(32, 32, 3, seed=2), ReLU(),
        MaxPool2D(2), Dropout(0.25, seed=0),
        Conv2D(32, 64, 3, padding="same", seed=3), ReLU(), Conv2D(64, 64, 3, seed=4), ReLU(),
        MaxPool2D(2), Dropout(0.25, seed=1),
        Flatten(), Dense(2304, 512, seed=5), ReLU(), Dropout(0.5, seed=2), Dense(512, 10, seed=6),
    ])  # fmt: skip


def torch_twin(model: Sequential) -> nn.Sequential:
    """The same network in torch (NCHW), with our weights; Flatten goes through NHWC."""

    class FlattenNHWC(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)

    mods: list[nn.Module] = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            pad = 1 if layer.padding == "same" else 0
            m = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=pad).double()
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["W"].transpose(3, 2, 0, 1).copy()))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
        else:
            m = {ReLU: nn.ReLU(), MaxPool2D: nn.MaxPool2d(2), Dropout: nn.Dropout(0.5),
                 Flatten: FlattenNHWC(), Sigmoid: nn.Sigmoid()}[type(layer)]  # fmt: skip
        mods.append(m)
    return nn.Sequential(*mods).eval()


def test_cifar10_cnn_matches_torch_at_its_shapes(rng):
    model = cifar10_cnn().astype(np.float64).eval()
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][...] = 0.1 * rng.standard_normal(layer.params["b"].shape)
    twin = torch_twin(model)
    x = rng.random((4, 32, 32, 3))
    dy = rng.standard_normal((4, 10))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    yt = twin(xt)
    yt.backward(torch.from_numpy(dy))
    y = model.forward(x)
    dx = model.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-9, atol=1e-12)
    for i, (layer, m) in enumerate(zip(model.layers, twin, strict=True)):
        if isinstance(layer, Conv2D):
            ref_W = m.weight.grad.numpy().transpose(2, 3, 1, 0)
        elif isinstance(layer, Dense):
            ref_W = m.weight.grad.numpy().T
        else:
            continue
        np.testing.assert_allclose(layer.grads["W"], ref_W, rtol=1e-9, atol=1e-10, err_msg=str(i))
        np.testing.assert_allclose(layer.grads["b"], m.bias.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_flat_dicts_share_the_layers_arrays():
    model = mlp()
    assert set(model.params) == {"1.W", "1.b", "3.W", "3.b", "5.W", "5.b"}
    assert model.params["3.W"] is model.layers[3].params["W"]
    assert model.grads["5.b"] is model.layers[5].grads["b"]
    model.params["1.W"] += 1.0  # an optimizer's in-place update reaches the layer
    np.testing.assert_array_equal(model.layers[1].params["W"], model.params["1.W"])
    with pytest.raises(AttributeError, match="view"):
        model.params = {}
    assert model.num_params() == 16 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3


def test_gradients_finite_differences_through_the_stack(rng, gradcheck):
    gradcheck(mlp(), rng.standard_normal((5, 4, 4, 1)), rng, k=10)


def test_returned_arrays_belong_to_the_caller(rng):
    model = mlp()
    x1, x2 = rng.standard_normal((2, 5, 16)).astype(np.float32)
    y1 = model.forward(x1)
    keep = y1.copy()
    model.forward(x2)
    np.testing.assert_array_equal(y1, keep)


def test_skip_input_grad_matches_full_backward(rng):
    model = mlp()
    x = rng.standard_normal((5, 16)).astype(np.float32)
    dy = rng.standard_normal((5, 3)).astype(np.float32)
    model.forward(x)
    model.backward(dy)
    full = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    model.forward(x)
    assert model.backward(dy, need_input_grad=False) is None
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, full[k])


def test_shape_mismatch_names_both_layers_and_shapes():
    model = Sequential([Conv2D(1, 4, 3, padding="same"), Flatten(), Dense(784, 100), Sigmoid()])
    msg = r"Dense\(784->100\) at index 2 expected input \(N, 784\) but Flatten at index 1 produced \(N, 3136\)"  # noqa: E501
    with pytest.raises(ValueError, match=msg):
        model.forward(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match=msg):
        model.summary((28, 28, 1))
    with pytest.raises(
        ValueError, match=r"at index 0 expected input \(N, H, W, 1\) but the model input"
    ):
        model.forward(np.zeros((2, 28, 28, 3), np.float32))
    assert all(not g.any() for g in model.grads.values())


def test_summary_lists_shapes_and_counts():
    text = cifar10_cnn().summary((32, 32, 3))
    assert "Conv2D(32->32, 3x3)  (N, 30, 30, 32)  9,248" in text
    assert "Flatten              (N, 2304)" in text
    assert "Dense(2304->512)     (N, 512)         1,180,160" in text
    assert text.endswith("total parameters: 1,250,858")  # Keras reports 1,250,858 as well


def test_state_dict_round_trip_and_checks(rng):
    a, b = mlp(seed=0), mlp(seed=10)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    state = a.state_dict()
    assert state["1.W"] is not a.params["1.W"]  # a copy
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    before = b.params["1.W"].copy()
    bad = dict(state, **{"5.b": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"'5.b' has shape \(4,\), expected \(3,\)"):
        b.load_state_dict(bad)
    with pytest.raises(KeyError, match=r"missing keys \['1.W'\].*unexpected keys \['9.W'\]"):
        b.load_state_dict({**{k: v for k, v in state.items() if k != "1.W"}, "9.W": before})
    np.testing.assert_array_equal(b.params["1.W"], before)


def test_config_round_trip_through_json():
    model = cifar10_cnn()
    cfg = json.loads(json.dumps(model.get_config()))
    clone = Sequential.from_config(cfg)
    assert clone.get_config() == cfg
    for k, v in model.params.items():
        np.testing.assert_array_equal(clone.params[k], v)  # same seeds, same weights
    nested = layer_from_config("Sequential", {"layers": [cfg["layers"][0]]})
    assert isinstance(nested.layers[0], Conv2D)


def test_train_eval_astype_and_errors():
    model = mlp()
    model.eval()
    assert not any(layer.training for layer in model.layers)
    model.train()
    assert all(layer.training for layer in model.layers)
    model.astype(np.float64)
    assert all(p.dtype == np.float64 for p in model.params.values())
    assert model.forward(np.zeros((2, 16))).dtype == np.float64
    with pytest.raises(TypeError, match="index 1 must be a bnlab Layer"):
        Sequential([Flatten(), "dense"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential([])


def test_bn_conv_net_matches_torch_in_training_mode(rng):
    """Conv -> BN -> ReLU -> MaxPool -> Flatten -> Dense -> BN -> ReLU -> Dense, train mode."""
    from bnlab.layers import BatchNorm

    model = Sequential([
        Conv2D(3, 8, 3, padding="same", seed=1), BatchNorm(8), ReLU(), MaxPool2D(2), Flatten(),
        Dense(4 * 4 * 8, 16, seed=2), BatchNorm(16), ReLU(), Dense(16, 5, seed=3),
    ]).astype(np.float64)  # fmt: skip
    plain = [layer for layer in model.layers if not isinstance(layer, BatchNorm)]
    twin = torch_twin(Sequential(plain))
    mods = list(twin)
    mods.insert(1, nn.BatchNorm2d(8).double())
    mods.insert(6, nn.BatchNorm1d(16).double())
    twin = nn.Sequential(*mods).train()
    x = rng.random((6, 8, 8, 3))
    dy = rng.standard_normal((6, 5))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    yt = twin(xt)
    yt.backward(torch.from_numpy(dy))
    y = model.forward(x)
    dx = model.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        model.grads["0.W"], mods[0].weight.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(model.grads["6.gamma"], mods[6].weight.grad.numpy(), rtol=1e-8)
    np.testing.assert_allclose(
        model.buffers["1.running_var"], mods[1].running_var.numpy(), rtol=1e-10
    )
    assert "6.running_mean" in model.state_dict()


# -- kernel threads: Numba's pool stays out of BLAS's way inside a conv net's step -----------


class _ThreadProbe(ReLU):
    """A ReLU that records Numba's thread count when its forward and backward run."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        import numba

        self.seen.append(numba.get_num_threads())
        return super().forward(x)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray:
        import numba

        self.seen.append(numba.get_num_threads())
        return super().backward(dy)


def _conv_net(probe: ReLU, **kw: object) -> Sequential:
    return Sequential(
        [Conv2D(3, 4, 3, seed=0), probe, Flatten(), Dense(4 * 4 * 4, 2, seed=1)], **kw
    )


@pytest.mark.parametrize(
    ("kw", "expected"), [({}, 2), ({"kernel_threads": 1}, 1), ({"kernel_threads": None}, 2)]
)
def test_kernel_threads_inside_step_and_restored_after(kw: dict, expected: int) -> None:
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads to tell the settings apart")
    numba.set_num_threads(2)
    probe = _ThreadProbe()
    model = _conv_net(probe, **kw)
    x = np.random.default_rng(0).random((2, 6, 6, 3), dtype=np.float32)
    model.backward(model.forward(x))
    assert probe.seen == [expected, expected]
    assert numba.get_num_threads() == 2


def test_kernel_threads_must_be_a_positive_int_or_none() -> None:
    with pytest.raises(ValueError, match="kernel_threads must be a positive int or None"):
        Sequential([Flatten(), Dense(4, 3, seed=0)], kernel_threads="auto")  # type: ignore[arg-type]
    config = Sequential([Flatten(), Dense(4, 3, seed=0)]).get_config()
    assert Sequential.from_config(config).kernel_threads is None


def test_the_same_step_in_a_hand_written_loop_gives_the_same_bits() -> None:
    """The thread policy is the runtime's: Sequential adds nothing a plain loop lacks."""
    x = np.random.default_rng(2).random((3, 6, 6, 3), dtype=np.float32)
    seq = _conv_net(ReLU())
    loop = _conv_net(ReLU()).layers
    h = x
    for layer in loop:
        h = layer.forward(h)
    np.testing.assert_array_equal(seq.forward(x), h)
    dy = np.ones((3, 2), np.float32)
    g = dy
    for layer in reversed(loop):
        g = layer.backward(g)
    np.testing.assert_array_equal(seq.backward(dy), g)


def test_kernel_threads_do_not_change_results() -> None:
    x = np.random.default_rng(1).random((3, 6, 6, 3), dtype=np.float32)
    a, b = _conv_net(ReLU(), kernel_threads=1), _conv_net(ReLU(), kernel_threads=None)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    dy = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(a.backward(dy), b.backward(dy))


class _Boom(ReLU):
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def test_kernel_threads_restored_when_a_layer_raises() -> None:
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads to tell the settings apart")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    model = _conv_net(_Boom())
    with pytest.raises(RuntimeError, match="boom"):
        model.forward(np.ones((2, 6, 6, 3), np.float32))
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_kernel_threads_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="kernel_threads"):
        Sequential([ReLU()], kernel_threads=bad)  # type: ignore[arg-type]


def test_kernel_threads_survives_config_round_trip() -> None:
    model = Sequential([ReLU()], kernel_threads=None)
    assert Sequential.from_config(model.get_config()).kernel_threads is None


# -- a failed forward changes no state (issue 15) ------------------------------------------
def _bn_net() -> Sequential:
    from bnlab.layers import BatchNorm

    return Sequential(
        [
            Dense(4, 6, seed=0),
            BatchNorm(6),
            Dropout(0.3, seed=2),
            Sequential([Dense(6, 5, seed=1), BatchNorm(5)]),
            ReLU(),
        ]
    )


def _buffers(model: Sequential) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in model.state_dict().items()}


def test_a_later_bn_refusing_inf_leaves_earlier_bn_statistics_unchanged() -> None:
    model = _bn_net()
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    model.forward(x)  # one good step: the statistics are not the initial ones
    model.layers[3].layers[0].params["W"][...] = 3e38  # overflows to inf before the second BN
    before = _buffers(model)
    rng_before = model.layers[2].rng.bit_generator.state
    with pytest.raises(FloatingPointError), np.errstate(over="ignore"):
        model.forward(x)
    assert _buffers(model) == before
    assert model.layers[1].num_batches_tracked == 1
    assert model.layers[2].rng.bit_generator.state == rng_before


def test_an_interrupt_inside_forward_restores_every_buffer() -> None:
    model = _bn_net()
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    before = _buffers(model)
    inner_bn = model.layers[3].layers[1]

    def interrupted(arr):
        raise KeyboardInterrupt

    inner_bn.forward = interrupted
    with pytest.raises(KeyboardInterrupt):
        model.forward(x)
    assert _buffers(model) == before
    del inner_bn.forward
    model.forward(x)  # and the model still trains
    assert model.layers[1].num_batches_tracked == 1


def test_bad_state_in_a_later_layer_leaves_the_earlier_layers_unchanged() -> None:
    model = _bn_net()
    state = model.state_dict()
    good = _bn_net()
    good.layers[0].params["W"][...] = 7.0
    new = good.state_dict()
    new["3.1.running_var"] = np.array([1, 1, -1, 1, 1], np.float32)
    before = _buffers(model)
    with pytest.raises(ValueError, match=r"layer 3 .*'3\.1\.running_var' holds negative"):
        model.load_state_dict(new)
    assert _buffers(model) == before
    new["3.1.running_var"] = np.ones(5, np.complex64)
    with pytest.raises(ValueError, match=r"'3\.1\.running_var' has dtype complex64"):
        model.load_state_dict(new)
    assert _buffers(model) == before
    model.load_state_dict(state)
