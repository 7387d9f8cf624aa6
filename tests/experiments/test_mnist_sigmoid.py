"""Experiment mnist-sigmoid on a subset of MNIST with few steps."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bnlab.experiments import get
from bnlab.experiments.mnist import nets, training
from bnlab.experiments.mnist.metrics import first_step_reaching, summarize
from bnlab.experiments.mnist_sigmoid import run as mnist_sigmoid
from bnlab.experiments.mnist_sigmoid.claims import size_word
from bnlab.experiments.mnist_sigmoid.config import MnistSigmoidConfig
from bnlab.experiments.mnist_sigmoid.report import suggest_rates
from bnlab.experiments.rundir import RunDir
from bnlab.layers import BatchNorm, Dense, Sigmoid
from bnlab.train import layer_input

TINY: dict[str, Any] = {
    "steps": 12,
    "eval_every": 5,
    "train_subset": 600,
    "test_subset": 300,
    "hidden": [32, 32, 32],
    "lrs": [0.5],
    "progress": False,
}


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def check_schema(m: dict[str, Any], n_runs: int, steps: list[int]) -> None:
    """The metrics.json schema documented in bnlab.experiments.mnist.metrics."""
    assert m["schema"] == "bnlab.mnist.metrics/1"
    assert m["status"] in {"running", "complete", "interrupted", "failed"}
    assert isinstance(m["steps_done"], int) and isinstance(m["steps_total"], int)
    assert isinstance(m["wall_time_s"], float)
    assert len(m["runs"]) == n_runs
    for r in m["runs"]:
        assert set(r) == {"name", "net", "lr", "seed", "diverged_at", "error", "time_s", "history"}
        assert r["net"] in {"plain", "bn"} and isinstance(r["seed"], int)
        assert re.fullmatch(r"(plain|bn)-lr[0-9.e+-]+-seed\d+", r["name"])
        h = r["history"]
        assert set(h) == {"step", "train_loss", "accuracy", "p15", "p50", "p85"}
        assert h["step"] == steps
        assert all(len(v) == len(steps) for v in h.values())
        assert h["train_loss"][0] is None  # no training before step 0
        assert all(0 <= a <= 1 for a in h["accuracy"])
        assert all(a <= b <= c for a, b, c in zip(h["p15"], h["p50"], h["p85"], strict=True))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mnist_sigmoid.run({**TINY, "seeds": 2}, tmp_path_factory.mktemp("run"))


def test_registry_finds_the_modules() -> None:
    e = get("mnist-sigmoid")
    assert e.run is mnist_sigmoid.run and e.config is MnistSigmoidConfig
    assert e.data_parallel and e.single_thread_blas
    with pytest.raises(ValueError, match="known experiments: .*mnist-sigmoid"):
        get("mnist-sigmoid2")


def test_files_schema_and_report(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    check_schema(m, n_runs=4, steps=[0, 5, 10, 12])
    assert m["status"] == "complete" and m["steps_done"] == 12
    assert {(r["net"], r["seed"]) for r in m["runs"]} == {
        (n, s) for n in ("plain", "bn") for s in (0, 1)
    }
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["init_std"] == 0.1 and cfg["batch_size"] == 60 and cfg["seeds"] == 2
    csv_lines = (tiny_run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "run,net,lr,seed,step,train_loss,accuracy,p15,p50,p85"
    assert len(csv_lines) == 1 + 4 * 4
    for fig in ("fig_accuracy.png", "fig_percentiles.png"):
        check_png(tiny_run / fig)
    html = (tiny_run / "report.html").read_text()
    assert 'src="fig_accuracy.png"' in html and 'src="fig_percentiles.png"' in html
    md = (tiny_run / "report.md").read_text()
    assert "population (running) statistics" in md
    assert "(fig_percentiles.png)" in md and "Paper vs this run" in md
    assert "| 0.5 | with BN |" in md  # the final-numbers table


def test_same_seed_gives_identical_metrics(tiny_run: Path, tmp_path: Path) -> None:
    again = mnist_sigmoid.run({**TINY, "seeds": 2}, tmp_path)
    a = json.loads((tiny_run / "metrics.json").read_text())["runs"]
    b = json.loads((again / "metrics.json").read_text())["runs"]
    assert [r["history"] for r in a] == [r["history"] for r in b]
    # and another seed gives other numbers
    other = mnist_sigmoid.run({**TINY, "seed": 5}, tmp_path / "other")
    c = json.loads((other / "metrics.json").read_text())["runs"]
    assert c[0]["history"]["accuracy"] != a[0]["history"]["accuracy"]


def test_nets_share_weights_and_have_the_paper_structure() -> None:
    cfg = MnistSigmoidConfig.from_dict()
    plain = nets.build_net(False, 3, cfg.hidden, cfg.init_std)
    bn = nets.build_net(True, 3, cfg.hidden, cfg.init_std, cfg.bn_momentum, cfg.bn_eps)
    kinds = [type(layer) for layer in bn.layers]
    assert kinds == [Dense, BatchNorm, Sigmoid] * 3 + [Dense]
    assert [type(layer) for layer in plain.layers] == [Dense, Sigmoid] * 3 + [Dense]
    dense_p = [layer for layer in plain.layers if isinstance(layer, Dense)]
    dense_b = [layer for layer in bn.layers if isinstance(layer, Dense)]
    for p, b in zip(dense_p, dense_b, strict=True):
        np.testing.assert_array_equal(p.params["W"], b.params["W"])
    assert [d.params["W"].shape for d in dense_p] == [(784, 100), (100, 100), (100, 100), (100, 10)]
    assert all("b" not in d.params for d in dense_b[:3]) and "b" in dense_b[3].params
    assert abs(float(np.std(dense_p[0].params["W"])) - 0.1) < 0.002
    assert nets.last_sigmoid_index(bn) == 8
    assert nets.last_sigmoid_index(plain) == 5


def test_recorded_percentiles_are_numpys_of_the_final_model(tmp_path: Path) -> None:
    cfg = MnistSigmoidConfig.from_dict({**TINY, "monitor_unit": 7})
    data = nets.load_data(cfg.train_subset, cfg.test_subset)
    runs = training.make_runs(cfg, [0.5], data)
    for r in runs:
        r.trainer.begin()
    training.train_lockstep(cfg, runs, RunDir(tmp_path))
    xte = data[2]
    assert xte.dtype == np.float32 and 0 <= xte.min() and xte.max() <= 1  # scaled to [0, 1]
    for r in runs:
        model = r.trainer.model
        h = layer_input(model, xte, nets.last_sigmoid_index(model))[:, 7]
        last = r.trainer.state.history[-1]
        np.testing.assert_allclose(
            [last["p15"], last["p50"], last["p85"]],
            np.percentile(h, [15, 50, 85]),
            rtol=0,
            atol=1e-6 * float(np.abs(h).max()),  # float32 rounding: the monitor's eval batches
        )


def test_a_diverging_run_is_recorded_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = MnistSigmoidConfig.from_dict(TINY)
    runs = training.make_runs(cfg, [0.5], nets.load_data(cfg.train_subset, cfg.test_subset))
    plain = runs[0].trainer
    step = type(plain).train_step

    def boom(x: np.ndarray, y: np.ndarray) -> float:
        if plain.state.step == 6:
            raise FloatingPointError("loss is nan at step 7")
        return step(plain, x, y)

    monkeypatch.setattr(plain, "train_step", boom)
    for r in runs:
        r.trainer.begin()
    m = training.train_lockstep(cfg, runs, RunDir(tmp_path))
    assert m["runs"][0]["diverged_at"] == 7 and "nan" in m["runs"][0]["error"]
    assert m["runs"][0]["history"]["step"] == [0, 5]
    assert m["runs"][1]["diverged_at"] is None
    assert m["runs"][1]["history"]["step"] == [0, 5, 10, 12]


def test_sweep_mode(tmp_path: Path) -> None:
    out = mnist_sigmoid.run(
        {**TINY, "sweep": True, "sweep_lrs": [0.05, 2.0], "sweep_steps": 10}, tmp_path
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps_total"] == 10 and {r["lr"] for r in m["runs"]} == {0.05, 2.0}
    check_png(out / "fig_sweep.png")
    assert "Best rate for the plain net" in (out / "report.md").read_text()


def test_suggest_rates_and_summaries() -> None:
    def run(net: str, lr: float, accs: list[float]) -> dict[str, Any]:
        n = len(accs)
        hist = {
            "step": list(range(0, 10 * n, 10)),
            "accuracy": accs,
            "train_loss": [None] * n,
            "p15": [-1.0] * n,
            "p50": [0.0] * n,
            "p85": [1.0] * n,
        }
        return {"net": net, "lr": lr, "seed": 0, "diverged_at": None, "history": hist}

    m = {
        "steps_total": 30,
        "runs": [
            run("plain", 0.1, [0.1, 0.5, 0.6, 0.7]),
            run("bn", 0.1, [0.1, 0.9, 0.95, 0.96]),
            run("plain", 1.0, [0.1, 0.8, 0.9, 0.97]),
            run("bn", 1.0, [0.1, 0.95, 0.97, 0.98]),
            run("plain", 3.0, [0.1, 0.8, 0.9, 0.95]),
            run("bn", 3.0, [0.1, 0.95, 0.97, 0.98]),
        ],
    }
    assert suggest_rates(m) == {"best": 1.0, "slow": 0.1}
    s = summarize(m, 0.1, "bn")
    assert s["final_mean"] == 0.96 and s["steps_to_95"] == 20 and s["early_acc"] == 0.9
    assert s["p50_range"] == 0.0 and s["spread_last"] == 2.0
    assert first_step_reaching(np.array([0, 10]), np.array([0.2, np.nan]), 0.5) is None


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="unknown config keys \\['stepz'\\]"):
        MnistSigmoidConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="every --lr value must be a finite number > 0, got -1.0"):
        MnistSigmoidConfig.from_dict({"lrs": [0.1, -1.0]})
    with pytest.raises(ValueError, match="--init-std must be a finite number > 0, got 0"):
        MnistSigmoidConfig.from_dict({"init_std": 0})
    assert MnistSigmoidConfig.from_dict({"steps": 50_000}).eval_every == 500


def test_advantage_size_classifies_gains_and_refuses_to_call_a_loss_an_advantage() -> None:
    _size = size_word
    assert _size(4.0, 3, 1) == "large"
    assert _size(1.5, 3, 1) == "moderate"
    assert _size(0.2, 3, 1) == "small"
    assert _size(0.0, 3, 1).startswith("none")
    assert _size(-2.0, 3, 1).startswith("none")
    assert _size(float("nan"), 3, 1).startswith("none")
