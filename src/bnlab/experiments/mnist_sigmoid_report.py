"""Figures, numbers and the report of ``mnist-sigmoid`` (also used by ``mnist-lr``).

Everything here reads the ``metrics.json`` dict documented in
:mod:`bnlab.experiments.mnist_sigmoid`, so a finished or interrupted run can be re-rendered.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.experiments import mnist_common as mc
from bnlab.experiments.report import Report, new_figure, plot_band, save_figure

LABEL = {"plain": "without BN", "bn": "with BN"}
COLOR = {"plain": "tab:blue", "bn": "tab:orange"}
PAPER_SOURCE = (
    "Ioffe & Szegedy (2015), *Batch Normalization: Accelerating Deep Network Training by "
    "Reducing Internal Covariate Shift*, section 4.1, Figure 1"
)


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def final(run: dict[str, Any]) -> float | None:
    """The last recorded test accuracy of a run (None if nothing was recorded)."""
    acc = run["history"]["accuracy"]
    return acc[-1] if acc else None


def curves(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[list[float]]]:
    """``(steps, one curve per run)`` for a history key; steps from the longest run."""
    if not runs:
        return [], []
    longest = max(runs, key=lambda r: len(r["history"]["step"]))
    return longest["history"]["step"], [[_nan(v) for v in r["history"][key]] for r in runs]


def mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and the mean over runs (seeds) of a history key, NaN where no run got that far."""
    steps, cs = curves(runs, key)
    arr = np.full((len(cs), len(steps)), np.nan)
    for i, c in enumerate(cs):
        arr[i, : len(c)] = c
    with np.errstate(all="ignore"), _quiet():
        return np.asarray(steps, dtype=np.int64), np.nanmean(arr, axis=0)


class _quiet:
    """Silence numpy's 'mean of empty slice' RuntimeWarning inside a with-block."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def first_step_reaching(steps: np.ndarray, acc: np.ndarray, threshold: float) -> int | None:
    """The first evaluated step whose (mean) accuracy is >= ``threshold``, or None."""
    hit = np.nonzero(np.nan_to_num(acc, nan=-1.0) >= threshold)[0]
    return int(steps[hit[0]]) if hit.size else None


def summarize(metrics: dict[str, Any], lr: float, net: str) -> dict[str, Any]:
    """Numbers of one (lr, net) group over its seeds: final accuracy mean/min/max, early
    accuracy (at ~10% of the steps), steps to 95%, and the drift of the monitored unit's
    sigmoid input: the range (max - min) of its median after step 0 and its 85-15 spread
    at the first evaluation after step 0 and at the end (means over seeds)."""
    runs = mc.group(metrics, lr, net)
    finals = [_nan(final(r)) for r in runs]
    steps, acc = mean_curve(runs, "accuracy")
    _, p15 = mean_curve(runs, "p15")
    _, p50 = mean_curve(runs, "p50")
    _, p85 = mean_curve(runs, "p85")
    later = np.nonzero(steps > 0)[0]
    total = int(metrics.get("steps_total") or (steps[-1] if len(steps) else 0))
    early_idx = np.nonzero(steps >= total / 10)[0]
    if not early_idx.size and len(steps):  # a partial run that has not got there yet
        early_idx = np.array([len(steps) - 1])
    with np.errstate(all="ignore"), _quiet():
        out = {
            "final_mean": float(np.nanmean(finals)) if finals else math.nan,
            "final_min": float(np.nanmin(finals)) if finals else math.nan,
            "final_max": float(np.nanmax(finals)) if finals else math.nan,
            "early_step": int(steps[early_idx[0]]) if early_idx.size else None,
            "early_acc": float(acc[early_idx[0]]) if early_idx.size else math.nan,
            "steps_to_95": first_step_reaching(steps, acc, 0.95),
            "p50_range": float(np.nanmax(p50[later]) - np.nanmin(p50[later]))
            if later.size
            else math.nan,
            "spread_first": float(p85[later[0]] - p15[later[0]]) if later.size else math.nan,
            "spread_last": float(p85[-1] - p15[-1]) if len(steps) else math.nan,
            "diverged": sum(r["diverged_at"] is not None for r in runs),
            "n_seeds": len(runs),
            "steps": steps,
            "acc": acc,
        }
    return out


# -- figures -------------------------------------------------------------------------------------


def fig_accuracy(run_dir: Path, metrics: dict[str, Any], filename: str = "fig_accuracy.png") -> str:
    """Test accuracy against steps, one panel per learning rate (Figure 1a)."""
    lrs = mc.lrs_of(metrics) or [math.nan]
    ncols = min(3, len(lrs))
    nrows = math.ceil(len(lrs) / ncols)
    fig, axes = new_figure(nrows, ncols)
    lows = []
    for i, lr in enumerate(lrs):
        ax = axes[i // ncols][i % ncols]
        for net in mc.NETS:
            runs = mc.group(metrics, lr, net)
            if runs:
                steps, cs = curves(runs, "accuracy")
                plot_band(ax, steps, cs, label=LABEL[net], color=COLOR[net])
                tail = [v for c in cs for v in c[len(c) // 10 :] if math.isfinite(v)]
                lows += tail
        ax.set_title(f"lr = {lr:g}")
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    lo = max(0.0, math.floor(min(lows) * 10) / 10) if lows else 0.0
    for ax in axes.ravel():
        ax.set_ylim(lo, 1.0)
    for j in range(len(lrs), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    save_figure(fig, run_dir / filename)
    return filename


def fig_percentiles(run_dir: Path, metrics: dict[str, Any]) -> str:
    """15th/50th/85th percentiles of the monitored unit's sigmoid input (Figures 1b, 1c):
    one row per learning rate, without BN left, with BN right, all on one y axis; first seed."""
    lrs = mc.lrs_of(metrics) or [math.nan]
    fig, axes = new_figure(len(lrs), 2)
    for i, lr in enumerate(lrs):
        for j, net in enumerate(mc.NETS):
            ax = axes[i][j]
            runs = mc.group(metrics, lr, net)[:1]
            if runs:
                h = runs[0]["history"]
                # at step 0 a BN net's running statistics are still their initial (0, 1), so
                # its eval-mode input there says nothing about training: start after it
                first = 1 if net == "bn" and len(h["step"]) > 1 else 0
                for key, style in (("p85", "--"), ("p50", "-"), ("p15", ":")):
                    vals = [_nan(v) for v in h[key][first:]]
                    ax.plot(
                        h["step"][first:], vals, style, color=COLOR[net], label=key[1:] + "th pct"
                    )
            tag = "(b)" if net == "plain" else "(c)"
            ax.set_title(f"{tag} {LABEL[net]}, lr = {lr:g}")
            ax.set_xlabel("training step")
            ax.set_ylabel("input of the sigmoid")
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
    ys = [a.get_ylim() for a in axes.ravel()]
    lim = (min(y[0] for y in ys), max(y[1] for y in ys))
    for ax in axes.ravel():
        ax.set_ylim(*lim)
    save_figure(fig, run_dir / "fig_percentiles.png")
    return "fig_percentiles.png"


# -- report --------------------------------------------------------------------------------------


def _acc_cell(s: dict[str, Any]) -> str:
    if s["n_seeds"] > 1:
        return f"{s['final_mean']:.4f} ({s['final_min']:.4f}–{s['final_max']:.4f})"
    return f"{s['final_mean']:.4f}"


def _status_text(metrics: dict[str, Any]) -> str:
    st = metrics.get("status", "unknown")
    done, total = metrics.get("steps_done", 0), metrics.get("steps_total", "?")
    text = f"Status: **{st}** after {done} of {total} steps"
    if metrics.get("wall_time_s") is not None:
        text += f", wall time {metrics['wall_time_s']:.0f} s"
    if st != "complete":
        text += "; the numbers below are those of a partial run"
    return text + "."


def setup_paragraph(cfg: dict[str, Any]) -> str:
    hidden = "-".join(str(h) for h in cfg["hidden"])
    return (
        f"Network 784-{hidden}-10 with sigmoid hidden units, weights from N(0, "
        f"{cfg['init_std']}^2), biases 0; SGD without momentum, batch {cfg['batch_size']}, "
        f"{cfg['steps']} steps, {cfg['seeds']} seed(s) from {cfg['seed']}. Inputs: MNIST pixels "
        "scaled to [0, 1]. The BN net is Dense(no bias) -> BatchNorm -> Sigmoid in every hidden "
        f"layer (momentum {cfg['bn_momentum']}, eps {cfg['bn_eps']}); both nets start from the "
        "same weight matrices and see the same batches. Every "
        f"{cfg['eval_every']} steps: accuracy on the {cfg['test_subset'] or 10000} test images "
        f"and the 15th/50th/85th percentiles of the input of the sigmoid of unit "
        f"{cfg['monitor_unit']} of the last hidden layer over the same images. Evaluation is in "
        "eval mode: **the BN net uses its population (running) statistics**, not batch ones."
    )


def comparison_rows(metrics: dict[str, Any], lrs: list[float]) -> list[list[str]]:
    """The paper's claims beside what this run found, one column per learning rate."""
    acc_row, drift_row, stable_row = [], [], []
    for lr in lrs:
        p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
        target = p["final_mean"]
        bn_reach = (
            first_step_reaching(b["steps"], b["acc"], target) if math.isfinite(target) else None
        )
        p_reach = (
            first_step_reaching(p["steps"], p["acc"], target) if math.isfinite(target) else None
        )
        gain = b["final_mean"] - p["final_mean"]
        ratio = p_reach / bn_reach if bn_reach and p_reach else 1.0
        if gain > 0 and bn_reach is not None and (gain >= 0.005 or ratio >= 1.5):
            verdict = "agrees"
        elif gain > 0 and bn_reach is not None:
            verdict = "agrees only weakly (small gain)"
        else:
            verdict = "does not agree"
        speed = ""
        if bn_reach and p_reach:
            speed = f"; BN reaches the plain net's final {target:.4f} at step {bn_reach} " + (
                f"(plain: {p_reach}, {p_reach / bn_reach:.1f}x sooner)"
            )
        acc_row.append(
            f"{verdict}: final {b['final_mean']:.4f} vs {p['final_mean']:.4f} "
            f"({100 * gain:+.2f} points); at step {b['early_step']}: {b['early_acc']:.4f} vs "
            f"{p['early_acc']:.4f}{speed}"
        )
        drift_row.append(
            f"median range {p['p50_range']:.2f}; 15-85 spread {p['spread_first']:.2f} -> "
            f"{p['spread_last']:.2f}"
        )
        if b["p50_range"] < 0.7 * p["p50_range"]:
            word = "agrees"
        elif b["p50_range"] < p["p50_range"]:
            word = "agrees only weakly"
        else:
            word = "does not agree"
        stable_row.append(
            f"{word}: median range {b['p50_range']:.2f}; "
            f"15-85 spread {b['spread_first']:.2f} -> {b['spread_last']:.2f}"
        )
    return [
        ["(a) the BN net reaches a higher test accuracy sooner", *acc_row],
        ["(b) without BN the sigmoid's input distribution drifts over training", *drift_row],
        ["(c) with BN it stays much more stable", *stable_row],
    ]


def _size(points: float, large: float, moderate: float) -> str:
    """ "large", "moderate", "small" or "none/negative" for a gain in percentage points."""
    if not math.isfinite(points) or points <= 0:
        return "none (BN is not ahead)"
    return "large" if points >= large else ("moderate" if points >= moderate else "small")


def advantage_sentence(metrics: dict[str, Any], lr: float) -> str:
    """BN's advantage at ``lr`` in one sentence: early (at ~10% of the steps) and at the end.

    Early: >= 3 points is large, >= 1 moderate; final: >= 1 point is large, >= 0.3 moderate.
    """
    p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
    gain = 100 * (b["final_mean"] - p["final_mean"])
    early = 100 * (b["early_acc"] - p["early_acc"])
    return (
        f"**lr = {lr:g}: BN's advantage is {_size(early, 3, 1)} early and "
        f"{_size(gain, 1, 0.3)} at the end.** At step {b['early_step']}: {b['early_acc']:.4f} "
        f"with BN vs {p['early_acc']:.4f} without ({early:+.2f} points); final test accuracy "
        f"{b['final_mean']:.4f} vs {p['final_mean']:.4f} ({gain:+.2f} points). 95% test "
        f"accuracy reached at step {b['steps_to_95'] or 'never'} with BN and "
        f"{p['steps_to_95'] or 'never'} without."
    )


def final_table(r: Report, metrics: dict[str, Any], lrs: list[float]) -> None:
    """The "Final numbers" section: one row per (lr, net)."""
    r.heading("Final numbers")
    rows = []
    for lr in lrs:
        for net in mc.NETS:
            s = summarize(metrics, lr, net)
            rows.append(
                [
                    f"{lr:g}",
                    LABEL[net],
                    _acc_cell(s),
                    s["early_acc"],
                    s["steps_to_95"] or "never",
                    s["p50_range"],
                    f"{s['spread_first']:.2f} -> {s['spread_last']:.2f}",
                    f"{s['diverged']}/{s['n_seeds']}",
                ]
            )
    r.table(
        [
            "lr",
            "net",
            "final test acc (min–max)",
            "acc at 10% of steps",
            "step reaching 95%",
            "median drift (range)",
            "15-85 spread first -> last",
            "diverged",
        ],
        rows,
    )


def render_full(run_dir: Path, cfg: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Figures and report of a full (non-sweep) run."""
    lrs = mc.lrs_of(metrics)
    r = Report("mnist-sigmoid: batch normalization on a sigmoid MLP (Ioffe & Szegedy 2015, Fig. 1)")
    r.paragraph(_status_text(metrics))
    r.heading("Setup")
    r.paragraph(setup_paragraph(cfg))
    r.paragraph(
        "The paper gives no learning rate, and BN's gain depends on it, so the runs are shown "
        f"at each of these rates: {', '.join(f'{v:g}' for v in lrs) or 'none yet'} "
        "(chosen from a short sweep, `bnlab run mnist-sigmoid --sweep`)."
    )
    if not lrs:
        r.paragraph("No training step finished; nothing to show yet.")
        r.write(run_dir)
        return
    fa, fp = fig_accuracy(run_dir, metrics), fig_percentiles(run_dir, metrics)
    r.heading("How large is BN's advantage?")
    r.bullets([advantage_sentence(metrics, lr) for lr in lrs])
    r.heading("Paper vs this run")
    r.paragraph(f"Claims of {PAPER_SOURCE}, beside what we measured (BN vs plain).")
    r.table(["claim (paper)", *[f"ours, lr = {lr:g}" for lr in lrs]], comparison_rows(metrics, lrs))
    r.paragraph(
        "Where a cell says 'does not agree', our figure does not show what the paper's shows; "
        "we report it as measured rather than tuning the setup until it does. (The seed slides "
        "swap the 15th and 85th percentile lines of Figure 1; here the top line is the 85th.)"
    )
    r.figure(fa, "Figure 1a: test accuracy (mean over seeds; band: min-max over seeds)")
    r.figure(
        fp,
        "Figures 1b, 1c: 15th, 50th and 85th percentiles of the input of one sigmoid of the last "
        "hidden layer over the test set (first seed; BN net in eval mode, from the first "
        "evaluation after step 0, when its running statistics are still the initial 0 and 1), "
        "same y axis",
    )
    final_table(r, metrics, lrs)
    r.paragraph(
        "Raw numbers: `metrics.json` (schema in `bnlab.experiments.mnist_sigmoid`), "
        "`metrics.csv`; configuration: `config.json`."
    )
    r.write(run_dir)


def suggest_rates(metrics: dict[str, Any]) -> dict[str, float | None]:
    """From a sweep: the rate best for the plain net, and a slower one where it learns slowly:
    the largest swept rate below the best whose plain accuracy is >= 3 points below the best."""
    finals = {}
    for lr in mc.lrs_of(metrics):
        finals[lr] = summarize(metrics, lr, "plain")["final_mean"]
    valid = {k: v for k, v in finals.items() if math.isfinite(v)}
    if not valid:
        return {"best": None, "slow": None}
    best = max(valid, key=lambda k: valid[k])
    slower = [k for k in valid if k < best and valid[k] <= valid[best] - 0.03]
    return {"best": best, "slow": max(slower) if slower else None}


def render_sweep(run_dir: Path, cfg: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Figures and report of a learning-rate sweep."""
    lrs = mc.lrs_of(metrics)
    r = Report("mnist-sigmoid: learning-rate sweep")
    r.paragraph(_status_text(metrics))
    r.paragraph(setup_paragraph(cfg))
    if not lrs:
        r.write(run_dir)
        return
    rows, fin = [], {net: [] for net in mc.NETS}  # type: ignore[var-annotated]
    for lr in lrs:
        p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
        fin["plain"].append(p["final_mean"])
        fin["bn"].append(b["final_mean"])
        rows.append(
            [
                f"{lr:g}",
                _acc_cell(p),
                _acc_cell(b),
                100 * (b["final_mean"] - p["final_mean"]),
                f"{p['diverged']}/{b['diverged']}",
            ]
        )
    fig, axes = new_figure(1, 1)
    ax = axes[0][0]
    for net in mc.NETS:
        ax.plot(lrs, fin[net], "o-", color=COLOR[net], label=LABEL[net])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"test accuracy after {metrics.get('steps_done')} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, run_dir / "fig_sweep.png")
    r.table(["lr", "without BN", "with BN", "BN gain (points)", "diverged plain/BN"], rows)
    r.figure("fig_sweep.png", "Final test accuracy against learning rate")
    r.figure(fig_accuracy(run_dir, metrics), "Test accuracy during the sweep runs")
    sug = suggest_rates(metrics)
    chosen = [v for v in (sug["slow"], sug["best"]) if v is not None]
    r.paragraph(
        f"Best rate for the plain net: **{sug['best']}**; a rate where it learns slowly: "
        f"**{sug['slow']}**. Full run at these rates: `bnlab run mnist-sigmoid --lr "
        f"{' '.join(f'{v:g}' for v in chosen)} --seeds 3 --out runs/mnist-sigmoid`."
    )
    r.write(run_dir)
