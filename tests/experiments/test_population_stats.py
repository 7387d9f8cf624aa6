"""population-stats experiment: a tiny run writes its files; nets differ only in moving stats."""

import json

from bnlab.experiments import available, get
from bnlab.experiments import population_stats as ps


def test_registered():
    assert "population-stats" in available()
    assert get("population-stats") is ps


def test_tiny_run(tmp_path):
    cfg = {"steps": 20, "eval_every": 10, "train_subset": 600, "test_subset": 200}
    cfg |= {"recal_examples": 300, "hidden": [16, 16], "momenta": [0.01, 0.5]}
    out = ps.run(cfg, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    hist = metrics["history"]
    assert hist["step"] == [10, 20]
    assert set(hist["moving"]) == {"0.01", "0.5"}
    for acc in [*hist["population"], *hist["moving"]["0.01"]]:
        assert 0.0 <= acc <= 1.0
    assert (out / "report.md").exists() and (out / "accuracy.csv").exists()
    assert "population (Alg. 2)" in (out / "report.md").read_text()
