"""population-stats: a tiny run writes its files; the nets differ only in their moving
statistics (checked on every parameter and buffer), and every accuracy it reports equals an
independent NumPy recomputation (eval-mode MLP forward; Algorithm 2 by hand)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from bnlab.experiments import available, get
from bnlab.experiments.mnist.nets import load_data
from bnlab.experiments.population_stats import run as ps
from bnlab.experiments.population_stats.config import StatsConfig
from bnlab.layers import BatchNorm, Dense, Sigmoid


def test_registered():
    assert "population-stats" in available()
    assert get("population-stats").run is ps.run and not get("population-stats").data_parallel


def test_tiny_run(tmp_path):
    cfg = {"steps": 20, "eval_every": 10, "train_subset": 600, "test_subset": 200}
    cfg |= {"recal_examples": 300, "hidden": [16, 16], "momenta": [0.01, 0.5]}
    out = ps.run(cfg, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    hist = metrics["history"]
    assert hist["step"] == [10, 20]
    assert set(hist["moving"]) == {"0.01", "0.5"}
    for acc in [*hist["population"], *hist["moving"]["0.01"], *hist["moving"]["0.5"]]:
        assert abs(acc * 200 - round(acc * 200)) < 1e-9  # a count of the 200 test images
    assert metrics["status"] == "complete" and metrics["steps_done"] == 20
    assert (out / "report.md").exists() and (out / "accuracy.csv").exists()
    assert "population (Alg. 2)" in (out / "report.md").read_text()
    saved = json.loads((out / "config.json").read_text())
    assert saved["eval_every"] == 10 and saved["experiment"] == "population-stats"
    assert StatsConfig.from_dict(saved).momenta == [0.01, 0.5]  # config.json reads back


def _numpy_logits(net, x, stats=None):
    """Eval-mode forward of a Dense/BatchNorm/Sigmoid MLP in float64, from its arrays alone;
    ``stats`` (one (mean, var) per BN layer) replaces the running statistics."""
    h = np.asarray(x, np.float64)
    k = 0
    for layer in net.layers:
        p = {n: np.asarray(v, np.float64) for n, v in layer.params.items()}
        if isinstance(layer, Dense):
            h = h @ p["W"] + p.get("b", 0.0)
        elif isinstance(layer, BatchNorm):
            mean, var = stats[k] if stats else (layer.running_mean, layer.running_var)
            h = p["gamma"] * (h - mean) / np.sqrt(np.asarray(var, np.float64) + layer.eps)
            h = h + p["beta"]
            k += 1
        elif isinstance(layer, Sigmoid):
            h = 1 / (1 + np.exp(-h))
        else:
            raise AssertionError(f"unexpected layer {layer!r}")
    return h


def _numpy_population(net, x, m, limit, seed):
    """Algorithm 2 by hand: batch means and biased variances averaged over the batches of a
    seeded draw, the variance times m/(m-1)."""
    order = np.random.default_rng(seed).permutation(len(x))[: limit - limit % m]
    per_layer: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i in range(0, len(order), m):
        h = np.asarray(x[order[i : i + m]], np.float64)
        k = 0
        for layer in net.layers:
            p = {n: np.asarray(v, np.float64) for n, v in layer.params.items()}
            if isinstance(layer, Dense):
                h = h @ p["W"] + p.get("b", 0.0)
            elif isinstance(layer, BatchNorm):
                mu, var = h.mean(axis=0), h.var(axis=0)
                per_layer.setdefault(k, []).append((mu, var))
                h = p["gamma"] * (h - mu) / np.sqrt(var + layer.eps) + p["beta"]
                k += 1
            elif isinstance(layer, Sigmoid):
                h = 1 / (1 + np.exp(-h))
    return [
        (np.mean([mu for mu, _ in s], axis=0), m / (m - 1) * np.mean([v for _, v in s], axis=0))
        for _, s in sorted(per_layer.items())
    ]


def test_nets_differ_only_in_their_moving_statistics_and_accuracies_are_recomputed():
    cfg = StatsConfig.from_dict(
        {"steps": 12, "eval_every": 6, "train_subset": 300, "test_subset": 100,
         "recal_examples": 120, "hidden": [8, 8], "momenta": [0.01, 0.5]}
    )  # fmt: skip
    data = load_data(cfg.train_subset, cfg.test_subset)
    nets = ps.build_nets(cfg)
    evals, snapshots = [], []

    def on_eval(step, accs):
        evals.append((step, accs))
        snapshots.append(copy.deepcopy(nets))

    states = ps.train(nets, cfg, data, on_eval)
    assert [s for s, _ in evals] == [6, 12] and all(len(a) == 3 for _, a in evals)
    assert [st.step for st in states] == [12, 12]
    a, b = nets
    # the same weights, bit for bit (BN trains on batch statistics), and every buffer that is
    # not a moving statistic equal too; the moving statistics differ in every BN layer
    assert set(a.params) == set(b.params) and set(a.buffers) == set(b.buffers)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    moving = {k for k in a.buffers if k.endswith(("running_mean", "running_var"))}
    assert len(moving) == 4  # two BN layers
    for key in set(a.buffers) - moving:
        np.testing.assert_array_equal(a.buffers[key], b.buffers[key], err_msg=key)
    for key in moving:
        assert np.abs(a.buffers[key] - b.buffers[key]).min() > 0, key
    bns = [la for la in a.layers if isinstance(la, BatchNorm)]
    assert [int(la.num_batches_tracked) for la in bns] == [12, 12]
    assert [la.momentum for la in (a.layers[1], b.layers[1])] == [0.01, 0.5]
    # every reported accuracy, recomputed from the nets' arrays at that evaluation
    xtr, _, xte, yte = data
    for (step, accs), snap in zip(evals, snapshots, strict=True):
        for net, acc in zip(snap, accs[:-1], strict=True):
            assert acc == np.mean(_numpy_logits(net, xte).argmax(1) == yte), step
        stats = _numpy_population(snap[1], xtr, 60, 120, seed=0)  # either net: same weights
        assert accs[-1] == np.mean(_numpy_logits(snap[0], xte, stats).argmax(1) == yte), step
    # and the accuracies are not all alike: the check above can tell them apart
    assert len({round(x, 6) for _, accs in evals for x in accs}) > 1


def test_config_is_checked_whole_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="--recal-examples 10 >= --batch-size"):
        ps.run({"recal_examples": 10}, tmp_path / "run")
    with pytest.raises(ValueError, match="unknown config keys \\['momentaa'\\]"):
        StatsConfig.from_dict({"momentaa": [0.1]})
    assert not (tmp_path / "run").exists()
    assert StatsConfig.from_dict({"steps": 7}).eval_every == 1  # steps // 10, at least 1
