"""Reusable timing harness: each side in a fresh process, sides alternating, medians, Markdown.

Why processes: PyTorch and Numba each bring an OpenMP runtime, and in one process their idle
threads spin against each other, so bnlab and torch are never timed in the same process.
Alternating (ours, torch, ours, torch, ...) spreads the noise of a shared machine over both.

The API, in the order a benchmark script uses it::

    from harness import Job, alternate, median, markdown_table, ratio

    jobs = {
        "ours":  [Job("dense", "bench_mine:ours_step", {"n": 256}, reps=50)],
        "torch": [Job("dense", "bench_mine:torch_step", {"n": 256}, reps=50)],
    }
    times = alternate(jobs, rounds=3)            # {("ours", "dense"): [s, s, ...], ...}
    t_ours, t_torch = median(times["ours", "dense"]), median(times["torch", "dense"])
    print(markdown_table(["case", "ours", "torch", "ratio"],
                         [["dense", fmt_time(t_ours), fmt_time(t_torch), ratio(t_ours, t_torch)]]))

* ``Job(name, factory, kwargs, reps, warmup=2, max_seconds=5.0)``: ``factory`` is
  ``"module:function"``; the module is imported from the ``benchmarks/`` folder in the worker,
  ``function(**kwargs)`` must return a zero-argument callable (one timed step). The worker calls
  it ``warmup`` times (the first call's time is kept as ``first_call_s``: JIT compilation or
  cache loading), then up to ``reps`` timed calls or ``max_seconds``, whichever comes first.
* ``run_jobs(jobs, env=None)``: one fresh process that runs the jobs in order; returns
  ``{name: {"times": [...], "first_call_s": s}}``. ``env`` adds environment variables (e.g. an
  empty ``NUMBA_CACHE_DIR`` to measure a cold JIT compile).
* ``alternate(groups, rounds, env=None)``: for each round, one fresh process per group, in
  turn; returns ``{(group, job name): all timed samples}``.
* ``median``, ``ratio`` (``"0.42x"``), ``fmt_time`` (``"1.23 ms"``), ``markdown_table``.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

__all__ = ["Job", "run_jobs", "alternate", "median", "ratio", "fmt_time", "markdown_table"]


@dataclass
class Job:
    """One timed step: ``factory`` ("module:function") builds it from ``kwargs`` in the worker."""

    name: str
    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    reps: int = 20
    warmup: int = 2
    max_seconds: float = 5.0


def run_jobs(jobs: list[Job], env: dict[str, str] | None = None, timeout: float = 900) -> dict:
    """Run ``jobs`` in one fresh Python process; return ``{name: {"times", "first_call_s"}}``."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = HERE + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "harness.py"), "--worker"],
        input=json.dumps([asdict(j) for j in jobs]),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def alternate(
    groups: dict[str, list[Job] | tuple[list[Job], dict[str, str] | None]],
    rounds: int = 3,
    env: dict[str, str] | None = None,
) -> dict[tuple[str, str], list[float]]:
    """Each round runs every group's jobs in a fresh process, groups in turn; pool the samples.

    A group is a list of jobs (run with ``env``) or ``(jobs, env of its own)``, e.g. the same
    jobs with :func:`before_env` to time an older source tree alongside."""
    out: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for group, spec in groups.items():
            jobs, group_env = spec if isinstance(spec, tuple) else (spec, env)
            for name, res in run_jobs(jobs, env=group_env).items():
                out.setdefault((group, name), []).extend(res["times"])
    return out


def before_env(src: str) -> dict[str, str]:
    """The environment that runs another bnlab ``src/`` (``--before SRC``) instead of ours."""
    return {"PYTHONPATH": os.path.abspath(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def training_step(model: Any, loss_fn: Any, opt: Any, x: Any, y: Any, path: str) -> Any:
    """One training step of ``model`` as a user writes it: ``path`` "seq" (``Sequential``'s
    forward/backward), "trainer" (``Trainer.step``) or "loop" (a hand-written loop over the
    layers, each used on its own: fresh output arrays)."""
    if path == "trainer":
        from bnlab.train import Trainer

        return Trainer(model, loss_fn, opt, [(x, y)]).step
    layers = list(model.layers)
    if path == "loop":
        for layer in layers:
            layer.reuse_output = False

    def seq_step() -> None:
        _, dlogits = loss_fn(model.forward(x), y)
        model.backward(dlogits, need_input_grad=False)
        opt.step()

    def loop_step() -> None:
        h = x
        for layer in layers:
            h = layer.forward(h)
        _, d = loss_fn(h, y)
        for layer in reversed(layers[1:]):
            d = layer.backward(d)
        layers[0].backward(d, need_input_grad=False)
        opt.step()

    return loop_step if path == "loop" else seq_step


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x"


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _worker() -> None:
    """Child side: read jobs (JSON) on stdin, print results (JSON) as the last stdout line."""
    results = {}
    for spec in json.loads(sys.stdin.read()):
        module, func = spec["factory"].split(":")
        t0 = time.perf_counter()
        step = getattr(importlib.import_module(module), func)(**spec["kwargs"])
        t1 = time.perf_counter()
        step()
        first = time.perf_counter() - t1
        for _ in range(spec["warmup"] - 1):
            step()
        times: list[float] = []
        deadline = time.perf_counter() + spec["max_seconds"]
        while len(times) < spec["reps"] and (len(times) < 3 or time.perf_counter() < deadline):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        results[spec["name"]] = {"times": times, "first_call_s": first, "setup_s": t1 - t0}
    print(json.dumps(results))


def provenance_line(world_size: int = 1) -> str:
    """What produced a benchmark's numbers, for the last line of its output: bnlab's commit,
    the versions, BLAS and Numba with their threads, the CPU (:func:`bnlab.provenance.summary`),
    the thread variables set in the environment, and PyTorch's version (the other side)."""
    from importlib import metadata

    from bnlab import provenance

    p = provenance.collect(world_size=world_size)
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    env = ", ".join(f"{k}={v}" for k, v in p["thread_env"].items()) or "no thread variables set"
    return f"\nProduced by: {provenance.summary(p)}; PyTorch {torch}; {env}."


def print_provenance(world_size: int = 1) -> None:
    """Print :func:`provenance_line` last, unless this process is a benchmark's own child
    (``--child``/``--worker`` on its command line: its parent reads its output)."""
    if not {"--child", "--worker"} & set(sys.argv):
        print(provenance_line(world_size))


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker()
