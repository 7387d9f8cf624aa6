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

from bnlab.experiments.covariate_shift.report import summary as shift_summary
from bnlab.experiments.mnist.metrics import lrs_of, summarize
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.renorm_small_batch.report import finals, spread
from bnlab.experiments.report import pct, pp
from bnlab.experiments.rundir import read_json

__all__ = [
    "cifar10_table",
    "covariate_shift_table",
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


def _spread_cell(values: Sequence[float | None], gap: bool = False, bold: bool = False) -> str:
    """An accuracy (or a ``gap`` in pp): the mean (bold if asked) and, over several seeds,
    its ``(min-max)`` in percent (``(lo to hi)`` in signed points for a gap)."""
    s = spread(values)
    if s is None:
        return ""
    text = _pp(s[0]) if gap else _pct(s[0], bold)
    if len(values) > 1:
        lo, hi = 100 * s[1], 100 * s[2]
        text += f" ({lo:+.2f} to {hi:+.2f})" if gap else f" ({lo:.2f}-{hi:.2f})"
    return text


def renorm_table(metrics: dict[str, Any]) -> str:
    """normalization over | BN (inference) | batch renorm (inference) | both gaps
    (training-mode minus inference-mode accuracy); over several seeds each cell is the mean
    and its min-max, and a last column says in how many seeds renorm beat BN."""
    fin, first = finals(metrics), {r["name"]: r for r in reversed(metrics["runs"])}
    seeds = max((len(d["acc"]) for d in fin.values()), default=1)
    rows, seen = [], set()
    for name in fin:
        tag = name.split("-", 1)[1]
        if tag in seen:
            continue
        seen.add(tag)
        bn, rn = fin.get(f"bn-{tag}"), fin.get(f"renorm-{tag}")
        a, b = (spread(d["acc"]) if d else None for d in (bn, rn))
        rn_best = a is not None and b is not None and b[0] > a[0]
        bn_best = a is not None and b is not None and not rn_best
        run = first.get(f"bn-{tag}") or first[f"renorm-{tag}"]
        row = [_renorm_label(run)]
        row += [_spread_cell(bn["acc"], bold=bn_best) if bn else ""]
        row += [_spread_cell(rn["acc"], bold=rn_best) if rn else ""]
        row += [_spread_cell(d["gap"], gap=True) if d else "" for d in (bn, rn)]
        if seeds > 1:
            pairs = zip(bn["acc"] if bn else [], rn["acc"] if rn else [], strict=False)
            wins = [y > x for x, y in pairs if x is not None and y is not None]
            row.append(f"{sum(wins)} of {len(wins)}" if wins else "")
        rows.append(row)
    over = f" (mean, min-max over {seeds} seeds)" if seeds > 1 else ""
    header = [f"normalization over{over}", "BN (inference)", "batch renorm (inference)"]
    header += ["BN train/infer gap", "renorm gap"] + (["renorm ahead in"] if seeds > 1 else [])
    return _table(header, rows)


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


def _num_cell(values: Sequence[float | None]) -> str:
    """The mean of a measurement and, over several runs, its (min-max), 3 significant digits."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return ""
    text = f"{sum(vals) / len(vals):.3g}"
    return text + (f" ({min(vals):.3g}-{max(vals):.3g})" if len(vals) > 1 else "")


def covariate_shift_table(runs: Sequence[dict[str, Any]]) -> str:
    """net | test accuracy | ICS l2 | ICS cosine | loss range | largest gradient change | beta:
    each run's medians (:func:`~bnlab.experiments.covariate_shift.report.summary`), over
    several runs (one per seed) the mean and the min-max, then in how many runs BN had less
    ICS than the standard net by each measure (lower l2, higher cosine)."""
    per: dict[str, list[dict[str, Any]]] = {}
    pairs = []  # (standard, bn) of each run that has both
    for m in runs:
        done = {n["name"]: shift_summary(n) for n in m["nets"] if n["history"]["step"]}
        for name, s in done.items():
            per.setdefault(name, []).append(s)
        if {"standard", "bn"} <= set(done):
            pairs.append((done["standard"], done["bn"]))
    keys = ("ics_l2", "ics_cos", "loss_range", "grad_change", "beta")
    rows = [
        [name, _spread_cell([s["acc"] for s in ss]), *[_num_cell([s[k] for s in ss]) for k in keys]]
        for name, ss in per.items()
    ]
    over = f"mean (min-max) over {len(runs)} seeds" if len(runs) > 1 else "one seed"
    header = ["net", "test acc", "ICS l2", "ICS cosine", "loss range", "gradient change", "beta"]
    text = _table([f"{header[0]} ({over})", *header[1:]], rows)
    if pairs:
        l2 = sum(b["ics_l2"] < s["ics_l2"] for s, b in pairs)
        cos = sum(b["ics_cos"] > s["ics_cos"] for s, b in pairs)
        n = f"{len(pairs)} seed" + ("s" if len(pairs) > 1 else "")
        text += (
            f"\nBN had a lower ICS l2 than the standard net in {l2} of {n} and a "
            f"higher ICS cosine in {cos} of {len(pairs)}.\n"
        )
    return text


def readme_tables(run_dirs: Sequence[str | Path]) -> str:
    """The README tables of these run directories, each under a heading naming its source.
    cifar10-keras runs (one per model) and a population-stats-epochs run make one table;
    covariate-shift runs (one per seed) make one table."""
    out, cifar, epochs, shift = [], [], None, []
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
        elif name == "covariate-shift":
            shift.append((d, metrics))
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
    if shift:
        seeds = Path(", ".join(str(d) for d, _ in shift))
        out.append((seeds, covariate_shift_table([m for _, m in shift])))
    return "\n".join(f"<!-- from {d} -->\n{t}" for d, t in out)
