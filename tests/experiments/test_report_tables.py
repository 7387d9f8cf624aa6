"""README tables from metrics.json: bnlab.experiments.tables, benchmarks/readme_tables.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bnlab.experiments import get
from bnlab.experiments.tables import (
    cifar10_table,
    covariate_shift_table,
    mnist_sigmoid_table,
    population_stats_table,
    readme_tables,
    renorm_table,
)

ROOT = Path(__file__).resolve().parents[2]
MNIST = {"train_subset": 600, "test_subset": 300, "hidden": [16, 16], "progress": False}


def _mnist_run(net: str, lr: float, seed: int, accs: list[float]) -> dict[str, Any]:
    steps = [0, 5000, 10000, 15000][: len(accs)]
    hist = {"step": steps, "accuracy": accs, "train_loss": [None] * len(accs)}
    hist |= {k: [0.0] * len(accs) for k in ("p15", "p50", "p85")}
    return {"net": net, "lr": lr, "seed": seed, "diverged_at": None, "history": hist}


def test_mnist_table_has_the_readme_columns_seed_range_and_bold_winner() -> None:
    runs = [_mnist_run("plain", 0.1, s, [0.1, 0.9, 0.94, 0.9744 + s / 1e4]) for s in range(3)]
    runs += [_mnist_run("bn", 0.1, s, [0.1, 0.955, 0.97, 0.9788 + s / 1e4]) for s in range(3)]
    table = mnist_sigmoid_table({"steps_total": 15000, "steps_done": 15000, "runs": runs})
    lines = table.splitlines()
    assert lines[0] == (
        "| lr | net | test accuracy at 15k (min-max over 3 seeds) | at 5k steps "
        "| first step at 95% |"
    )
    assert lines[2] == "| 0.1 | without BN | 97.45% (97.44-97.46) | 90.00% | 15,000 |"
    assert lines[3] == "| 0.1 | with BN | **97.89%** (97.88-97.90) | 95.50% | 5,000 |"


def test_mnist_table_with_one_seed_promises_no_range() -> None:
    runs = [_mnist_run("plain", 3.0, 0, [0.1, 0.5]), _mnist_run("bn", 3.0, 0, [0.1, 0.6])]
    table = mnist_sigmoid_table({"steps_total": 5000, "steps_done": 5000, "runs": runs})
    assert "(one seed)" in table and "min-max" not in table
    assert "| 3 | without BN | 50.00% | " in table and "not reached" in table


def _renorm_run(name: str, group: int, acc: float, tm: float) -> dict[str, Any]:
    norm, tag = name.split("-", 1)
    hist = {"step": [0, 5000], "test_acc": [0.1, acc], "train_mode_acc": [0.1, tm]}
    batches = "noniid" if tag == "noniid" else "iid"
    return {"name": name, "norm": norm, "group": group, "batches": batches, "history": hist}


def test_renorm_table_matches_the_readme_layout_in_points() -> None:
    m = {
        "runs": [
            _renorm_run("bn-full", 32, 0.9745, 0.9645),
            _renorm_run("bn-micro4", 4, 0.9458, 0.8428),
            _renorm_run("renorm-micro4", 4, 0.9674, 0.9671),
            _renorm_run("bn-noniid", 32, 0.4987, 0.9377),
            _renorm_run("renorm-noniid", 32, 0.9449, 0.9479),
        ]
    }
    lines = renorm_table(m).splitlines()
    assert lines[0].startswith("| normalization over | BN (inference) | batch renorm (inference)")
    assert lines[2] == "| the whole minibatch of 32 (reference) | 97.45% |  | -1.00 pp |  |"
    assert lines[3] == "| microbatches of 4 | 94.58% | **96.74%** | -10.30 pp | -0.03 pp |"
    assert lines[4].startswith("| non-i.i.d. minibatches (2 classes each) | 49.87% | **94.49%**")
    assert len(lines) == 5


def test_renorm_table_over_seeds_gives_mean_min_max_and_wins() -> None:
    runs = []
    for seed, (bn, rn) in enumerate([(0.50, 0.94), (0.62, 0.95), (0.56, 0.93)]):
        for r in (
            _renorm_run("bn-full", 32, 0.97, 0.96),
            _renorm_run("bn-noniid", 32, bn, 0.93),
            _renorm_run("renorm-noniid", 32, rn, rn + 0.001),
        ):
            runs.append({**r, "seed": seed})
    runs[5]["history"]["test_acc"][-1] = 0.40  # seed 1's renorm-noniid behind its BN (0.62)
    lines = renorm_table({"runs": runs}).splitlines()
    assert lines[0] == (
        "| normalization over (mean, min-max over 3 seeds) | BN (inference) "
        "| batch renorm (inference) | BN train/infer gap | renorm gap | renorm ahead in |"
    )
    assert (
        lines[2] == "| the whole minibatch of 32 (reference) | 97.00% (97.00-97.00) |  "
        "| -1.00 pp (-1.00 to -1.00) |  |  |"
    )
    # BN 0.50/0.62/0.56, renorm 0.94/0.40/0.93: means 56.00% and 75.67%, renorm ahead in 2 of 3
    assert lines[3].startswith(
        "| non-i.i.d. minibatches (2 classes each) | 56.00% (50.00-62.00) "
        "| **75.67%** (40.00-94.00) | +37.00 pp (+31.00 to +43.00) |"
    )
    assert lines[3].endswith("| 2 of 3 |")
    assert len(lines) == 4


def test_cifar_table_merges_per_model_runs_and_algorithm_2() -> None:
    def model(accs: list[float]) -> dict[str, Any]:
        return {"history": {"epoch": list(range(1, len(accs) + 1)), "test_accuracy": accs}}

    base = {"models": {"baseline": model([0.3876, 0.4676])}}
    bn = {"models": {"bn": model([0.5124, 0.6742, 0.6678])}}
    pop = {"rows": [{"epoch": 1, "population_acc": 0.6522}, {"epoch": 2, "population_acc": 0.7222}]}
    lines = cifar10_table([base, bn], pop).splitlines()
    assert (
        lines[0] == "| epoch | Keras baseline | with BN (moving averages) | with BN (Algorithm 2) |"
    )
    assert lines[2] == "| 1 | 38.76% | 51.24% | **65.22%** |"
    assert lines[4] == "| 3 |  | **66.78%** |  |"
    assert "Algorithm 2" not in cifar10_table([base, bn]).splitlines()[0]


def _shift_net(name: str, acc: float, l2: list[float], cos: list[float]) -> dict[str, Any]:
    h = {"step": [0, 10], "test_acc": [0.1, acc], "ics_l2": [l2, l2], "ics_cos": [cos, cos]}
    h |= {"loss_range": [0.2, 0.4], "beta": [3.0, 5.0], "grad_diffs": [[1.0, 2.0], [4.0, 8.0]]}
    return {"name": name, "history": h}


def test_covariate_shift_table_over_seeds_gives_mean_min_max_and_counts() -> None:
    runs = [
        {"nets": [_shift_net("standard", 0.9, [0.3, 0.5], [0.7, 0.9]),
                  _shift_net("bn", 0.95, [0.2, 0.2], [0.9, 0.9])]},
        {"nets": [_shift_net("standard", 0.8, [0.3, 0.3], [0.8, 0.8]),
                  _shift_net("bn", 0.97, [0.4, 0.4], [0.9, 0.9])]},
    ]  # fmt: skip
    lines = covariate_shift_table(runs).splitlines()
    assert lines[0].startswith("| net (mean (min-max) over 2 seeds) | test acc | ICS l2 |")
    # standard: medians 0.4 and 0.3 (l2), 0.8 and 0.8 (cos); loss range 0.3, change 5, beta 4
    assert lines[2] == (
        "| standard | 85.00% (80.00-90.00) | 0.35 (0.3-0.4) | 0.8 (0.8-0.8) | 0.3 (0.3-0.3) "
        "| 5 (5-5) | 4 (4-4) |"
    )
    assert lines[3].startswith("| bn | 96.00% (95.00-97.00) | 0.3 (0.2-0.4) | 0.9 (0.9-0.9) |")
    assert lines[-1] == (
        "BN had a lower ICS l2 than the standard net in 1 of 2 seeds and a higher ICS cosine "
        "in 2 of 2."
    )
    one = covariate_shift_table(runs[:1]).splitlines()
    assert one[0].startswith("| net (one seed) |") and "(" not in one[2].split("|")[2]


def test_population_stats_table() -> None:
    moving = {"0.01": [0.8935, 0.9233], "0.5": [0.91, 0.9316]}
    m = {
        "momenta": ["0.01", "0.5"],
        "history": {"step": [250, 1000], "moving": moving, "population": [0.908, 0.9291]},
    }
    lines = population_stats_table(m).splitlines()
    assert (
        lines[0]
        == "| step | moving averages, momentum 0.01 | moving averages, momentum 0.5 | Algorithm 2 |"
    )
    assert lines[3] == "| 1,000 | 92.33% | **93.16%** | 92.91% |"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tables")
    mnist = {**MNIST, "steps": 10, "eval_every": 5, "lrs": [0.5], "seeds": 2}
    renorm = {**MNIST, "test_subset": 256, "steps": 4, "eval_every": 2, "micro_sizes": [4]}
    lr = {**MNIST, "steps": 10, "eval_every": 5, "multipliers": [1, 5], "seeds": 2}
    return {
        "mnist": get("mnist-sigmoid").run(mnist, root / "mnist"),
        "renorm": get("renorm-small-batch").run(renorm, root / "renorm"),
        "renorm2": get("renorm-small-batch").run({**renorm, "seeds": 2}, root / "renorm2"),
        "lr": get("mnist-lr").run(lr, root / "lr"),
    }


def test_tables_from_smoke_run_directories(smoke: dict[str, Path]) -> None:
    text = readme_tables([smoke["mnist"], smoke["renorm"]])
    m = json.loads((smoke["renorm"] / "metrics.json").read_text())
    for r in m["runs"]:
        assert f"{100 * r['history']['test_acc'][-1]:.2f}%" in text
    assert f"<!-- from {smoke['mnist']} -->" in text
    assert "test accuracy at 10 (min-max over 2 seeds)" in text
    script = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "readme_tables.py"), str(smoke["renorm"])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert script.stdout == readme_tables([smoke["renorm"]])


def test_multi_seed_tables_from_smoke_run_directories(smoke: dict[str, Path]) -> None:
    renorm2, lr = (readme_tables([smoke[k]]).split("\n", 2)[1:] for k in ("renorm2", "lr"))
    assert renorm2[0].startswith("| normalization over (mean, min-max over 2 seeds) |")
    m = json.loads((smoke["renorm2"] / "metrics.json").read_text())
    accs = sorted(r["history"]["test_acc"][-1] for r in m["runs"] if r["name"] == "bn-micro4")
    assert len(accs) == 2 and f"({100 * accs[0]:.2f}-{100 * accs[1]:.2f})" in renorm2[1]
    assert lr[0].startswith("| lr | net | test accuracy at 10 (min-max over 2 seeds) |")
    ml = json.loads((smoke["lr"] / "metrics.json").read_text())
    assert sorted({r["seed"] for r in ml["runs"]}) == [0, 1] and len(ml["runs"]) == 8
    finals = sorted(
        r["history"]["accuracy"][-1]
        for r in ml["runs"]
        if r["net"] == "bn" and r["lr"] == ml["runs"][0]["lr"]
    )
    assert f"({100 * finals[0]:.2f}-{100 * finals[1]:.2f})" in lr[1]


def test_unknown_experiment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"experiment": "nope"}')
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="no README table for experiment 'nope'"):
        readme_tables([tmp_path])
