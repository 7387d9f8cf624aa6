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
    for acc in [*hist["population"], *hist["moving"]["0.01"], *hist["moving"]["0.5"]]:
        assert abs(acc * 200 - round(acc * 200)) < 1e-9  # a count of the 200 test images
    assert metrics["status"] == "complete" and metrics["steps_done"] == 20
    assert (out / "report.md").exists() and (out / "accuracy.csv").exists()
    assert "population (Alg. 2)" in (out / "report.md").read_text()


def test_nets_differ_only_in_their_moving_statistics():
    import numpy as np

    from bnlab.experiments import mnist_common as mc

    cfg = ps.resolve({"steps": 12, "eval_every": 6, "train_subset": 300, "test_subset": 100})
    cfg |= {"recal_examples": 120, "hidden": [8], "momenta": [0.01, 0.5]}
    data = mc.load_data(cfg)
    nets = ps.build_nets(cfg)
    evals = []
    ps.train(nets, cfg, data, lambda step, accs: evals.append((step, accs)))
    assert [s for s, _ in evals] == [6, 12] and all(len(a) == 3 for _, a in evals)
    a, b = nets
    for key in a.params:  # the same weights, bit for bit: BN trains on batch statistics
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    bn_a, bn_b = a.layers[1], b.layers[1]
    assert bn_a.momentum == 0.01 and bn_b.momentum == 0.5
    assert np.abs(bn_a.running_mean - bn_b.running_mean).max() > 1e-3
    # after 12 updates at momentum 0.01 the moving mean is still mostly its initial 0
    assert np.abs(bn_a.running_mean).max() < 0.12 * np.abs(bn_b.running_mean).max()
    # the population accuracy is the one of either net recalibrated (they have the same weights)
    from bnlab.deploy import recompute_population_stats, shuffled_batches
    from bnlab.train import evaluate

    recompute_population_stats(b, shuffled_batches(data[0], 60, limit=120, seed=0))
    assert evaluate(b, data[2], data[3], 2000)["accuracy"] == evals[-1][1][-1]
