"""Data parallelism (bnlab.train.DataParallel) in one process: sharding, the gradient sum,
loss scaling, the state check.

P ranks are simulated by threads (parallel_threadcomm.ThreadComm); a net without BatchNorm
trained on P shards must follow the one-process run on the whole batch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlab.comm import SelfComm
from bnlab.data import BatchIterator
from bnlab.layers import BatchNorm, Dense, Sequential, Tanh
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import L2, SGD, RMSprop
from bnlab.train import ConfigMismatchError, DataParallel, Trainer, shard_bounds, train_step


def _load_helper(name):
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


run_ranks = _load_helper("parallel_threadcomm").run_ranks
dyadic_run = _load_helper("parallel_exact").dyadic_run


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_shards_tile_the_batch_in_rank_order(size):
    for n in range(0, 23):
        bounds = [shard_bounds(n, r, size) for r in range(size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_bounds_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(10, 4, 4)


def _data(n=40, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, n)


def _mlp(bn=False, width=8, penalty=None):
    layers = [Dense(6, width, seed=1, kernel_regularizer=penalty)]
    if bn:
        layers.append(BatchNorm(width))
    layers += [Tanh(), Dense(width, 3, seed=2)]
    return Sequential(layers).astype(np.float64)


def _train(comm, steps=10, batch=10, bn=False, opt_cls=SGD, penalty=None):
    x, y = _data()
    model = _mlp(bn, penalty=penalty)
    opt = opt_cls.from_model(model, lr=0.05)
    dp = None if comm is None else DataParallel(comm, config={"batch": batch})
    t = Trainer(model, SoftmaxCrossEntropy(), opt, BatchIterator(x, y, batch, seed=3), parallel=dp)
    state = t.fit(steps)
    return {k: v.copy() for k, v in model.params.items()}, state.loss, opt


def test_world_of_one_is_bitwise_the_plain_trainer():
    ref, ref_loss, _ = _train(None, bn=True)
    got, loss, _ = _train(SelfComm(), bn=True)
    assert loss == ref_loss
    for k in ref:
        assert np.array_equal(ref[k], got[k]), k


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("opt_cls", [SGD, RMSprop])
def test_ranks_on_shards_follow_one_process(size, opt_cls):
    """Batch 10 over 3 ranks is [4, 3, 3]: unequal shards, so the loss scaling matters."""
    penalty = L2(1e-3)
    ref, ref_loss, ref_opt = _train(None, opt_cls=opt_cls, penalty=penalty)
    results = run_ranks(size, lambda c: _train(c, opt_cls=opt_cls, penalty=penalty))
    for params, loss, opt in results:
        assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
        assert opt.iterations == ref_opt.iterations
        for k in ref:
            np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("size", [2, 4])
def test_shards_give_the_bits_of_one_process_when_the_arithmetic_is_exact(size):
    """Sharding, the m/n scaling, the gradient sum and the loss reduction are the one-process
    maths exactly: with exact arithmetic (parallel_exact.py), P ranks and one process agree
    to the last bit, and the run does train (four different losses)."""
    ref = dyadic_run(None)
    assert len(set(ref["losses"])) == 4
    for got in run_ranks(size, dyadic_run):
        assert got == ref


def test_a_step_before_setup_is_refused_before_anything_changes():
    def fn(comm):
        x, y = _data(n=6)
        model = _mlp(bn=True)
        before = {k: v.copy() for k, v in model.state_dict().items()}
        try:
            train_step(
                model,
                SoftmaxCrossEntropy(),
                SGD.from_model(model, lr=0.1),
                x,
                y,
                DataParallel(comm),
            )
        except RuntimeError as e:
            after = model.state_dict()
            return str(e), all(np.array_equal(v, after[k]) for k, v in before.items())

    for msg, unchanged in run_ranks(2, fn):
        assert "call setup(model, optimizer) before training" in msg and unchanged


def test_gradients_are_summed_and_loss_rides_along():
    def fn(comm):
        model = _mlp()
        dp = DataParallel(comm)
        dp.setup(model, None)
        for g in model.grads.values():
            g[...] = comm.rank + 1.0
        total = dp.reduce(model, 10.0 * (comm.rank + 1), 2, 4)  # sum_r 10 (r + 1) 2 / 4
        return total, {k: g.copy() for k, g in model.grads.items()}, dp.message_bytes

    results = run_ranks(3, fn)
    n_params = sum(v.size for v in _mlp().params.values())
    for total, grads, nbytes in results:
        assert total == 30.0
        assert all(np.all(g == 6.0) for g in grads.values())
        assert nbytes == 8 * (n_params + 1)


def test_setup_broadcasts_rank0_weights_and_optimizer_state():
    def fn(comm):
        model = _mlp()
        opt = RMSprop.from_model(model, lr=0.01)
        for p in model.params.values():
            p += comm.rank  # ranks start from different weights
        opt.slots["square_avg"]["0.W"][...] = comm.rank
        opt.iterations = 5 * comm.rank
        dp = DataParallel(comm)
        dp.setup(model, opt)
        return model.params["0.W"].copy(), opt.slots["square_avg"]["0.W"].copy(), opt.iterations, dp

    (w0, s0, it0, dp0), *rest = run_ranks(3, fn)
    assert dp0.weights_differed
    for w, s, it, _ in rest:
        assert np.array_equal(w, w0) and np.array_equal(s, s0) and it == it0 == 0


@pytest.mark.parametrize(
    "what, match",
    [("width", "architecture"), ("config", "experiment config"), ("lr", "optimizer")],
)
def test_mismatch_between_ranks_raises_on_every_rank(what, match):
    def fn(comm):
        odd = comm.rank == 1
        model = _mlp(width=9 if what == "width" and odd else 8)
        before = model.params["0.W"].copy()
        opt = SGD.from_model(model, lr=0.2 if what == "lr" and odd else 0.1)
        cfg = {"lr": 0.1, "hidden": 8 + (what == "config" and odd)}
        try:
            DataParallel(comm, config=cfg).setup(model, opt)
        except ConfigMismatchError as e:
            return e, np.array_equal(before, model.params["0.W"])
        return None, None

    for err, unchanged in run_ranks(2, fn):
        assert isinstance(err, ConfigMismatchError)
        assert match in str(err) and "ranks [1]" in str(err)
        assert unchanged


def test_batch_smaller_than_world_is_an_error_on_every_rank():
    def fn(comm):
        x, y = _data(n=2)
        model = _mlp()
        dp = DataParallel(comm)
        dp.setup(model, None)
        try:
            train_step(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1), x, y, dp)
        except ValueError as e:
            return str(e)

    for msg in run_ranks(3, fn):
        assert "batch size >= 3" in msg


def test_nonfinite_global_loss_raises_on_every_rank_before_the_update():
    def fn(comm):
        x, y = _data(n=6)
        if comm.rank == 1:
            x = x.copy()
            x[3, 0] = np.nan  # only rank 1's shard is poisoned
        model = _mlp()
        before = model.params["0.W"].copy()
        dp = DataParallel(comm)
        dp.setup(model, None)
        try:
            train_step(model, SoftmaxCrossEntropy(), SGD.from_model(model, lr=0.1), x, y, dp)
        except FloatingPointError as e:
            return str(e), np.array_equal(before, model.params["0.W"])

    for msg, unchanged in run_ranks(2, fn):
        assert "global loss is nan at step 1" in msg and unchanged


def test_dropout_masks_differ_between_ranks_and_repeat_with_the_seed():
    from bnlab.layers import Dropout

    def fn(comm):
        model = Sequential([Dense(6, 8, seed=1), Dropout(0.5, seed=7)]).astype(np.float64)
        DataParallel(comm).setup(model, None)
        return model.layers[1].rng.random(4)

    first, again = run_ranks(2, fn), run_ranks(2, fn)
    assert not np.array_equal(first[0], first[1])
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_one_process_experiments_are_unchanged():
    from bnlab.train import for_experiment, guard_job, prepare_model

    model = _mlp(bn=True)
    assert for_experiment(model, {"bn_sync": "global"}) == (model, None)
    assert guard_job(lambda: 7) == 7  # no launcher: the command itself, status untouched
    with pytest.raises(ValueError, match="bn_sync must be one of"):
        prepare_model(model, SelfComm(), "sometimes")


def test_evaluate_shares_the_test_set_and_gives_rank0s_numbers():
    """Ranks whose running statistics differ (local BN) evaluate with rank 0's."""
    from bnlab.train import evaluate

    x, y = _data(n=23)
    ref_model = _mlp(bn=True)
    ref_model.layers[1].running_mean[...] = 0.3
    ref = evaluate(ref_model, x, y, 5, loss_fn=SoftmaxCrossEntropy())

    def fn(comm):
        model = _mlp(bn=True)
        model.layers[1].running_mean[...] = 0.3 if comm.rank == 0 else -1.0
        return DataParallel(comm).evaluate(model, x, y, 5, loss_fn=SoftmaxCrossEntropy())

    for got in run_ranks(3, fn):
        assert got["accuracy"] == ref["accuracy"]
        assert abs(got["loss"] - ref["loss"]) <= 1e-12 * ref["loss"]
