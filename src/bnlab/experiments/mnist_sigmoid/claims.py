"""The paper's claims (Ioffe & Szegedy 2015, section 4.1, Figure 1) against an
``mnist-sigmoid`` run, and how a difference between the nets is judged.

A difference is judged against the spread of the seeds when there are several, and a run whose
nets are not trained yet (neither above :data:`~bnlab.experiments.report.TRAINED` test
accuracy) is too short to judge. Everything reads the ``metrics.json`` dict of
:mod:`bnlab.experiments.mnist.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

from bnlab.experiments.mnist.metrics import first_step_reaching, summarize
from bnlab.experiments.report import TRAINED, pct, pp

__all__ = [
    "PAPER_SOURCE",
    "advantage_sentence",
    "comparison_rows",
    "judge",
    "size_word",
    "versus_seeds",
]

PAPER_SOURCE = (
    "Ioffe & Szegedy (2015), *Batch Normalization: Accelerating Deep Network Training by "
    "Reducing Internal Covariate Shift*, section 4.1, Figure 1"
)


def size_word(points: float, large: float, moderate: float) -> str:
    """ "large", "moderate", "small" or "none/negative" for a gain in percentage points."""
    if not math.isfinite(points) or points <= 0:
        return "none (BN is not ahead)"
    return "large" if points >= large else ("moderate" if points >= moderate else "small")


def versus_seeds(bn: list[float], plain: list[float]) -> str:
    """How BN's per-seed accuracies lie against the plain net's: the seed spread's verdict."""
    bn = [v for v in bn if math.isfinite(v)]
    plain = [v for v in plain if math.isfinite(v)]
    if len(bn) < 2 or len(plain) < 2:
        return "one seed: no spread"
    if min(bn) > max(plain):
        return "every BN seed above every plain seed"
    if max(bn) < min(plain):
        return "every BN seed below every plain seed"
    return "within the seed spread: the seeds' ranges overlap"


def judge(metrics: dict[str, Any], lr: float) -> dict[str, Any]:
    """BN against plain at ``lr``: the two summaries, gains (fractions), their seed verdicts,
    size words (early: >= 3 pp large, >= 1 moderate; final: >= 1 pp large, >= 0.3 moderate;
    "within the seed spread" when the seeds' ranges overlap) and whether the nets are trained."""
    p, b = summarize(metrics, lr, "plain"), summarize(metrics, lr, "bn")
    out: dict[str, Any] = {"plain": p, "bn": b}
    for when, key, seeds, large, moderate in (
        ("early", "early_acc", "early_seeds", 3, 1),
        ("final", "final_mean", "finals", 1, 0.3),
    ):
        gain = b[key] - p[key]
        seen = versus_seeds(b[seeds], p[seeds])
        size = (
            "within the seed spread"
            if seen.startswith("within")
            else size_word(100 * gain, large, moderate)
        )
        out[when] = {"gain": gain, "seeds": seen, "size": size}
    best = max(p["final_mean"], b["final_mean"]) if b["n_seeds"] and p["n_seeds"] else math.nan
    out["best"] = best
    out["trained"] = math.isfinite(best) and best >= TRAINED
    return out


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
    if b["early_step"] is None or p["early_step"] is None:  # failed before an evaluation
        return f"**lr = {lr:g}: nothing to judge:** the run ended before its first evaluation."
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
    if b["early_step"] is None or p["early_step"] is None:  # failed before an evaluation
        return "not judged: the run ended before its first evaluation"
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
