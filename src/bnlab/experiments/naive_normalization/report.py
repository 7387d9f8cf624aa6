"""Verdict, figure and report of ``naive-normalization`` (the metrics files and their content: the
docstring of :mod:`bnlab.experiments.naive_normalization.run`). It reads everything back from
the run directory and imports nothing of the experiment.

The verdict, per normalization (centre, BN) and setting (all parameters, biases only), from the
numbers: the naive bias **grows without bound** if its norm rises from each quarter of the run
to the next and ends at least twice its value at the first quarter; the naive loss **does not
improve** if the evaluation loss at the end is above 90% of the loss at step 0; the proper bias
**stays put** if its final norm is below 1% of the naive one's. The claim holds for a pair if
all three do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnlab.experiments.report import finish_axes, new_figure, pct, renders, run_report, save_figure
from bnlab.experiments.rundir import RunDir

__all__ = ["HISTORY_KEYS", "SCHEMA", "render", "verdicts"]

SCHEMA = "bnlab.naive_normalization.metrics/1"
HISTORY_KEYS = ("step", "train_loss", "eval_loss", "eval_acc", "bias_norm", "weight_norm")
GROWTH, STUCK, SMALL = 2.0, 0.9, 0.01


def _at(h: dict[str, list[Any]], key: str, frac: float) -> float | None:
    """``h[key]`` at the record nearest ``frac`` of the last recorded step."""
    steps = h["step"]
    if not steps:
        return None
    target = frac * steps[-1]
    i = min(range(len(steps)), key=lambda j: abs(steps[j] - target))
    return h[key][i]


def _grows(h: dict[str, list[Any]]) -> bool:
    q = [_at(h, "bias_norm", f) for f in (0.25, 0.5, 0.75, 1.0)]
    if any(v is None for v in q) or len(h["step"]) < 5:
        return False
    return all(a < b for a, b in zip(q[:-1], q[1:], strict=True)) and q[3] >= GROWTH * q[0]  # type: ignore[operator]


def verdicts(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (setting, normalization) with both runs recorded: the numbers and the verdict."""
    by = {r["name"]: r for r in metrics["runs"]}
    out = []
    for train in ("all", "bias"):
        for norm in ("centre", "bn"):
            naive, proper = by.get(f"{norm}-naive-{train}"), by.get(f"{norm}-proper-{train}")
            if (
                not naive
                or not proper
                or not naive["history"]["step"]
                or not proper["history"]["step"]
            ):
                continue
            hn, hp = naive["history"], proper["history"]
            loss0, loss1 = hn["eval_loss"][0], hn["eval_loss"][-1]
            v = {
                "train": train,
                "norm": norm,
                "steps": hn["step"][-1],
                "naive_bias": hn["bias_norm"][-1],
                "proper_bias": hp["bias_norm"][-1],
                "naive_loss0": loss0,
                "naive_loss": loss1,
                "proper_loss": hp["eval_loss"][-1],
                "naive_acc": hn["eval_acc"][-1],
                "proper_acc": hp["eval_acc"][-1],
                "naive_error": naive.get("error"),
                "proper_error": proper.get("error"),
            }
            v["grows"] = _grows(hn)
            v["stuck"] = loss1 is not None and loss0 is not None and loss1 > STUCK * loss0
            v["proper_small"] = hp["bias_norm"][-1] < SMALL * max(hn["bias_norm"][-1], 1e-30)
            v["holds"] = v["grows"] and v["stuck"] and v["proper_small"]
            out.append(v)
    return out


def _sentence(v: dict[str, Any]) -> str:
    what = "every parameter trained" if v["train"] == "all" else "only the biases trained"
    norm = "centring (x - E[x])" if v["norm"] == "centre" else "full BN"
    naive = (
        f"the naive bias norm reaches {v['naive_bias']:.4g} "
        f"({'growing at every quarter of the run' if v['grows'] else 'not growing steadily'}) "
        f"while its evaluation loss goes {v['naive_loss0']:.4f} -> {v['naive_loss']:.4f} "
        f"({'not improved' if v['stuck'] else 'improved'}, accuracy {pct(v['naive_acc'])})"
    )
    proper = (
        f"the proper bias norm is {v['proper_bias']:.3g} and its loss ends at "
        f"{v['proper_loss']:.4f} (accuracy {pct(v['proper_acc'])})"
    )
    verdict = "**the claim holds**" if v["holds"] else "**the claim does not hold**"
    errs = [
        f"{k.split('_')[0]} run diverged ({v[k]})" for k in ("naive_error", "proper_error") if v[k]
    ]
    tail = f" ({'; '.join(errs)})" if errs else ""
    return f"{norm}, {what}, {v['steps']:,} steps: {naive}; {proper}: {verdict}{tail}."


def _plot(rd: RunDir, metrics: dict[str, Any]) -> None:
    fig, axes = new_figure(2, 2, size=(5.0, 3.4))
    colors = {"proper": "tab:blue", "naive": "tab:red"}
    for r in metrics["runs"]:
        h = r["history"]
        if not h["step"]:
            continue
        col = 0 if r["norm"] == "centre" else 1
        style = {"color": colors[r["gradient"]], "ls": "-" if r["train"] == "all" else "--"}
        label = f"{r['gradient']}, {'all params' if r['train'] == 'all' else 'biases only'}"
        pos = [(t, b) for t, b in zip(h["step"], h["bias_norm"], strict=True) if b > 0]
        if pos:  # log scale: the zero biases of step 0 are left out
            axes[0, col].plot(*zip(*pos, strict=True), label=label, **style)
        axes[1, col].plot(h["step"], h["eval_loss"], label=label, **style)
    for col, title in enumerate(("centring: y = x - E[x]", "full BN")):
        axes[0, col].set_title(f"{title}: norm of the biases b", fontsize=10)
        axes[1, col].set_title(f"{title}: evaluation loss", fontsize=10)
        axes[0, col].set_yscale("log")  # the proper bias stays near 0: rounding only
    axes[0, 0].set_ylabel("||b|| (log scale)")
    axes[1, 0].set_ylabel("cross-entropy")
    finish_axes(axes, legend=None)
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, rd.figure("bias_loss"))


@renders
def render(run_dir: str | Path) -> Path:
    """Figure and ``report.md``/``report.html`` from the files of a (possibly partial) run."""
    title = "The naive normalization of Ioffe & Szegedy 2015, section 2 (MNIST)"
    rd, cfg, metrics, rep = run_report(run_dir, title, "run", "training every run")
    rep.heading("What the paper says")
    rep.paragraph(
        "If a gradient step ignores that E[x] depends on the bias b, the update b <- b + db is "
        "cancelled by the normalization (u + b + db - E[u + b + db] = u + b - E[u + b]): the "
        "output and the loss do not change while b grows without bound. The same for the "
        "variance: the paper observed the model blowing up when the statistics are computed "
        "outside the gradient step."
    )
    rep.heading("Setup")
    hidden = "-".join(str(w) for w in cfg["hidden"])
    rep.paragraph(
        f"784-{hidden}-10, each hidden layer Dense (with bias b) -> normalization -> "
        f"{cfg['activation']}; float32, plain SGD, learning rate {cfg['lr']}, batches of "
        f"{cfg['batch_size']}, {int(cfg['steps']):,} steps, seed {cfg['seed']}. Proper: the "
        "gradient through the batch statistics; naive: a stop-gradient on them. The loss is "
        f"measured on a fixed batch of {cfg['eval_examples']} test images. Verdict thresholds: "
        f"naive bias growing at every quarter and x{GROWTH:g} from the first quarter; naive "
        f"loss above {STUCK:g} x its start; proper bias below {SMALL:g} x the naive one."
    )
    rep.heading("Results")
    vs = verdicts(metrics)
    rep.bullets([_sentence(v) for v in vs] or ["No finished pair of runs yet."])
    rows = [
        [
            r["name"],
            r["history"]["step"][-1] if r["history"]["step"] else None,
            f"{r['history']['bias_norm'][-1]:.3g}" if r["history"]["step"] else None,
            r["history"]["eval_loss"][-1] if r["history"]["step"] else None,
            pct(r["history"]["eval_acc"][-1]) if r["history"]["step"] else "—",
            "diverged" if r.get("error") else "",
        ]
        for r in metrics["runs"]
    ]
    rep.table(["run", "step", "bias norm", "eval loss", "eval acc", ""], rows)
    if metrics["runs"]:
        _plot(rd, metrics)
        rep.figure(
            "fig_bias_loss.png",
            "Norm of the biases before the normalization (top) and evaluation loss (bottom); "
            "proper blue, naive red; all parameters trained solid, biases only dashed",
        )
    return rd.write_report(rep)[1]
