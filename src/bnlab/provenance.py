"""What produced a run: versions, commit, BLAS, threads, CPU, MPI world and batch split, times.

Ground floor: imports nothing of bnlab above ``comm`` and ``runtime``. Every run directory's
``config.json`` holds :func:`collect`'s dict under ``"provenance"`` (written by
:mod:`bnlab.experiments.rundir`), the report's header shows :func:`summary` of it, and a
resumed run (``bnlab run ... --resume``) names what :func:`differences` finds between the
recorded provenance and the current one. Same seed, same threads and the same entries here
give the same bits.

Nothing in here may fail a run: a fact that cannot be read (no git, no ``/proc/cpuinfo``, no
threadpoolctl) is recorded as None.

    >>> p = collect(batch_size=60)
    >>> p["batch"]["world_size"], p["batch"]["shard_sizes"]
    (1, [60])
    >>> differences(p, p)
    []
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["collect", "differences", "now", "shard_sizes", "summary"]

# vector extensions worth naming (x86 /proc/cpuinfo "flags", ARM "Features")
_VECTOR_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "amx_tile", "asimd", "sve", "sve2",
)  # fmt: skip
# environment variables that change thread counts or the threading layer
_THREAD_ENV = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER", "BNLAB_IMAGE_THREADS", "BNLAB_MALLOC",
    "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
)  # fmt: skip
# entries that differ between any two runs and say nothing about the environment
_VOLATILE = ("started", "ended", "earlier", "hostname")


def now() -> str:
    """The current UTC time, ISO 8601 to the second ("2026-12-07T11:34:05Z")."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _bnlab() -> dict[str, Any]:
    """Version, and the commit and dirty flag of the checkout bnlab is imported from (None
    when installed from a wheel, or without git)."""
    from bnlab import __version__

    root = Path(__file__).resolve().parents[2]  # src/bnlab/provenance.py -> the checkout
    commit = dirty = None
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if commit is None or status is None else bool(status)
    return {"version": __version__, "commit": commit, "dirty": dirty}


def _blas() -> dict[str, Any]:
    """NumPy's BLAS: name, version, threads (threadpoolctl if installed, else NumPy's build
    config and the bundled OpenBLAS's thread count via ctypes)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return _blas_from_numpy()
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return {
                "name": info.get("internal_api"),
                "version": info.get("version"),
                "threads": info.get("num_threads"),
                "architecture": info.get("architecture"),
            }
    return _blas_from_numpy()


def _blas_from_numpy() -> dict[str, Any]:
    import numpy as np

    from bnlab.runtime import _openblas

    deps: dict[str, Any] = {}
    try:
        deps = dict(np.show_config(mode="dicts")["Build Dependencies"]["blas"])
    except (TypeError, KeyError, AttributeError):  # NumPy < 1.26: no dict mode
        pass
    found = _openblas()
    return {
        "name": deps.get("name"),
        "version": deps.get("version"),
        "threads": None if found is None else found[1](),
        "architecture": None,
    }


def _numba() -> dict[str, Any]:
    """Numba's threading layer (the one in use, else the configured one) and thread count."""
    import numba

    layer: str
    try:
        layer = str(numba.threading_layer())
    except ValueError:  # no parallel kernel has run yet: the configured choice
        from bnlab.runtime import configure_threading_layer

        layer = configure_threading_layer()
    from bnlab.runtime import configure_allocator

    return {
        "threading_layer": str(layer),
        "threads": int(numba.get_num_threads()),
        "malloc": configure_allocator(),
    }


def _cpu() -> dict[str, Any]:
    """CPU model and vector extensions from /proc/cpuinfo (Linux), logical CPUs usable."""
    model, flags = platform.processor() or None, set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
        if key == "" and flags:  # the first processor's block is enough
            break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "machine": platform.machine(),
        "vector_extensions": [f for f in _VECTOR_FLAGS if f in flags],
        "logical_cpus": usable,
    }


def shard_sizes(batch_size: int, world_size: int) -> list[int]:
    """How a batch of ``batch_size`` is split over ``world_size`` ranks: contiguous shards,
    rank r gets ``q + (r < rem)`` with ``q, rem = divmod(batch_size, world_size)``."""
    q, rem = divmod(int(batch_size), int(world_size))
    return [q + (r < rem) for r in range(int(world_size))]


def _mpi(world_size: int) -> str | None:
    """The MPI library's version string (first line), when MPI is in use."""
    if world_size == 1 and "mpi4py.MPI" not in sys.modules:
        return None
    try:
        from mpi4py import MPI

        return str(MPI.Get_library_version()).strip().splitlines()[0]
    except (ImportError, IndexError):
        return None


def collect(*, batch_size: int | None = None, world_size: int | None = None) -> dict[str, Any]:
    """The provenance of a run started now: a JSON-able dict (see the module docstring).

    ``world_size`` defaults to :func:`bnlab.comm.world`'s size; with ``batch_size`` (the
    global batch) ``"batch"`` also holds each rank's shard size (:func:`shard_sizes`).
    """
    if world_size is None:
        from bnlab.comm import world

        world_size = world().size
    batch: dict[str, Any] = {"world_size": int(world_size)}
    if batch_size is not None:
        batch.update(batch_size=int(batch_size), shard_sizes=shard_sizes(batch_size, world_size))
    return {
        "bnlab": _bnlab(),
        "python": platform.python_version(),
        "packages": {d: _version(d) for d in ("numpy", "numba", "llvmlite")},
        "blas": _blas(),
        "numba": _numba(),
        "cpu": _cpu(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "mpi": _mpi(world_size),
        "batch": batch,
        "thread_env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "started": now(),
        "ended": None,
    }


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if not prefix and k in _VOLATILE:
            continue
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed from ``old`` to ``new`` (times and hostname ignored), one
    ``"key: old -> new"`` each, e.g. ``"packages.numpy: 2.3.1 -> 2.4.6"``; ``old`` None (a run
    recorded without provenance) gives ``["provenance: not recorded"]``."""
    if not isinstance(old, dict):
        return ["provenance: not recorded"]
    a, b = _flat(old), _flat(new)
    return [
        f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def summary(p: dict[str, Any]) -> str:
    """One line for a report's header: versions, BLAS, threads, CPU, world, times."""
    g = p.get
    bn, pk, blas, nb, cpu, batch = (
        g(k) or {} for k in ("bnlab", "packages", "blas", "numba", "cpu", "batch")
    )
    commit = bn.get("commit")
    rev = f" ({commit[:10]}{', uncommitted changes' if bn.get('dirty') else ''})" if commit else ""
    ext = ", ".join(cpu.get("vector_extensions") or []) or "none"
    shards = batch.get("shard_sizes")
    split = (
        f", batch {batch.get('batch_size')} split {shards}" if shards and len(shards) > 1 else ""
    )
    parts = [
        f"bnlab {bn.get('version')}{rev}",
        f"Python {g('python')}",
        f"NumPy {pk.get('numpy')}, Numba {pk.get('numba')}, llvmlite {pk.get('llvmlite')}",
        f"BLAS {blas.get('name')} {blas.get('version')} on {blas.get('threads')} thread(s)",
        f"Numba {nb.get('threading_layer')} layer on {nb.get('threads')} thread(s)",
        f"CPU {cpu.get('model')} ({ext})",
        f"{batch.get('world_size', 1)} process(es){split}" + (f", {g('mpi')}" if g("mpi") else ""),
        f"started {g('started')}" + (f", ended {g('ended')}" if g("ended") else ""),
    ]
    return "; ".join(parts)
