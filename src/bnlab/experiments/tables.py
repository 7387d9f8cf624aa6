"""The README's results tables, rendered from run directories so that they cannot drift.

Each function takes the ``metrics.json`` dict(s) an experiment writes and returns the
README's table as Markdown; :func:`readme_tables` reads run directories and picks the table
by each run's ``config.json`` ``experiment``. ``benchmarks/readme_tables.py`` prints them.
Accuracies are in percent with two decimals, gaps in percentage points (pp); the better
number of a compared pair is bold, as in the README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.metrics import lrs_of, summarize
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.report import pct, pp
from bnlab.experiments.rundir import read_json

__all__ = [
    "cifar10_table",
    "mnist_sigmoid_table",
    "population_stats_table",
    "readme_tables",
    "renorm_table",
]


def _pct(v: Any, bold: bool = False) -> str:
    text = pct(v, missing="")
    return f"**{text}**" if bold and text else text


def _pp(v: Any) -> str:
    return pp(v, missing="")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _steps(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else f"{n:,}"


def mnist_sigmoid_table(metrics: dict[str, Any]) -> str:
    """lr | net | final test accuracy (min-max over seeds) | accuracy at 10% of the steps |
    first evaluated step at 95% (mean curve over seeds)."""
    rows, early, seeds = [], None, 1
    for lr in lrs_of(metrics):
        s = {net: summarize(metrics, lr, net) for net in NETS}
        best = max(
            NETS,
            key=lambda n: -math.inf if math.isnan(s[n]["final_mean"]) else s[n]["final_mean"],
        )
        for net, label in (("plain", "without BN"), ("bn", "with BN")):
            x = s[net]
            early, seeds = early or x["early_step"], max(seeds, x["n_seeds"])
            acc = _pct(x["final_mean"], bold=net == best)
            if x["n_seeds"] > 1:
                acc += f" ({100 * x['final_min']:.2f}-{100 * x['final_max']:.2f})"
            reach = f"{x['steps_to_95']:,}" if x["steps_to_95"] else "not reached"
            rows.append([f"{lr:g}", label, acc, _pct(x["early_acc"]), reach])
    done = int(metrics.get("steps_done") or 0)
    over = f"min-max over {seeds} seeds" if seeds > 1 else "one seed"
    header = [
        "lr",
        "net",
        f"test accuracy at {_steps(done)} ({over})",
        f"at {_steps(early or 0)} steps",
        "first step at 95%",
    ]
    return _table(header, rows)


def _renorm_label(run: dict[str, Any]) -> str:
    if run["batches"] == "noniid":
        return "non-i.i.d. minibatches (2 classes each)"
    if run["name"] == "bn-full":
        return f"the whole minibatch of {run['group']} (reference)"
    return f"microbatches of {run['group']}"


def renorm_table(metrics: dict[str, Any]) -> str:
    """normalization over | BN (inference) | batch renorm (inference) | both gaps
    (training-mode minus inference-mode accuracy)."""
    by_name = {r["name"]: r for r in metrics["runs"]}

    def last(r: dict[str, Any] | None, key: str) -> float | None:
        vals = r["history"][key] if r else []
        return vals[-1] if vals and vals[-1] is not None else None

    def gap(r: dict[str, Any] | None) -> float | None:
        a, t = last(r, "test_acc"), last(r, "train_mode_acc")
        return None if a is None or t is None else t - a

    rows, seen = [], set()
    for r in metrics["runs"]:
        tag = r["name"].split("-", 1)[1]
        if tag in seen:
            continue
        seen.add(tag)
        bn, rn = by_name.get(f"bn-{tag}"), by_name.get(f"renorm-{tag}")
        a, b = last(bn, "test_acc"), last(rn, "test_acc")
        rn_best = a is not None and b is not None and b > a
        rows.append(
            [
                _renorm_label(bn or rn or r),
                _pct(a, bold=a is not None and b is not None and not rn_best),
                _pct(b, bold=rn_best),
                _pp(gap(bn)),
                _pp(gap(rn)),
            ]
        )
    header = ["normalization over", "BN (inference)", "batch renorm (inference)"]
    return _table([*header, "BN train/infer gap", "renorm gap"], rows)


def cifar10_table(runs: Sequence[dict[str, Any]], population: dict[str, Any] | None = None) -> str:
    """epoch | Keras baseline | with BN (moving averages) [| with BN (Algorithm 2)]: test
    accuracy after each epoch, from one or more cifar10-keras runs (e.g. one per model) and
    optionally a population-stats-epochs run over the BN net's per-epoch checkpoints."""
    acc: dict[str, dict[int, float]] = {"baseline": {}, "bn": {}}
    for m in runs:
        for kind, model in m.get("models", {}).items():
            h = model.get("history", {})
            pairs = zip(h.get("epoch", []), h.get("test_accuracy", []), strict=True)
            acc.setdefault(kind, {}).update(pairs)
    alg2 = {r["epoch"]: r["population_acc"] for r in (population or {}).get("rows", [])}
    epochs = sorted(set(acc["baseline"]) | set(acc["bn"]) | set(alg2))
    rows = []
    for e in epochs:
        cells = [acc["baseline"].get(e), acc["bn"].get(e)] + ([alg2.get(e)] if alg2 else [])
        best = max((v for v in cells if v is not None), default=None)
        rows.append([str(e), *[_pct(v, bold=v is not None and v == best) for v in cells]])
    header = ["epoch", "Keras baseline", "with BN (moving averages)"]
    return _table(header + (["with BN (Algorithm 2)"] if alg2 else []), rows)


def population_stats_table(metrics: dict[str, Any]) -> str:
    """step | moving averages at each momentum | Algorithm 2 (test accuracy in eval mode)."""
    h, keys = metrics["history"], [str(k) for k in metrics["momenta"]]
    rows = []
    for i, step in enumerate(h["step"]):
        cells = [h["moving"][k][i] for k in keys] + [h["population"][i]]
        best = max(cells)
        rows.append([f"{step:,}", *[_pct(v, bold=v == best) for v in cells]])
    header = ["step", *[f"moving averages, momentum {k}" for k in keys], "Algorithm 2"]
    return _table(header, rows)


def readme_tables(run_dirs: Sequence[str | Path]) -> str:
    """The README tables of these run directories, each under a heading naming its source.
    cifar10-keras runs (one per model) and a population-stats-epochs run make one table."""
    out, cifar, epochs = [], [], None
    for d in map(Path, run_dirs):
        name = read_json(d / "config.json").get("experiment")
        metrics = read_json(d / "metrics.json")
        if name in ("mnist-sigmoid", "mnist-lr"):
            out.append((d, mnist_sigmoid_table(metrics)))
        elif name == "renorm-small-batch":
            out.append((d, renorm_table(metrics)))
        elif name == "population-stats":
            out.append((d, population_stats_table(metrics)))
        elif name == "cifar10-keras":
            cifar.append((d, metrics))
        elif name == "population-stats-epochs":
            epochs = (d, metrics)
        else:
            raise ValueError(f"{d}: no README table for experiment {name!r}")
    if cifar:
        src = [d for d, _ in cifar] + ([epochs[0]] if epochs else [])
        table = cifar10_table([m for _, m in cifar], epochs[1] if epochs else None)
        out.append((Path(", ".join(map(str, src))), table))
    elif epochs:
        raise ValueError(
            f"{epochs[0]}: a population-stats-epochs table needs its cifar10-keras runs"
        )
    return "\n".join(f"<!-- from {d} -->\n{t}" for d, t in out)
