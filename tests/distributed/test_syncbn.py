"""SyncBatchNorm/SyncBatchRenorm in one process: N ranks as threads over an in-process
communicator, against one process on the whole batch; errors on every rank together;
one collective per pass; convert_sync_batchnorm and the config round trip."""

from __future__ import annotations

import importlib.util
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab.comm import Communicator, SelfComm
from bnlab.layers import (
    BatchNorm,
    BatchRenorm,
    Dense,
    Sequential,
    SyncBatchNorm,
    SyncBatchRenorm,
    convert_sync_batchnorm,
    layer_from_config,
)

_CASES = Path(__file__).with_name("syncbn_cases.py")  # shared with the MPI worker script
_spec = importlib.util.spec_from_file_location("syncbn_cases", _CASES)
assert _spec is not None and _spec.loader is not None
sc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sc)


class ThreadWorld:
    """Shared state of N thread 'ranks'; counts the collectives each rank calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=20)
        self.slots: list[Any] = [None] * size
        self.calls: dict[str, int] = {"allgather": 0, "allreduce": 0}
        self.lock = threading.Lock()


class ThreadComm(Communicator):
    """An in-process communicator: allgather/allreduce through a barrier, rank order sums."""

    def __init__(self, world: ThreadWorld, rank: int) -> None:
        self.world, self.rank, self.size = world, rank, world.size

    def _exchange(self, value: Any) -> list[Any]:
        self.world.slots[self.rank] = value
        self.world.barrier.wait()
        values = list(self.world.slots)
        self.world.barrier.wait()
        return values

    def _count(self, name: str) -> None:
        if self.rank == 0:
            with self.world.lock:
                self.world.calls[name] += 1

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        self._count("allgather")
        for r, v in enumerate(self._exchange(send.copy())):
            recv[r] = v

    def allreduce(self, buf: np.ndarray) -> None:
        self._count("allreduce")
        values = self._exchange(buf.copy())
        total = values[0].copy()
        for v in values[1:]:
            total += v
        buf[...] = total

    def allgather_object(self, obj: Any) -> list[Any]:
        return self._exchange(obj)


def run_ranks(size: int, fn: Any) -> tuple[list[Any], ThreadWorld]:
    """Run ``fn(comm)`` on ``size`` thread ranks; return each rank's result or exception."""
    world = ThreadWorld(size)
    results: list[Any] = [None] * size

    def target(rank: int) -> None:
        try:
            results[rank] = fn(ThreadComm(world, rank))
        except Exception as exc:  # noqa: BLE001 - returned to the test
            results[rank] = exc

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, world


@pytest.mark.parametrize("size", [2, 4])
def test_thread_ranks_equal_one_process(size):
    for case in sc.cases_for(size):
        per_rank, _ = run_ranks(size, lambda comm, case=case: sc.rank_results(case, comm))
        report = sc.compare(case, per_rank)
        assert report.pop("buffers_identical"), case["name"]
        for quantity, (err, tol) in report.items():
            assert err <= tol, f"{case['name']} {quantity}: {err:.3g} > {tol:g}"


def test_one_sum_of_squares_allreduce_would_fail_the_tolerance():
    """What the issue forbids: (n, sum x, sum x^2) merged; the 1e-9 bound catches it."""
    rng = np.random.default_rng(5)
    x = 1e6 + rng.normal(size=(16, 4))
    shards = [x[:3], x[3:9], x[9:]]
    n = sum(len(s) for s in shards)
    s1 = sum(s.sum(axis=0) for s in shards)
    s2 = sum((s * s).sum(axis=0) for s in shards)
    naive = s2 / n - (s1 / n) ** 2
    assert sc.rel_err(naive, x.var(axis=0)) > 1e-9
    per_rank, _ = run_ranks(3, lambda comm: _moments_of(comm, shards[comm.rank]))
    assert sc.rel_err(per_rank[0][1], x.var(axis=0)) < 1e-9


def _moments_of(comm: Communicator, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    layer = SyncBatchNorm(4, comm=comm).astype(np.float64)
    layer.forward(xs)
    assert layer._cache is not None
    return layer._cache.mean[0], layer._cache.var[0]


@pytest.mark.parametrize("cls", [SyncBatchNorm, SyncBatchRenorm])
def test_world_of_one_gives_the_plain_layers_bits(cls):
    plain_cls = BatchNorm if cls is SyncBatchNorm else BatchRenorm
    rng = np.random.default_rng(3)
    for vbs in (None, 4):
        a = cls(3, comm=SelfComm(), virtual_batch_size=vbs, momentum=0.2)
        b = plain_cls(3, virtual_batch_size=vbs, momentum=0.2)
        for _ in range(3):
            x = (rng.normal(size=(8, 2, 3)) * 3 + 1).astype(np.float32)
            dy = rng.normal(size=x.shape).astype(np.float32)
            assert a.forward(x).tobytes() == b.forward(x).tobytes()
            assert a.backward(dy).tobytes() == b.backward(dy).tobytes()
            for store in ("params", "grads", "buffers"):
                for k, v in getattr(b, store).items():
                    assert getattr(a, store)[k].tobytes() == v.tobytes(), (store, k)


def _state(layer: Any) -> dict[str, bytes]:
    return {f"{s}:{k}": v.tobytes() for s in ("params", "grads", "buffers")
            for k, v in getattr(layer, s).items()}  # fmt: skip


@pytest.mark.parametrize("cls", [SyncBatchNorm, SyncBatchRenorm])
def test_global_count_below_two_raises_on_every_rank(cls):
    def step(comm: Communicator) -> Any:
        layer = cls(3, comm=comm)
        before = _state(layer)
        rows = [1, 0][comm.rank]  # one value per channel in the global batch
        with pytest.raises(ValueError, match=r"rank \d of 2.*more than 1 value per channel"):
            layer.forward(np.ones((rows, 3), np.float32))
        return _state(layer) == before

    results, _ = run_ranks(2, step)
    assert results == [True, True]


def test_empty_global_batch_changes_nothing_on_every_rank():
    def step(comm: Communicator) -> Any:
        layer = SyncBatchNorm(3, comm=comm)
        before = _state(layer)
        y = layer.forward(np.ones((0, 3), np.float32))
        dx = layer.backward(np.ones((0, 3), np.float32))
        return y.shape, dx.shape, _state(layer) == before

    results, world = run_ranks(2, step)
    assert results == [((0, 3), (0, 3), True)] * 2
    assert world.calls == {"allgather": 1, "allreduce": 0}


@pytest.mark.parametrize("cls", [SyncBatchNorm, SyncBatchRenorm])
@pytest.mark.parametrize("where", ["x", "dy"])
def test_nan_on_one_rank_raises_on_every_rank_and_changes_nothing(cls, where):
    def step(comm: Communicator) -> Any:
        rng = np.random.default_rng(comm.rank)
        layer = cls(3, comm=comm)
        x = rng.normal(size=(4, 3)).astype(np.float32)
        layer.forward(x)
        layer.backward(np.ones_like(x))
        before = _state(layer)
        x2 = rng.normal(size=(4, 3)).astype(np.float32)
        dy = np.ones_like(x2)
        (x2 if where == "x" else dy)[1, 2] = np.nan if comm.rank == 1 else 0.0
        with pytest.raises(FloatingPointError, match="rank"):
            layer.forward(x2)
            layer.backward(dy)
        return _state(layer) == before if where == "x" else _grads_equal(layer, before)

    results, _ = run_ranks(2, step)
    assert results == [True, True]


def _grads_equal(layer: Any, before: dict[str, bytes]) -> bool:
    now = _state(layer)
    return all(now[k] == v for k, v in before.items() if k.startswith("grads"))


def test_one_collective_per_pass_and_reused_buffers():
    def step(comm: Communicator) -> Any:
        layer = SyncBatchNorm(5, comm=comm)
        ids = []
        for _ in range(3):
            x = np.random.default_rng(comm.rank).normal(size=(6, 5)).astype(np.float32)
            layer.backward(np.ones_like(layer.forward(x)))
            ids.append(sorted(id(b) for b in layer._sync._bufs.values()))
        layer.eval()
        layer.backward(np.ones_like(layer.forward(x)))  # running statistics: no collective
        return ids[0] == ids[1] == ids[2]

    results, world = run_ranks(2, step)
    assert results == [True, True]
    assert world.calls == {"allgather": 3, "allreduce": 3}
    results, world = run_ranks(2, lambda c: _ghost_step(c))
    assert world.calls == {"allgather": 2, "allreduce": 1}  # + the local sizes, ghost only


def _ghost_step(comm: Communicator) -> None:
    layer = SyncBatchNorm(2, comm=comm, virtual_batch_size=2)
    x = np.random.default_rng(comm.rank).normal(size=(3, 2))
    layer.backward(layer.forward(x))


def test_convert_sync_batchnorm_shares_state_and_keeps_config():
    bn, brn = BatchNorm(4, momentum=0.2, name="bn"), BatchRenorm(4, rmax=2.0, name="brn")
    inner = Sequential([Dense(4, 4), brn])
    model = Sequential([Dense(3, 4), bn, inner])
    bn.eval()
    comm = SelfComm()
    assert convert_sync_batchnorm(model, comm=comm) is model
    new_bn, new_brn = model.layers[1], inner.layers[1]
    assert type(new_bn) is SyncBatchNorm and type(new_brn) is SyncBatchRenorm
    assert isinstance(new_bn, BatchNorm) and isinstance(new_brn, BatchRenorm)
    assert new_bn.get_config() == bn.get_config() and new_brn.get_config() == brn.get_config()
    assert new_bn.params["gamma"] is bn.params["gamma"]
    assert new_brn.buffers["running_var"] is brn.buffers["running_var"]
    assert new_bn.training is False and new_brn.training is True
    assert new_bn.comm is comm and type(model.layers[0]) is Dense
    assert type(convert_sync_batchnorm(BatchNorm(2))) is SyncBatchNorm
    assert convert_sync_batchnorm(new_bn) is new_bn


@pytest.mark.parametrize("cls", [SyncBatchNorm, SyncBatchRenorm])
def test_config_round_trips_without_the_communicator(cls):
    layer = cls(6, comm=SelfComm(), virtual_batch_size=4, name="s")
    config = layer.get_config()
    assert "comm" not in config and config["virtual_batch_size"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = layer_from_config(cls.__name__, config)
    assert type(rebuilt) is cls and rebuilt.get_config() == config


def test_sync_renorm_ghost_needs_a_divisible_global_batch():
    def step(comm: Communicator) -> Any:
        layer = SyncBatchRenorm(2, comm=comm, virtual_batch_size=4)
        with pytest.raises(ValueError, match="must divide the batch size.*global.*6"):
            layer.forward(np.ones((3, 2)))
        return True

    results, _ = run_ranks(2, step)
    assert results == [True, True]


def test_deepcopy_shares_the_communicator_and_copies_the_state():
    import copy

    comm = SelfComm()
    layer = SyncBatchRenorm(3, comm=comm)
    layer.forward(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    twin = copy.deepcopy(layer)
    assert twin.comm is comm and type(twin) is SyncBatchRenorm
    assert twin.buffers["running_mean"] is not layer.buffers["running_mean"]
    np.testing.assert_array_equal(twin.running_mean, layer.running_mean)


@pytest.mark.parametrize("cls", [SyncBatchNorm, SyncBatchRenorm])
def test_float32_shards_match_one_process_to_float32_precision(cls):
    plain_cls = BatchNorm if cls is SyncBatchNorm else BatchRenorm
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(12, 3, 3, 5)) * 4 + 50).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    split = [0, 5, 12]

    def step(comm: Communicator) -> Any:
        layer = cls(5, comm=comm)
        part = slice(split[comm.rank], split[comm.rank + 1])
        y = layer.forward(x[part])
        return y, layer.backward(dy[part]), layer.grads["gamma"].copy(), layer.running_var

    results, _ = run_ranks(2, step)
    ref = plain_cls(5)
    y, dx = ref.forward(x), ref.backward(dy)
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), y, atol=2e-5)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), dx, atol=2e-5)
    np.testing.assert_allclose(results[0][2] + results[1][2], ref.grads["gamma"], rtol=1e-5)
    np.testing.assert_allclose(results[0][3], ref.running_var, rtol=1e-6)
