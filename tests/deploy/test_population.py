"""recompute_population_stats (Algorithm 2): against a direct NumPy computation over all batches."""

import copy

import numpy as np
import pytest

from bnlab.deploy import recompute_population_stats
from bnlab.layers import LAYER_REGISTRY, BatchNorm, BatchRenorm, Dense, Layer, ReLU, Sequential


@pytest.fixture(autouse=True)
def _registry_restored():
    """The classes some tests define register themselves in LAYER_REGISTRY: take them out."""
    saved = dict(LAYER_REGISTRY)
    yield
    LAYER_REGISTRY.clear()
    LAYER_REGISTRY.update(saved)


def _bn_numpy(z, gamma, beta, eps):
    mu, var = z.mean(axis=0), z.var(axis=0)
    return gamma * (z - mu) / np.sqrt(var + eps) + beta, mu, var


def _numpy_population(model, batches):
    """Algorithm 2 by hand for dense_net (float64): the inputs of both BN layers per batch."""
    d1, bn1, _, d2, bn2 = model.layers[:5]
    means = {0: [], 1: []}
    variances = {0: [], 1: []}
    for x in batches:
        z1 = x @ d1.params["W"] + d1.params["b"]
        h, mu, var = _bn_numpy(z1, bn1.params["gamma"], bn1.params["beta"], bn1.eps)
        means[0].append(mu)
        variances[0].append(var)
        z2 = np.maximum(h, 0) @ d2.params["W"]
        _, mu, var = _bn_numpy(z2, bn2.params["gamma"], bn2.params["beta"], bn2.eps)
        means[1].append(mu)
        variances[1].append(var)
    m = batches[0].shape[0]
    return [
        (np.mean(means[i], axis=0), m / (m - 1) * np.mean(variances[i], axis=0)) for i in (0, 1)
    ]


@pytest.fixture
def batches(rng):
    return [rng.normal(1.0, 2.0, size=(16, 6)) for _ in range(7)]


def test_dense_matches_numpy(nets, rng, batches):
    model = nets.dense_net(dtype=np.float64)
    nets.randomize_bn(model, rng)
    model.eval()
    # counts that are not len(batches) (randomize_bn presets 7, as many as there are batches):
    # a pass that left its own 7 updates in place would give [7, 7] or [10, 18]
    model.layers[1].buffers["num_batches_tracked"][...] = 3
    model.layers[4].buffers["num_batches_tracked"][...] = 11
    expected = _numpy_population(model, batches)
    summary = recompute_population_stats(model, batches)
    for bn, (mean, var) in zip([model.layers[1], model.layers[4]], expected, strict=True):
        np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(bn.running_var, var, rtol=1e-12, atol=1e-12)
    # the layers' own updates during the pass were undone (7 batches would have added 7)
    assert len(batches) == 7
    assert [int(model.layers[i].num_batches_tracked) for i in (1, 4)] == [3, 11]
    assert summary.num_batches == 7 and summary.num_examples == 7 * 16
    assert summary.layers == ["1", "4"]
    assert summary.values_per_channel["1"] == 7 * 16
    assert not model.training and not any(layer.training for layer in model.layers)


def test_not_double_updated_and_idempotent(nets, rng, batches):
    """Running it twice gives the same statistics: nothing of the old moving averages leaks in."""
    model = nets.dense_net(dtype=np.float64)
    nets.randomize_bn(model, rng)
    recompute_population_stats(model, batches)
    first = {k: v.copy() for k, v in model.state_dict().items()}
    nets.randomize_bn(model, np.random.default_rng(99))  # scrambles running stats (and biases)
    for key in ("1.gamma", "1.beta", "4.gamma", "4.beta", "0.b", "6.b"):
        model.params[key][...] = first[key]
    recompute_population_stats(model, batches)
    for key in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
        np.testing.assert_allclose(model.state_dict()[key], first[key], rtol=1e-12)


def test_float32_model_and_pairs(nets, rng, batches):
    """(x, y) pairs are accepted; a float32 model gets float32 buffers near the float64 truth."""
    model64 = nets.dense_net(dtype=np.float64)
    nets.randomize_bn(model64, rng)
    model32 = copy.deepcopy(model64).astype(np.float32)
    recompute_population_stats(model64, batches)
    pairs = [(x.astype(np.float32), np.zeros(len(x), np.int64)) for x in batches]
    recompute_population_stats(model32, iter(pairs))
    bn32, bn64 = model32.layers[1], model64.layers[1]
    assert bn32.running_mean.dtype == np.float32
    np.testing.assert_allclose(bn32.running_mean, bn64.running_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn32.running_var, bn64.running_var, rtol=1e-4)


def test_conv_net_per_channel(nets, rng):
    """Conv BN statistics are per channel over N*H*W values, m = N*H*W."""
    model = nets.conv_net(dtype=np.float64)
    nets.randomize_bn(model, rng)
    xs = [rng.normal(size=(4, 8, 8, 3)) for _ in range(3)]
    conv = model.layers[0]
    expected = [conv.forward(x).copy() for x in xs]  # the input of the first BN (a copy:
    # inside a Sequential a layer returns its reused output buffer)
    mean = np.mean([z.mean(axis=(0, 1, 2)) for z in expected], axis=0)
    m = 4 * 8 * 8
    var = m / (m - 1) * np.mean([z.var(axis=(0, 1, 2)) for z in expected], axis=0)
    summary = recompute_population_stats(model, xs)
    np.testing.assert_allclose(model.layers[1].running_mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.layers[1].running_var, var, rtol=1e-12)
    assert summary.values_per_channel["1"] == 3 * m
    assert summary.values_per_channel["9"] == 3 * 4


def test_modes_restored_exactly(nets, rng, batches):
    model = nets.dense_net(dtype=np.float64)
    model.train()
    model.layers[2].eval()
    recompute_population_stats(model, batches)
    assert model.training and model.layers[1].training and not model.layers[2].training
    assert "forward" not in vars(model.layers[1])  # the recording hook is gone


def test_track_running_stats_false_is_skipped(rng, batches):
    model = Sequential(
        [Dense(6, 4, seed=0), BatchNorm(4, track_running_stats=False, name="free"), ReLU()]
        + [Dense(4, 3, seed=1), BatchNorm(3, name="tracked")]
    ).astype(np.float64)
    summary = recompute_population_stats(model, batches)
    assert summary.skipped == ["1"] and summary.layers == ["4"]


def _assert_unchanged(model, before):
    after = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_errors_change_nothing(nets, rng, batches):
    model = nets.dense_net(dtype=np.float64)
    nets.randomize_bn(model, rng)
    model.eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="empty"):
        recompute_population_stats(model, [])
    _assert_unchanged(model, before)
    bad = [batches[0], batches[1][:1]]  # second batch: one example, m = 1
    with pytest.raises(ValueError, match="more than 1 value|m=1"):
        recompute_population_stats(model, bad)
    _assert_unchanged(model, before)
    assert not model.training and not model.layers[1].training
    assert "forward" not in vars(model.layers[1])
    with pytest.raises(ValueError, match="no BatchNorm"):
        recompute_population_stats(Sequential([Dense(6, 2)]), batches)


def test_shuffled_batches_mix_a_class_sorted_set_and_are_reproducible():
    from bnlab.deploy import shuffled_batches

    labels = np.repeat(np.arange(10), 100)  # stored sorted by class, as image folders are
    x = labels[:, None].astype(np.float64)
    batches = list(shuffled_batches(x, 32, limit=500, seed=3))
    assert [len(b) for b in batches] == [32] * 15  # 500 // 32 equal batches, the rest dropped
    drawn = np.concatenate(batches)[:, 0]
    assert len(np.unique(drawn)) == 10  # the first 500 rows would hold classes 0-4 only
    assert all(len(np.unique(b)) >= 5 for b in batches)
    np.testing.assert_array_equal(
        drawn, np.concatenate(list(shuffled_batches(x, 32, limit=500, seed=3)))[:, 0]
    )
    assert not np.array_equal(
        drawn, np.concatenate(list(shuffled_batches(x, 32, limit=500, seed=4)))[:, 0]
    )
    full = np.concatenate(list(shuffled_batches(x, 10)))[:, 0]
    np.testing.assert_array_equal(np.sort(full), labels)  # without limit: each row once


@pytest.mark.parametrize(("m", "limit", "match"), [(1, None, "batch_size must be >= 2"),
                                                   (32, 20, "fewer than one batch")])  # fmt: skip
def test_shuffled_batches_errors(m, limit, match):
    from bnlab.deploy import shuffled_batches

    with pytest.raises(ValueError, match=match):
        shuffled_batches(np.zeros((100, 2)), m, limit=limit)


def test_dropout_generators_and_buffers_are_kept_on_success_and_on_inf(nets, rng, batches):
    """Issue 15: the pass draws Dropout masks; the model's generators must not move, and a
    batch with Inf changes nothing."""
    model = nets.dense_net(dtype=np.float64, dropout=True)
    drop = model.layers[3]
    before_rng = drop.rng.bit_generator.state
    recompute_population_stats(model, batches)
    assert drop.rng.bit_generator.state == before_rng
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = [batches[0], np.full_like(batches[1], np.inf)]
    with pytest.raises(FloatingPointError), np.errstate(invalid="ignore"):
        recompute_population_stats(model, bad)
    _assert_unchanged(model, before)
    assert drop.rng.bit_generator.state == before_rng


def test_ghost_batches_and_renorm_use_each_virtual_batch(rng):
    """With virtual_batch_size k, Algorithm 2 averages over the k-row virtual batches (m = k)."""
    xs = [rng.normal(2.0, 3.0, size=(12, 4)) for _ in range(3)]
    for bn in (BatchNorm(4, virtual_batch_size=4), BatchRenorm(4, virtual_batch_size=4)):
        bn.astype(np.float64)
        summary = recompute_population_stats(Sequential([bn]), xs)
        chunks = [x[i : i + 4] for x in xs for i in (0, 4, 8)]
        mean = np.mean([c.mean(axis=0) for c in chunks], axis=0)
        var = 4 / 3 * np.mean([c.var(axis=0) for c in chunks], axis=0)
        np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
        assert summary.values_per_channel["0"] == 9 * 4


def test_a_user_layer_and_a_bn_subclass_take_part(rng):
    """BN layers are found by type (any BatchNormBase subclass), not by class name; a layer
    that merely calls itself BatchNorm is not one; nothing is patched on the instances."""

    class Shift(Layer):
        def forward(self, x):
            return x + 1.0

        def backward(self, dy, *, need_input_grad=True):
            return dy

    class MyNorm(BatchNorm):
        pass

    impostor = type("BatchNorm", (Shift,), {"eps": 1e-5})()
    bn = MyNorm(4)
    model = Sequential([Shift(), bn, impostor]).astype(np.float64)
    xs = [rng.normal(size=(8, 4)) for _ in range(2)]
    summary = recompute_population_stats(model, xs)
    assert summary.layers == ["1"]
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) + 1 for x in xs], 0))
    assert vars(bn).keys().isdisjoint({"forward", "backward"})


def test_a_bn_the_forward_pass_skips_is_an_error(rng, batches):
    class SkipSecond(Sequential):
        def forward(self, x):
            return self.layers[0].forward(x)

    model = SkipSecond([BatchNorm(6), BatchNorm(6, name="unused")]).astype(np.float64)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="'unused'.*never reached"):
        recompute_population_stats(model, batches)
    _assert_unchanged(model, before)
