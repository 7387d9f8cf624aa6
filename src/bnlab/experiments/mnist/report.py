"""The report of ``mnist-sigmoid`` (Figure 1, and the learning-rate sweep) from a run's files.

Everything here reads the ``metrics.json`` dict of :mod:`bnlab.experiments.mnist.metrics`
and the run's :class:`~bnlab.experiments.mnist.config.MnistSigmoidConfig`, so a finished or
interrupted run can be re-rendered. Accuracies are shown in percent, differences in
percentage points (pp); how a difference is judged (seed spread, too-short runs) is in
:mod:`bnlab.experiments.mnist.numbers`.
"""

from __future__ import annotations

import math
from typing import Any

from bnlab.experiments.mnist.config import MnistSigmoidConfig
from bnlab.experiments.mnist.figures import LABEL, fig_accuracy, fig_percentiles, fig_sweep
from bnlab.experiments.mnist.metrics import lrs_of
from bnlab.experiments.mnist.nets import NETS
from bnlab.experiments.mnist.numbers import TRAINED, first_step_reaching, judge, summarize
from bnlab.experiments.mnist.readme import readme_paragraph
from bnlab.experiments.mnist.text import acc_cell, accuracy_caption, setup_paragraph, status_text
from bnlab.experiments.report import Report, pct, pp
from bnlab.experiments.rundir import RunDir

__all__ = [
    "PAPER_SOURCE",
    "advantage_sentence",
    "comparison_rows",
    "final_table",
    "render_full",
    "render_sweep",
    "suggest_rates",
]

PAPER_SOURCE = (
    "Ioffe & Szegedy (2015), *Batch Normalization: Accelerating Deep Network Training by "
    "Reducing Internal Covariate Shift*, section 4.1, Figure 1"
)


def _reach95(j: dict[str, Any], steps_done: Any) -> str:
    b, p = j["bn"]["steps_to_95"], j["plain"]["steps_to_95"]
    if b is None and p is None:
        return f"Neither net reached 95% test accuracy within {steps_done:,} steps."

    def at(v: int | None) -> str:
        return f"step {v:,}" if v is not None else f"not within {steps_done:,} steps"

    return f"95% test accuracy first reached: with BN at {at(b)}, without at {at(p)}."


def advantage_sentence(metrics: dict[str, Any], lr: float) -> str:
    """BN's advantage at ``lr`` in a few sentences, early (at ~10% of the steps) and at the end,
    each judged against the seed spread; a run whose nets are not trained is not judged."""
    j = judge(metrics, lr)
    p, b, e, f = j["plain"], j["bn"], j["early"], j["final"]
    done = int(metrics.get("steps_done") or 0)
    numbers = (
        f"At step {b['early_step']:,}: {pct(b['early_acc'])} with BN vs {pct(p['early_acc'])} "
        f"without ({pp(e['gain'])}; {e['seeds']}); at the end (step {done:,}): "
        f"{pct(b['final_mean'])} vs {pct(p['final_mean'])} ({pp(f['gain'])}; {f['seeds']}). "
    )
    if not j["trained"]:
        return (
            f"**lr = {lr:g}: too early to judge.** After {done:,} steps neither net is trained "
            f"(the better is at {pct(j['best'])}; trained nets are above {100 * TRAINED:.0f}%), so "
            f"the differences are those of nets that have barely started. {numbers}"
        )
    return (
        f"**lr = {lr:g}: BN's advantage is {e['size']} early and {f['size']} at the end.** "
        f"{numbers}{_reach95(j, done)}"
    )


def _accuracy_claim(j: dict[str, Any]) -> str:
    """Claim (a) at one rate: the verdict, the final and early accuracies, and how much sooner
    BN reaches the plain net's final accuracy."""
    p, b, f = j["plain"], j["bn"], j["final"]
    target = p["final_mean"]
    reach = [
        first_step_reaching(n["steps"], n["acc"], target) if math.isfinite(target) else None
        for n in (b, p)
    ]
    bn_reach, p_reach = reach
    ratio = p_reach / bn_reach if bn_reach and p_reach else 1.0
    if not j["trained"]:
        verdict = "too early to judge (nets not trained yet)"
    elif f["gain"] > 0 and f["seeds"].startswith("within"):
        verdict = "agrees only weakly (gain within the seed spread)"
    elif f["gain"] > 0 and bn_reach is not None and (f["gain"] >= 0.005 or ratio >= 1.5):
        verdict = "agrees"
    elif f["gain"] > 0 and bn_reach is not None:
        verdict = "agrees only weakly (small gain)"
    else:
        verdict = "does not agree"
    speed = ""
    if j["trained"] and bn_reach and p_reach:
        speed = f"; BN reaches the plain net's final {pct(target)} at step {bn_reach:,} " + (
            f"(plain: {p_reach:,}, {p_reach / bn_reach:.1f}x sooner)"
        )
    return (
        f"{verdict}: final {pct(b['final_mean'])} vs {pct(p['final_mean'])} "
        f"({pp(f['gain'])}; {f['seeds']}); at step {b['early_step']:,}: "
        f"{pct(b['early_acc'])} vs {pct(p['early_acc'])}{speed}"
    )


def _stability_claim(j: dict[str, Any]) -> str:
    """Claim (c) at one rate: is the BN net's sigmoid input steadier than the plain net's?"""
    p, b = j["plain"], j["bn"]
    if not j["trained"]:
        word = "too early to judge"
    elif b["p50_range"] < 0.7 * p["p50_range"]:
        word = "agrees"
    elif b["p50_range"] < p["p50_range"]:
        word = "agrees only weakly"
    else:
        word = "does not agree"
    return (
        f"{word}: median range {b['p50_range']:.2f}; "
        f"15-85 spread {b['spread_first']:.2f} -> {b['spread_last']:.2f}"
    )


def comparison_rows(metrics: dict[str, Any], lrs: list[float]) -> list[list[str]]:
    """The paper's claims beside what this run found, one column per learning rate."""
    judged = [judge(metrics, lr) for lr in lrs]
    drift = [
        f"median range {p['p50_range']:.2f}; 15-85 spread {p['spread_first']:.2f} -> "
        f"{p['spread_last']:.2f}"
        for p in (j["plain"] for j in judged)
    ]
    return [
        ["(a) the BN net reaches a higher test accuracy sooner", *map(_accuracy_claim, judged)],
        ["(b) without BN the sigmoid's input distribution drifts over training", *drift],
        ["(c) with BN it stays much more stable", *map(_stability_claim, judged)],
    ]


def final_table(r: Report, metrics: dict[str, Any], lrs: list[float]) -> None:
    """The "Final numbers" section: one row per (lr, net)."""
    r.heading("Final numbers")
    rows, early, seeds = [], None, 0
    for lr in lrs:
        for net in NETS:
            s = summarize(metrics, lr, net)
            early, seeds = early or s["early_step"], max(seeds, s["n_seeds"])
            rows.append(
                [
                    f"{lr:g}",
                    LABEL[net],
                    acc_cell(s),
                    pct(s["early_acc"]),
                    f"{s['steps_to_95']:,}" if s["steps_to_95"] else "not reached",
                    f"{s['p50_range']:.2f}",
                    f"{s['spread_first']:.2f} -> {s['spread_last']:.2f}",
                    f"{s['diverged']}/{s['n_seeds']}",
                ]
            )
    head = (
        f"final test acc (min–max over {seeds} seeds)" if seeds > 1 else "final test acc (one seed)"
    )
    r.table(
        [
            "lr",
            "net",
            head,
            f"acc at step {early:,} (10% of the steps)" if early else "acc at 10% of the steps",
            "step reaching 95%",
            "median drift (max - min of the median after step 0)",
            "15-85 spread first -> last",
            "diverged",
        ],
        rows,
    )


def render_full(rd: RunDir, cfg: MnistSigmoidConfig, metrics: dict[str, Any]) -> None:
    """Figures and report of a full (non-sweep) run."""
    lrs = lrs_of(metrics)
    r = Report("mnist-sigmoid: batch normalization on a sigmoid MLP (Ioffe & Szegedy 2015, Fig. 1)")
    r.paragraph(status_text(metrics))
    r.paragraph(readme_paragraph(cfg, metrics))
    r.heading("Setup")
    r.paragraph(setup_paragraph(cfg))
    r.paragraph(
        "The paper gives no learning rate, and BN's gain depends on it, so the runs are shown "
        f"at each of these rates: {', '.join(f'{v:g}' for v in lrs) or 'none yet'} "
        "(chosen from a short sweep, `bnlab run mnist-sigmoid --sweep`)."
    )
    if not lrs:
        r.paragraph("No training step finished; nothing to show yet.")
        rd.write_report(r)
        return
    fa, fp = fig_accuracy(rd, metrics), fig_percentiles(rd, metrics)
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
    r.figure(fa, accuracy_caption(metrics))
    r.figure(
        fp,
        "Figures 1b, 1c: 15th, 50th and 85th percentiles of the input of one sigmoid of the last "
        "hidden layer over the test set (first seed; BN net in eval mode, from the first "
        "evaluation after step 0, when its running statistics are still the initial 0 and 1), "
        "same y axis",
    )
    final_table(r, metrics, lrs)
    r.paragraph(
        "Raw numbers: `metrics.json` (schema in `bnlab.experiments.mnist.metrics`), "
        "`metrics.csv`; configuration: `config.json`."
    )
    rd.write_report(r)


def suggest_rates(metrics: dict[str, Any]) -> dict[str, float | None]:
    """From a sweep: the rate best for the plain net, and a slower one where it learns slowly:
    the largest swept rate below the best whose plain accuracy is >= 3 points below the best."""
    finals = {}
    for lr in lrs_of(metrics):
        finals[lr] = summarize(metrics, lr, "plain")["final_mean"]
    valid = {k: v for k, v in finals.items() if math.isfinite(v)}
    if not valid:
        return {"best": None, "slow": None}
    best = max(valid, key=lambda k: valid[k])
    slower = [k for k in valid if k < best and valid[k] <= valid[best] - 0.03]
    return {"best": best, "slow": max(slower) if slower else None}


def render_sweep(rd: RunDir, cfg: MnistSigmoidConfig, metrics: dict[str, Any]) -> None:
    """Figures and report of a learning-rate sweep."""
    lrs = lrs_of(metrics)
    r = Report("mnist-sigmoid: learning-rate sweep")
    r.paragraph(status_text(metrics))
    r.paragraph(setup_paragraph(cfg))
    if not lrs:
        rd.write_report(r)
        return
    rows: list[list[str]] = []
    fin: dict[str, list[float]] = {net: [] for net in NETS}
    for lr in lrs:
        p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
        fin["plain"].append(p["final_mean"])
        fin["bn"].append(b["final_mean"])
        rows.append(
            [
                f"{lr:g}",
                acc_cell(p),
                acc_cell(b),
                pp(b["final_mean"] - p["final_mean"]),
                f"{p['diverged']}/{b['diverged']}",
            ]
        )
    r.table(["lr", "without BN", "with BN", "BN gain", "diverged plain/BN"], rows)
    r.figure(fig_sweep(rd, metrics, fin), "Final test accuracy against learning rate")
    r.figure(fig_accuracy(rd, metrics), "Test accuracy during the sweep runs")
    sug = suggest_rates(metrics)
    chosen = [v for v in (sug["slow"], sug["best"]) if v is not None]
    trained = any(max(fin["plain"][i], fin["bn"][i]) >= TRAINED for i in range(len(lrs)))
    caveat = (
        ""
        if trained
        else f" (the sweep is too short to choose from: no net is above {100 * TRAINED:.0f}% yet)"
    )
    r.paragraph(
        f"Best rate for the plain net: **{sug['best']}**; a rate where it learns slowly: "
        f"**{sug['slow']}**{caveat}. Full run at these rates: `bnlab run mnist-sigmoid --lr "
        f"{' '.join(f'{v:g}' for v in chosen)} --seeds 3 --out runs/mnist-sigmoid`."
    )
    rd.write_report(r)
