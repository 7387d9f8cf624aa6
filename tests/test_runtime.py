"""bnlab.runtime: the one thread policy every kernel consults."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bnlab import runtime
from bnlab.kernels import _numba
from bnlab.kernels.im2col import col2im, im2col
from bnlab.kernels.pooling import max_pool_backward, max_pool_forward


def test_import_runtime_loads_neither_numpy_nor_numba() -> None:
    code = "import sys, bnlab.runtime; print('numpy' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_threading_layer_is_configured_by_the_kernels() -> None:
    assert _numba.THREADING_LAYER == runtime.THREADING_LAYER
    assert runtime.THREADING_LAYER in {"omp", "tbb", "workqueue", "default", "safe", "threadsafe"}


def test_images_get_image_threads_dense_data_gets_numba_threads() -> None:
    n = runtime.get_num_threads()
    assert runtime.kernel_thread_count(2) == n
    assert runtime.kernel_thread_count(4) == min(n, runtime.image_threads())
    small, large = runtime.LARGE_IMAGE - 1, runtime.LARGE_IMAGE
    old = runtime.set_image_threads(1)
    try:
        assert runtime.kernel_thread_count(4, small) == 1
        assert runtime.kernel_thread_count(4, large) == n  # a large image: Numba's threads
        with runtime.kernel_threads(1):
            assert runtime.kernel_thread_count(4, large) == 1  # the override still wins
    finally:
        runtime.set_image_threads(old)


def test_set_image_threads_returns_old_and_applies() -> None:
    old = runtime.set_image_threads(1)
    try:
        assert runtime.kernel_thread_count(4) == 1
        assert runtime.set_image_threads(2) == 1
        assert runtime.kernel_thread_count(4) == min(2, runtime.get_num_threads())
    finally:
        runtime.set_image_threads(old)


def test_kernel_threads_overrides_the_rank_rule_and_restores() -> None:
    before = runtime.get_num_threads()
    old = runtime.set_image_threads(1)
    try:
        with runtime.kernel_threads(2):
            assert runtime.kernel_thread_count(4) == min(2, before)
            with runtime.kernel_threads(1):
                assert runtime.kernel_thread_count(2) == 1
            assert runtime.kernel_thread_count(4) == min(2, before)
        assert runtime.kernel_thread_count(4) == 1
    finally:
        runtime.set_image_threads(old)
    assert runtime.get_num_threads() == before


def test_kernel_threads_restores_when_the_block_raises() -> None:
    before = runtime.get_num_threads()
    with pytest.raises(KeyError), runtime.kernel_threads(1):
        raise KeyError("boom")
    assert runtime.get_num_threads() == before
    assert runtime.kernel_thread_count(2) == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_thread_counts_are_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        with runtime.kernel_threads(bad):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="positive int"):
        runtime.set_image_threads(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        with runtime.blas_threads(bad):  # type: ignore[arg-type]
            pass


def test_bad_env_image_threads_names_the_variable() -> None:
    code = "import bnlab.runtime"
    env = {"BNLAB_IMAGE_THREADS": "two", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "BNLAB_IMAGE_THREADS" in out.stderr


def test_run_on_threads_sets_and_restores() -> None:
    before = runtime.get_num_threads()
    assert runtime.run_on_threads(1, runtime.get_num_threads) == 1
    assert runtime.get_num_threads() == before


def test_numba_threads_returns_previous() -> None:
    before = runtime.get_num_threads()
    assert runtime.numba_threads(1) == before
    try:
        assert runtime.get_num_threads() == 1
    finally:
        runtime.numba_threads(before)


def test_blas_threads_sets_and_restores_openblas() -> None:
    found = runtime._openblas()
    if found is None:
        pytest.skip("NumPy's bundled OpenBLAS not found")
    _, get, _ = found
    before = get()
    with runtime.blas_threads(1):
        assert get() == 1
    assert get() == before


def test_njit_pair_twins_are_cached_under_distinct_names() -> None:
    serial, parallel = _numba.njit_pair(_double_body)
    assert serial.py_func.__qualname__ == "_double_body_serial"
    assert parallel.py_func.__qualname__ == "_double_body"
    x = np.arange(5.0)
    a, b = np.empty_like(x), np.empty_like(x)
    serial(x, a)
    parallel(x, b)
    assert np.array_equal(a, 2 * x) and np.array_equal(b, 2 * x)


def _double_body(x, out):  # type: ignore[no-untyped-def]
    for i in _numba.prange(x.size):
        out[i] = 2.0 * x[i]


@pytest.mark.parametrize("threads", [1, 2])
def test_image_kernels_give_the_same_bits_on_any_thread_count(threads: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 20, 20, 16)).astype(np.float32)  # above PARALLEL_MIN
    ref_cols = im2col(x, (3, 3), (1, 1), (1, 1, 1, 1))
    ref_dx = col2im(ref_cols, x.shape, (3, 3), (1, 1), (1, 1, 1, 1))
    ref_y, ref_arg = max_pool_forward(x, (2, 2), (2, 2))
    ref_dp = max_pool_backward(ref_y, ref_arg, x.shape)
    old = runtime.set_image_threads(threads)
    try:
        cols = im2col(x, (3, 3), (1, 1), (1, 1, 1, 1))
        dx = col2im(cols, x.shape, (3, 3), (1, 1), (1, 1, 1, 1))
        y, arg = max_pool_forward(x, (2, 2), (2, 2))
        dp = max_pool_backward(y, arg, x.shape)
    finally:
        runtime.set_image_threads(old)
    assert np.array_equal(cols, ref_cols) and np.array_equal(dx, ref_dx)
    assert np.array_equal(y, ref_y) and np.array_equal(arg, ref_arg)
    assert np.array_equal(dp, ref_dp)


_FAULTS = """
import resource, sys
import numpy as np
from bnlab import runtime
from bnlab.kernels import batch_norm_backward, batch_norm_forward
rng = np.random.default_rng(0)
x = rng.standard_normal((256, 1024), dtype=np.float32)
dy = rng.standard_normal((256, 1024), dtype=np.float32)
g, b = np.ones(1024, np.float32), np.zeros(1024, np.float32)
def step():
    y, cache = batch_norm_forward(x, g, b)
    batch_norm_backward(dy, cache)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(runtime.ALLOCATOR, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_fresh_outputs_reuse_freed_memory_whatever_ran_before() -> None:
    """A user's script that freed no large temporary: without fixed thresholds glibc gave each
    (256, 1024) forward + backward fresh pages (~480 page faults a step); with them, none."""
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    *allocator, faults = done.stdout.split()
    if "glibc" not in " ".join(allocator):
        pytest.skip("not glibc")
    assert int(faults) < 50, done.stdout  # 50 steps of 2 x 1 MiB outputs


def test_bnlab_malloc_system_leaves_glibc_alone_and_bad_values_are_refused() -> None:
    env = {**os.environ, "BNLAB_MALLOC": "system"}
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.split()[0] == "system", done.stderr
    env["BNLAB_MALLOC"] = "tuned"
    env["MALLOC_TRIM_THRESHOLD_"] = "1000000"  # the user's own glibc settings are left alone
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.split()[0] == "system", done.stderr
    env["BNLAB_MALLOC"] = "fast"
    bad = subprocess.run(
        [sys.executable, "-m", "bnlab", "run", "mnist-sigmoid", "--steps", "1", "--out", "x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "BNLAB_MALLOC='fast'" in bad.stderr and "'system'" in bad.stderr


def test_get_num_threads_fast_path_follows_set_and_threads() -> None:
    """The threading layer's own getter (after the launch) gives what Numba's public one does:
    after set_num_threads, in another thread, inside kernel_threads."""
    import threading

    import numba

    old = runtime.get_num_threads()
    try:
        for n in (1, old):
            runtime.set_num_threads(n)
            assert runtime.get_num_threads() == numba.get_num_threads() == n
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(runtime.get_num_threads()))
        t.start()
        t.join()
        assert seen == [numba.config.NUMBA_NUM_THREADS]
        with runtime.kernel_threads(1):
            assert runtime.kernel_thread_count(2) == 1
    finally:
        runtime.set_num_threads(old)
