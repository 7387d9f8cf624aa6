"""Experiment renorm-small-batch: a smoke run with tiny steps, and its pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnlab import experiments
from bnlab.experiments import renorm_small_batch as rsb

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
    assert rsb.render(out) == out / "report.html"
    assert (out / "report.md").exists()


def test_registered_with_the_experiment_interface():
    module = experiments.get("renorm-small-batch")
    assert module is rsb and isinstance(module.DESCRIPTION, str)
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = vars(parser.parse_args(["--steps", "10", "--micro-sizes", "2", "--no-noniid"]))
    cfg = rsb.resolve_config(args)
    assert [s["name"] for s in rsb.run_specs(cfg)] == ["bn-full", "bn-micro2", "renorm-micro2"]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config keys"):
        rsb.resolve_config({"stepz": 3})
    with pytest.raises(ValueError, match="micro size 5"):
        rsb.resolve_config({"micro_sizes": [5]})


def test_schedule_is_the_papers_scaled_to_the_run():
    sched = rsb.renorm_schedule(rsb.resolve_config({"steps": 50_000}))
    assert sched == {"warmup_steps": 5000, "dmax_steps": 25000, "rmax_steps": 40000}
    cfg = rsb.resolve_config({"steps": 1000})
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
    a, b = iter(rsb.NonIIDBatches(x, y, 32, seed=3)), iter(rsb.NonIIDBatches(x, y, 32, seed=3))
    for _ in range(5):
        (xa, ya), (xb, _) = next(a), next(b)
        np.testing.assert_array_equal(xa, xb)
        classes, counts = np.unique(ya, return_counts=True)
        assert len(classes) == 2 and counts.tolist() == [16, 16]
        np.testing.assert_array_equal(y[xa[:, 0].astype(int)], ya)


def test_train_mode_accuracy_leaves_the_state_untouched(rng):
    cfg = rsb.resolve_config({"hidden": [8]})
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
