"""What the reports say: no seed bands for one seed, no confident words for short runs,
differences judged against the seed spread, points (pp) for gaps, derived step counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnlab.experiments.mnist.report import short_run_note
from bnlab.experiments.mnist_sigmoid import claims as sr
from bnlab.experiments.mnist_sigmoid.config import MnistSigmoidConfig
from bnlab.experiments.mnist_sigmoid.report import readme_paragraph, render_full
from bnlab.experiments.population_stats import report as pr
from bnlab.experiments.renorm_small_batch import report as rr
from bnlab.experiments.rundir import RunDir, write_json

CFG: dict[str, Any] = {
    "experiment": "mnist-sigmoid",
    "hidden": [100, 100, 100],
    "init_std": 0.1,
    "batch_size": 60,
    "seed": 0,
    "bn_momentum": 0.1,
    "bn_eps": 1e-5,
    "test_subset": None,
    "train_subset": None,
    "monitor_unit": 0,
    "sweep": False,
}


def _cfg(d: dict[str, Any]) -> MnistSigmoidConfig:
    return MnistSigmoidConfig.from_dict(d)


def _run(net: str, lr: float, seed: int, steps: list[int], accs: list[float]) -> dict[str, Any]:
    n = len(steps)
    hist = {"step": steps, "accuracy": accs, "train_loss": [None] * n}
    hist |= {"p15": [-1.0] * n, "p50": [0.01 * i for i in range(n)], "p85": [1.0] * n}
    return {"net": net, "lr": lr, "seed": seed, "diverged_at": None, "error": None, "history": hist}


def _metrics(runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    return {"status": "complete", "steps_done": steps, "steps_total": steps, "runs": runs}


def test_a_short_one_seed_run_is_not_judged_and_promises_no_band(tmp_path: Path) -> None:
    steps = list(range(11))
    runs = [
        _run("plain", 0.5, 0, steps, [0.1] * 10 + [0.12]),
        _run("bn", 0.5, 0, steps, [0.1] * 10 + [0.2]),
    ]
    cfg = {**CFG, "steps": 10, "seeds": 1, "eval_every": 1, "lrs": [0.5]}
    m = _metrics(runs, 10)
    text = sr.advantage_sentence(m, 0.5)
    assert "too early to judge" in text and "one seed: no spread" in text
    assert "large" not in text and "+8.00 pp" in text and "20.00%" in text
    render_full(RunDir(tmp_path), MnistSigmoidConfig.from_dict(cfg), m)
    md = (tmp_path / "report.md").read_text()
    assert "band: min-max" not in md and "min–max" not in md and "over seeds" not in md
    assert "(so no min-max band)" in md
    assert "final test acc (one seed)" in md and "never" not in md
    assert "After every step" in md and "Every 1 steps" not in md
    assert "Beside the README" in md and "10 steps instead of 50,000" in md
    assert "1 seed instead of 3" in md


def test_gains_are_judged_against_the_seed_spread() -> None:
    steps = [0, 100, 1000]

    def runs(lr: float, plain: list[float], bn: list[float]) -> list[dict[str, Any]]:
        out = [_run("plain", lr, s, steps, [0.1, 0.9, v]) for s, v in enumerate(plain)]
        return out + [_run("bn", lr, s, steps, [0.1, 0.95, v]) for s, v in enumerate(bn)]

    m = _metrics(
        runs(0.1, [0.97, 0.972], [0.985, 0.987]) + runs(3.0, [0.979, 0.981], [0.98, 0.982]), 1000
    )
    clear = sr.advantage_sentence(m, 0.1)
    assert "large at the end" in clear and "every BN seed above every plain seed" in clear
    overlap = sr.advantage_sentence(m, 3.0)
    assert "within the seed spread at the end" in overlap and "+0.10 pp" in overlap
    rows = sr.comparison_rows(m, [0.1, 3.0])
    assert rows[0][1].startswith("agrees:") and "within the seed spread" in rows[0][2]


def test_the_demo_report_says_how_it_relates_to_the_readme() -> None:
    steps = [0, 5000, 6000]
    m = _metrics([_run("plain", 0.1, 0, steps, [0.1, 0.913, 0.92]),
                  _run("bn", 0.1, 0, steps, [0.1, 0.9523, 0.96])], 6000)  # fmt: skip
    text = readme_paragraph(_cfg({**CFG, "steps": 6000, "seeds": 1, "lrs": [0.1, 3.0]}), m)
    assert "--steps 50000 --seeds 3" in text and "6,000 steps instead of 50,000" in text
    assert "column at 5,000 steps" in text and "95.23%" in text and "91.30%" in text
    steps = [0, 4980, 5040, 6000]  # the demo: evaluated every 60 steps, 5,000 is not among them
    m = _metrics([_run("plain", 0.1, 0, steps, [0.1, 0.913, 0.914, 0.92]),
                  _run("bn", 0.1, 0, steps, [0.1, 0.9523, 0.953, 0.96])], 6000)  # fmt: skip
    text = readme_paragraph(_cfg({**CFG, "steps": 6000, "seeds": 1, "lrs": [0.1, 3.0]}), m)
    assert "at step 4,980, the evaluation nearest 5,000: lr 0.1 with BN 95.23%" in text
    same = readme_paragraph(_cfg({**CFG, "steps": 50000, "seeds": 3, "lrs": [0.1, 3.0]}), m)
    assert same.startswith("This is the README's run")


def _renorm_metrics(acc: float) -> dict[str, Any]:
    def run(name: str, group: int, a: float, tm: float) -> dict[str, Any]:
        hist = {"step": [0, 6], "test_acc": [0.1, a], "train_mode_acc": [0.1, tm],
                "train_loss": [None, 2.0]}  # fmt: skip
        norm = name.split("-")[0]
        return {"name": name, "norm": norm, "group": group, "batches": "iid", "time_s": 70.4,
                "error": None, "history": hist}  # fmt: skip

    runs = [run("bn-full", 32, acc, acc - 0.01), run("bn-micro4", 4, acc - 0.02, acc - 0.1),
            run("renorm-micro4", 4, acc - 0.01, acc - 0.0103)]  # fmt: skip
    return {"status": "complete", "wall_time_s": 80.0, "runs": runs,
            "schedule": {"warmup_steps": 1, "dmax_steps": 3, "rmax_steps": 5}}  # fmt: skip


def test_renorm_report_uses_points_derived_steps_and_the_compile_caveat(tmp_path: Path) -> None:
    cfg = {"experiment": "renorm-small-batch", "hidden": [16], "activation": "relu", "lr": 0.02,
           "batch_size": 32, "steps": 6, "seed": 0, "momentum": 0.01, "eps": 1e-3, "rmax": 3.0,
           "dmax": 5.0, "warmup_frac": 0.1, "dmax_frac": 0.5, "rmax_frac": 0.8}  # fmt: skip
    write_json(tmp_path / "config.json", cfg)
    write_json(tmp_path / "metrics.json", _renorm_metrics(0.2))
    rr.render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "-1.00 pp" in md and "-8.00 pp" in md and "renorm minus BN +1.00 pp" in md
    assert "after 6 steps" in md and "a few thousand" not in md
    assert "plain BN for 1 step, dmax 0 -> 5.0 by step 3" in md
    assert "compiling their Numba kernels" in md and "too short to judge" in md
    assert "One seed: no spread" in md
    m = _renorm_metrics(0.97)
    for r, compiling in zip(m["runs"], [56.2, 0.1, 30.0], strict=True):
        r["compile_s"] = compiling
    write_json(tmp_path / "metrics.json", m)
    rr.render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "too short" not in md
    assert "| bn-full | 32 | iid | 97.00% | 96.00% | -1.00 pp | 14 |" in md  # 70.4 - 56.2 s
    assert "without the time Numba spent compiling" in md
    assert "bn-full 56 s, renorm-micro4 30 s)" in md


def test_population_stats_report_has_status_wall_time_and_a_conclusion(tmp_path: Path) -> None:
    cfg = {"experiment": "population-stats", "hidden": [16], "lr": 0.5, "batch_size": 60,
           "steps": 20, "seed": 0, "recal_examples": 300, "momenta": [0.01, 0.5]}  # fmt: skip
    hist = {"step": [10, 20], "moving": {"0.01": [0.9, 0.95], "0.5": [0.93, 0.96]},
            "population": [0.935, 0.9601]}  # fmt: skip
    metrics = {"experiment": "population-stats", "status": "interrupted", "steps_done": 20,
               "wall_time_s": 12.3, "momenta": ["0.01", "0.5"], "history": hist}  # fmt: skip
    write_json(tmp_path / "config.json", cfg)
    write_json(tmp_path / "metrics.json", metrics)
    pr.render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Status: **interrupted** after 20 of 20 steps, wall time 12 s" in md
    assert "partial run" in md and "## Conclusion" in md
    assert "as good as the best moving average, not better" in md  # +0.01 pp
    assert "3.50 pp below Algorithm 2" in md and "+0.50 pp" in md
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"


def test_short_run_note_only_for_untrained_runs() -> None:
    steps = [0, 4, 8]
    short = _metrics([_run("plain", 3.0, 0, steps, [0.1, 0.1, 0.11]),
                      _run("bn", 3.0, 0, steps, [0.1, 0.15, 0.2])], 8)  # fmt: skip
    note = short_run_note(short)
    assert note is not None and "Too short to judge" in note and "(best 20.00%)" in note
    trained = _metrics([_run("plain", 3.0, 0, steps, [0.1, 0.5, 0.11]),
                        _run("bn", 3.0, 0, steps, [0.1, 0.9, 0.95])], 8)  # fmt: skip
    assert short_run_note(trained) is None
    assert short_run_note(_metrics([], 0)) is None
