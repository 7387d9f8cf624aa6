"""scale-invariance: the exact equality of the trajectories (float64, eps scaled), the growth of
the norm, and short runs of the experiment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bnlab.experiments.scale_invariance.config import ScaleConfig, net_specs
from bnlab.experiments.scale_invariance.run import Net, prob_diffs

# the helpers shared by the test_claims_* files (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location(
    "claims_helpers", Path(__file__).with_name("claims_helpers.py")
)
assert _spec is not None and _spec.loader is not None
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def _trajectories(a: float, steps: int = 20) -> dict[str, float]:
    """Largest |p - p_ref| over ``steps`` SGD steps of every net at scale ``a``."""
    cfg = ScaleConfig.from_dict({"hidden": [16, 12], "scales": [a], "lr": 0.2, "batch_size": 32})
    nets = {s["name"]: Net(s, cfg) for s in net_specs(cfg)}
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = rng.random((32, 784)), rng.integers(0, 10, size=32)
        probs = {name: net.step(x, y) for name, net in nets.items()}
        scaled = [net for net in nets.values() if net.spec["ref"]]
        for net, diff in zip(scaled, prob_diffs(scaled, probs), strict=True):
            net.compare(diff)
    return {n: net.entry["max_prob_diff"] for n, net in nets.items() if net.spec["ref"]} | {
        "decreases": sum(nets["bn"].entry["norm_decreases"]),
    }


@pytest.mark.parametrize("a", [0.1, 10.0])
def test_bn_net_from_aW_follows_the_net_from_W_to_1e_10(a: float) -> None:
    d = _trajectories(a)
    assert d[f"bn-a{a:g}-eps-scaled"] < 1e-10
    # the same without scaling eps, and without BN, is not the same trajectory
    assert d[f"bn-a{a:g}-eps-fixed"] > 1e-8
    assert d[f"plain-a{a:g}"] > 1e-3


def test_without_l2_the_norm_of_a_kernel_feeding_bn_never_falls() -> None:
    assert _trajectories(10.0)["decreases"] == 0


def test_scaled_kernels_start_at_aW_and_step_with_a2_lr() -> None:
    cfg = ScaleConfig.from_dict({"hidden": [4], "scales": [10.0]})
    specs = {s["name"]: s for s in net_specs(cfg)}
    ref, scaled = Net(specs["bn"], cfg), Net(specs["bn-a10-eps-scaled"], cfg)
    np.testing.assert_allclose(scaled.params["0.W"], 10.0 * ref.params["0.W"], rtol=1e-15)
    assert (
        scaled.lr["0.W"] == pytest.approx(100 * cfg.lr)
        and scaled.lr["3.b"] == scaled.lr["1.gamma"] == cfg.lr
    )
    assert specs["bn-a10-eps-scaled"]["eps"] == pytest.approx(100 * cfg.eps)


def test_config_errors_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--scales"):
        ScaleConfig.from_dict({"scales": [1.0]})
    with pytest.raises(ValueError, match="--hidden"):
        ScaleConfig.from_dict({"hidden": [0]})


def test_short_run(tmp_path: Path) -> None:
    argv = ["--steps", "30", "--hidden", "8", "8", "--eval-examples", "100"]
    figs = ["fig_trajectories.png", "fig_weight_norms.png"]
    m = helpers.run_and_render("scale-invariance", argv, tmp_path / "run", figs)
    by = {n["name"]: n for n in m["nets"]}
    assert by["bn-a10-eps-scaled"]["max_prob_diff"] < 1e-10
    assert len(by["bn"]["history"]["step"]) == 31
    assert "follows the net from W" in (tmp_path / "run" / "report.md").read_text()


def test_interrupted_run_renders(tmp_path: Path) -> None:
    argv = ["scale-invariance", "--steps", "100000", "--hidden", "8", "--eval-examples", "100"]
    argv += ["--record-every", "10", "--no-progress"]
    m = helpers.interrupt_and_check(argv, tmp_path / "run", lambda m: m["steps_done"] >= 10)
    assert 10 <= m["steps_done"] < 100000
