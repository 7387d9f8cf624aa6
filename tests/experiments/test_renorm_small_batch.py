"""Experiment renorm-small-batch: a smoke run with tiny steps, its pieces, and the accuracies
it records against an independent NumPy recomputation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnlab import experiments
from bnlab.cli.run import add_options
from bnlab.data.noniid import NonIIDBatches
from bnlab.experiments.renorm_small_batch import report
from bnlab.experiments.renorm_small_batch import run as rsb
from bnlab.experiments.renorm_small_batch.config import RenormConfig, renorm_schedule, run_specs
from bnlab.layers import BatchNorm, Dense, ReLU

TINY = {
    "steps": 6,
    "eval_every": 3,
    "train_subset": 600,
    "test_subset": 256,
    "micro_sizes": [4],
    "hidden": [16, 16],
    "progress": False,
}


def test_smoke_run_writes_metrics_figures_and_report(tmp_path):
    out = rsb.run(dict(TINY), tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    names = [r["name"] for r in metrics["runs"]]
    assert names == ["bn-full", "bn-micro4", "renorm-micro4", "bn-noniid", "renorm-noniid"]
    for r in metrics["runs"]:
        assert r["error"] is None
        h = r["history"]
        assert h["step"] == [0, 3, 6]
        for a in h["test_acc"] + h["train_mode_acc"]:  # counts of the 256 test images
            assert abs(a * 256 - round(a * 256)) < 1e-9, a
    # at step 0 every net has the same weights and the initial moving statistics (0 and 1),
    # with which BN and batch renorm infer alike: the same test accuracy for all five
    assert len({r["history"]["test_acc"][0] for r in metrics["runs"]}) == 1
    # and training changed them: the bn-full net is no longer at its step-0 accuracy or loss
    full = metrics["runs"][0]["history"]
    assert full["train_loss"][2] < full["train_loss"][1]
    for name in ("config.json", "metrics.csv", "fig_accuracy.png", "fig_final.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "74.2%" in md and "76.5%" in md and "renorm-micro4" in md
    assert "<table>" in (out / "report.html").read_text()
    (out / "report.md").unlink()
    report.render(out)
    assert (out / "report.md").exists()


def test_registered_with_the_experiment_interface():
    e = experiments.get("renorm-small-batch")
    assert e.run is rsb.run and e.render is report.render and e.config is RenormConfig
    assert e.single_thread_blas and not e.data_parallel
    import argparse

    parser = argparse.ArgumentParser()
    add_options(parser, e.config.options())
    args = vars(parser.parse_args(["--steps", "10", "--micro-sizes", "2", "--no-noniid"]))
    cfg = RenormConfig.from_dict(args)
    assert [s["name"] for s in run_specs(cfg)] == ["bn-full", "bn-micro2", "renorm-micro2"]
    assert cfg.eval_every == 1 and RenormConfig.from_dict({"steps": 100}).eval_every == 5


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"stepz": 3}, "unknown config keys"),
        ({"micro_sizes": [5]}, "micro size 5 must be >= 2 and divide --batch-size 32"),
        ({"batch_size": 6, "micro_sizes": [4]}, "micro size 4"),
        ({"batch_size": 7}, "--batch-size must be even"),
        ({"warmup_frac": 0.6}, "--warmup-frac <= --dmax-frac"),
        ({"activation": "tanh"}, "--activation must be one of relu, sigmoid, got 'tanh'"),
        ({"test_subset": 20}, "--batch-size 32 is larger than the 60000 training or 20 test"),
    ],
)
def test_config_errors(bad, words, tmp_path):
    with pytest.raises(ValueError, match="renorm-small-batch") as e:
        rsb.run(bad, tmp_path / "run")
    assert words in str(e.value)
    assert not (tmp_path / "run").exists()


def test_schedule_is_the_papers_scaled_to_the_run():
    sched = renorm_schedule(RenormConfig.from_dict({"steps": 50_000}))
    assert sched == {"warmup_steps": 5000, "dmax_steps": 25000, "rmax_steps": 40000}
    cfg = RenormConfig.from_dict({"steps": 1000})
    net = rsb.build_net({"norm": "renorm", "group": 4}, cfg)
    layer = net.layers[1]
    assert layer.virtual_batch_size == 4
    assert (layer.current_rmax(99), layer.current_rmax(800), layer.current_dmax(500)) == (
        1.0,
        3.0,
        5.0,
    )


def test_noniid_batches_hold_two_classes_and_are_seeded():
    y = np.repeat(np.arange(10), 20)
    x = np.arange(200, dtype=np.float32)[:, None]
    a, b = iter(NonIIDBatches(x, y, 32, seed=3)), iter(NonIIDBatches(x, y, 32, seed=3))
    for _ in range(5):
        (xa, ya), (xb, _) = next(a), next(b)
        np.testing.assert_array_equal(xa, xb)
        classes, counts = np.unique(ya, return_counts=True)
        assert len(classes) == 2 and counts.tolist() == [16, 16]
        np.testing.assert_array_equal(y[xa[:, 0].astype(int)], ya)


def test_train_mode_accuracy_leaves_the_state_untouched(rng):
    cfg = RenormConfig.from_dict({"hidden": [8]})
    net = rsb.build_net({"norm": "renorm", "group": 4}, cfg)
    x = rng.normal(size=(64, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    net.forward(x[:32])
    before = {k: np.array(v, copy=True) for k, v in net.buffers.items()}
    acc = rsb.train_mode_accuracy(net, x, y, np.arange(64), chunk=32)
    for k, v in net.buffers.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    # the same as two training-mode forwards of 32, each from the saved state
    correct = 0
    for i in (0, 32):
        net.load_state_dict({**net.state_dict(), **before})
        correct += int(np.sum(np.argmax(net.forward(x[i : i + 32]), axis=1) == y[i : i + 32]))
    net.load_state_dict({**net.state_dict(), **before})
    assert acc == correct / 64
    # groups of 4 are normalized on their own: predictions do not depend on the other groups
    logits = net.forward(x[:8])
    net.load_state_dict({**net.state_dict(), **before})
    np.testing.assert_allclose(net.forward(x[:4]), logits[:4], rtol=1e-5, atol=1e-6)


def _numpy_logits(net, x, group=None):
    """Forward of the Dense -> BN -> ReLU MLP in float64 from its arrays: eval mode (running
    statistics), or with ``group`` training mode (each ``group`` rows normalized by their own
    mean and biased variance, as ghost batches)."""
    h = np.asarray(x, np.float64)
    for layer in net.layers:
        p = {n: np.asarray(v, np.float64) for n, v in layer.params.items()}
        if isinstance(layer, Dense):
            h = h @ p["W"] + p.get("b", 0.0)
        elif isinstance(layer, BatchNorm):
            if group is None:
                mu, var = layer.running_mean, np.asarray(layer.running_var, np.float64)
            else:
                g = h.reshape(-1, group, h.shape[1])
                mu = np.repeat(g.mean(axis=1), group, axis=0)
                var = np.repeat(g.var(axis=1), group, axis=0)
            h = p["gamma"] * (h - mu) / np.sqrt(var + layer.eps) + p["beta"]
        elif isinstance(layer, ReLU):
            h = np.maximum(h, 0)
        else:
            raise AssertionError(f"unexpected layer {layer!r}")
    return h


@pytest.mark.parametrize("spec_name", ["bn-full", "bn-micro4"])
def test_recorded_accuracies_match_a_numpy_recomputation(spec_name):
    from bnlab.data import load_mnist

    cfg = RenormConfig.from_dict({**TINY, "steps": 8, "eval_every": 4})
    spec = next(s for s in run_specs(cfg) if s["name"] == spec_name)
    (xtr, ytr), (xte, yte) = load_mnist()
    xtr = xtr[:600].reshape(600, -1).astype(np.float32) / np.float32(255)
    xte = xte[:256].reshape(256, -1).astype(np.float32) / np.float32(255)
    data = (xtr, ytr[:600].astype(np.int64), xte, yte[:256].astype(np.int64))
    state = rsb.train_one(spec, cfg, data)
    last = state.history[-1]
    assert [row["step"] for row in state.history] == [0, 4, 8]
    assert last["test_acc"] == np.mean(_numpy_logits(state.model, xte).argmax(1) == data[3])
    order = rsb.train_mode_order(spec, data[3], 32, seed=0)
    assert len(order) == 256 and len(set(order.tolist())) == 256  # i.i.d.: each image once
    pred = _numpy_logits(state.model, xte[order], group=spec["group"]).argmax(1)
    assert last["train_mode_acc"] == np.mean(pred == data[3][order])
    # with groups of 4 the training-mode accuracy is not the inference one (the gap measured)
    if spec_name == "bn-micro4":
        assert last["train_mode_acc"] != last["test_acc"]


def test_seeds_repeat_every_run_and_seed_0_trains_as_a_one_seed_run(tmp_path):
    one = rsb.run(dict(TINY), tmp_path / "one")
    two = rsb.run({**TINY, "seeds": 2}, tmp_path / "two")
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    # one seed: the entries and config.json keys as before the option (no "seed"/"seeds")
    assert all("seed" not in r for r in m1["runs"])
    assert "seeds" not in json.loads((one / "config.json").read_text())
    assert json.loads((two / "config.json").read_text())["seeds"] == 2
    names = [r["name"] for r in m1["runs"]]
    assert [(r["name"], r["seed"]) for r in m2["runs"]] == [(n, s) for s in (0, 1) for n in names]
    seed0 = [
        {k: v for k, v in r.items() if k not in ("seed", "time_s", "compile_s")}
        for r in m2["runs"][:5]
    ]
    assert seed0 == [
        {k: v for k, v in r.items() if k not in ("time_s", "compile_s")} for r in m1["runs"]
    ]
    # seed 1: other weights and batches, so other losses
    for a, b in zip(m2["runs"][:5], m2["runs"][5:], strict=True):
        assert a["history"]["train_loss"][1:] != b["history"]["train_loss"][1:]
    md = (two / "report.md").read_text()
    assert "2 seeds (0-1)" in md and "bn-full seed 1" in md and "renorm ahead in" in md
    assert "Means over 2 seeds" in md and "One seed" not in md
    assert "bn-full seed 1" in (two / "metrics.csv").read_text()


def test_seeds_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        rsb.run({**TINY, "seeds": 0}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_findings_say_in_how_many_seeds_renorm_is_ahead():
    fin = {
        "bn-full": {"acc": [0.97, 0.96], "tm": [0.96, 0.95], "gap": [-0.01, -0.01]},
        "bn-noniid": {"acc": [0.5, 0.7], "tm": [0.9, 0.9], "gap": [0.4, 0.2]},
        "renorm-noniid": {"acc": [0.9, 0.6], "tm": [0.9, 0.6], "gap": [0.0, 0.0]},
    }
    text = report.findings(fin, 5000)
    assert "Reference (BN over the whole minibatch): 96.50% (96.00% to 97.00%)." in text
    assert "noniid: BN 60.00% (50.00% to 70.00%) (gap +30.00 pp (+20.00 pp to +40.00 pp))" in text
    assert (
        "renorm minus BN +15.00 pp (-10.00 pp to +40.00 pp), renorm ahead in 1 of 2 seeds" in text
    )
