"""The paragraphs both MNIST reports share (``mnist-sigmoid`` and ``mnist-lr``).

Each reads the ``metrics.json`` dict (:mod:`bnlab.experiments.mnist.metrics`) and, where it
describes the setup, the run's :class:`~bnlab.experiments.mnist.config.MnistConfig`.
Accuracies are shown in percent, differences in percentage points (pp).
"""

from __future__ import annotations

import math
from typing import Any

from bnlab.experiments.mnist.config import MnistConfig
from bnlab.experiments.mnist.metrics import lrs_of
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.numbers import TRAINED, summarize
from bnlab.experiments.report import pct

__all__ = ["acc_cell", "accuracy_caption", "setup_paragraph", "short_run_note", "status_text"]


def acc_cell(s: dict[str, Any]) -> str:
    """Final accuracy of a group: the mean, and the min-max over seeds when there are several."""
    if s["n_seeds"] > 1:
        return f"{pct(s['final_mean'])} ({pct(s['final_min'])}–{pct(s['final_max'])})"
    return pct(s["final_mean"])


def status_text(metrics: dict[str, Any]) -> str:
    """Status, steps done and wall time of a run (the wall time's compilation caveat said)."""
    st = metrics.get("status", "unknown")
    done, total = metrics.get("steps_done", 0), metrics.get("steps_total", "?")
    text = (
        f"Status: **{st}** after {done:,} of {total:,} steps"
        if total != "?"
        else f"Status: **{st}**"
    )
    if metrics.get("wall_time_s") is not None:
        text += (
            f", wall time {metrics['wall_time_s']:.0f} s (training and evaluation of all nets; "
            "the first run after an install also compiles the Numba kernels, about a minute)"
        )
    if st != "complete":
        text += "; the numbers below are those of a partial run"
    return text + "."


def short_run_note(metrics: dict[str, Any]) -> str | None:
    """A warning when no net of the run is trained yet (none above ``TRAINED``), else None."""
    finals = [summarize(metrics, lr, net)["final_mean"] for lr in lrs_of(metrics) for net in NETS]
    best = max((v for v in finals if math.isfinite(v)), default=math.nan)
    if not finals or (math.isfinite(best) and best >= TRAINED):
        return None
    return (
        f"**Too short to judge:** after {int(metrics.get('steps_done') or 0):,} steps no net is "
        f"above {100 * TRAINED:.0f}% test accuracy (best {pct(best)}); the outcomes below are "
        "those of nets that have barely started training."
    )


def _every(n: int) -> str:
    return "After every step" if int(n) == 1 else f"Every {int(n):,} steps"


def setup_paragraph(cfg: MnistConfig) -> str:
    """The network, the training and the evaluation of the run, in words."""
    hidden = "-".join(str(h) for h in cfg.hidden)
    seeds = cfg.seeds
    return (
        f"Network 784-{hidden}-10 with sigmoid hidden units, weights from N(0, "
        f"{cfg.init_std}^2), biases 0; SGD without momentum, batch {cfg.batch_size}, "
        f"{cfg.steps:,} steps, "
        + (
            f"{seeds} seeds ({cfg.seed} to {cfg.seed + seeds - 1})"
            if seeds > 1
            else f"one seed ({cfg.seed})"
        )
        + ". Inputs: MNIST pixels scaled to [0, 1]. The BN net is Dense(no bias) -> BatchNorm -> "
        f"Sigmoid in every hidden layer (momentum {cfg.bn_momentum}, eps {cfg.bn_eps}); "
        f"both nets start from the same weight matrices and see the same batches. "
        f"{_every(cfg.eval_every)}: accuracy on the {cfg.test_subset or 10000:,} test "
        f"images and the 15th/50th/85th percentiles of the input of the sigmoid of unit "
        f"{cfg.monitor_unit} of the last hidden layer over the same images. Evaluation is in "
        "eval mode: **the BN net uses its population (running) statistics**, not batch ones."
    )


def accuracy_caption(metrics: dict[str, Any]) -> str:
    """Caption of the accuracy figure: seeds (band or not) and the difference panels."""
    n = max((summarize(metrics, lr, "bn")["n_seeds"] for lr in lrs_of(metrics)), default=1)
    over = f"mean over {n} seeds, band: min-max over the seeds" if n > 1 else "one seed"
    what = (
        "Test accuracy at each multiple of the base rate"
        if metrics.get("experiment") == "mnist-lr"
        else "Figure 1a: test accuracy"
    )
    return (
        f"{what} on the full 0-1 axis ({over}); below each panel, BN minus plain test "
        "accuracy in percentage points (above 0: BN ahead)"
    )
