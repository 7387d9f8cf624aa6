"""The MNIST experiments' configs (one declaration per option) and old run directories."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bnlab.cli.run import add_options
from bnlab.experiments import get
from bnlab.experiments.mnist.config import MnistConfig
from bnlab.experiments.mnist_lr.config import MnistLrConfig
from bnlab.experiments.mnist_sigmoid.config import MnistSigmoidConfig

# the keys of config.json as the code before the package (revision 532441e) wrote them
OLD_COMMON = [
    "steps", "batch_size", "seeds", "seed", "hidden", "init_std", "eval_every",
    "eval_batch_size", "monitor_unit", "bn_momentum", "bn_eps", "train_subset", "test_subset",
    "progress", "save_checkpoints", "bn_sync",
]  # fmt: skip
OLD_KEYS = {
    "mnist-sigmoid": [*OLD_COMMON, "lrs", "sweep", "sweep_lrs", "sweep_steps", "experiment"],
    "mnist-lr": [*OLD_COMMON, "base_lr", "multipliers", "stall_threshold", "experiment"],
}


@pytest.mark.parametrize("config", [MnistSigmoidConfig, MnistLrConfig])
def test_config_json_keeps_its_keys_and_reads_back_to_the_same_config(config: Any) -> None:
    cfg = config.from_dict({"steps": 600})
    d = cfg.to_dict()
    assert list(d) == OLD_KEYS[cfg.NAME]
    assert d["eval_every"] == 50 and d["experiment"] == cfg.NAME
    assert config.from_dict(json.loads(json.dumps(d))) == cfg
    assert get(cfg.NAME).config is config


def test_mnist_lr_changes_only_the_default_of_steps() -> None:
    assert (
        MnistLrConfig.from_dict().steps == 10_000 and MnistSigmoidConfig.from_dict().steps == 50_000
    )
    assert MnistLrConfig.options()["steps"].help == MnistConfig.options()["steps"].help
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(p, MnistLrConfig.options())
    assert "SGD steps per run (default: 10000)" in " ".join(p.format_help().split())
    assert MnistLrConfig.from_dict(vars(p.parse_args([]))).eval_every == 100


def test_derived_values_and_sweep() -> None:
    sigmoid = MnistSigmoidConfig.from_dict
    assert sigmoid({"steps": 20}).eval_every == 20  # never more than steps
    assert sigmoid({"steps": 100}).eval_every == 50  # not after every step
    assert sigmoid({"steps": 20_000}).eval_every == 200  # steps / 100
    assert sigmoid({"steps": 600, "eval_every": 7}).eval_every == 7
    cfg = sigmoid({"sweep": True, "sweep_steps": 300})
    assert (cfg.steps, cfg.eval_every) == (300, 50)
    assert cfg.learning_rates() == [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    lrs = MnistLrConfig.from_dict({"base_lr": 0.5, "multipliers": [1, 4]}).learning_rates()
    assert lrs == [0.5, 2.0]
    cfg = sigmoid({"steps": 600.0, "hidden": [8.0, 4]})
    assert cfg.hidden == [8, 4] and cfg.steps == 600 and isinstance(cfg.steps, int)
    assert MnistConfig.options()["batch_size"].check.lo == 2


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"hidden": [10, 4], "monitor_unit": 4}, "--monitor-unit 4 is not a unit of the last"),
        ({"train_subset": 50, "batch_size": 60}, "--batch-size 60 is larger than the 50"),
        ({"train_subset": 60_001}, "--train-subset 60001 asks for more images than the 60000"),
        ({"test_subset": 10_001}, "--test-subset 10001 asks for more images"),
        ({"sweep": True, "sweep_steps": 0}, "--sweep-steps must be an integer >= 1, got 0"),
        ({"lrs": [0.1, -1.0]}, "every --lr value must be a finite number > 0"),
        ({"bn_sync": "none"}, "--bn-sync must be one of global, local"),
    ],
)
def test_values_wrong_together_are_refused_before_the_run_directory_is_touched(
    tmp_path: Path, bad: dict[str, Any], words: str
) -> None:
    (tmp_path / "config.json").write_text('{"old": 1}')
    with pytest.raises(ValueError, match="mnist-sigmoid") as e:
        get("mnist-sigmoid").run({"progress": False, **bad}, tmp_path)
    assert words in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == '{"old": 1}'


def test_infinite_learning_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="mnist-lr: --base-lr 1e\\+300 times --multipliers"):
        MnistLrConfig.from_dict({"base_lr": 1e300, "multipliers": [1e10]})


def test_too_many_nets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNLAB_MAX_MODEL_BYTES", "1000000")
    with pytest.raises(ValueError, match="lower --hidden, --seeds or the number of learning"):
        MnistSigmoidConfig.from_dict({"seeds": 2})


def _old_run_dir(path: Path, name: str) -> Path:
    """A run directory as the code before the package wrote it (config.json of
    `compare_runs.py`'s short runs at revision 532441e, a small metrics.json)."""
    common = {
        "steps": 300, "batch_size": 60, "seeds": 1, "seed": 0, "hidden": [100, 100, 100],
        "init_std": 0.1, "eval_every": 3, "eval_batch_size": 2000, "monitor_unit": 0,
        "bn_momentum": 0.1, "bn_eps": 1e-05, "train_subset": None, "test_subset": None,
        "progress": False, "save_checkpoints": False, "bn_sync": "global",
    }  # fmt: skip
    own = (
        {"base_lr": 3.0, "multipliers": [1.0, 5.0], "stall_threshold": 0.2}
        if name == "mnist-lr"
        else {"lrs": [0.1, 3.0], "sweep": False, "sweep_lrs": [0.03, 0.1], "sweep_steps": 5000}
    )
    path.mkdir()
    (path / "config.json").write_text(json.dumps({**common, **own, "experiment": name}))
    hist = {"step": [0, 150, 300], "train_loss": [None, 0.9, 0.5], "accuracy": [0.1, 0.8, 0.93]}
    hist |= {"p15": [-1.0, -2.0, -2.5], "p50": [0.0, 0.1, 0.2], "p85": [1.0, 2.0, 2.5]}
    lrs = [3.0, 15.0] if name == "mnist-lr" else [0.1, 3.0]
    runs = [
        {"name": f"{net}-lr{lr:g}-seed0", "net": net, "lr": lr, "seed": 0, "diverged_at": None}
        | {"error": None, "time_s": 1.0, "history": hist}
        for lr in lrs
        for net in ("plain", "bn")
    ]
    metrics = {"schema": "bnlab.mnist.metrics/1", "experiment": name, "status": "complete"}
    metrics |= {"steps_done": 300, "steps_total": 300, "wall_time_s": 2.0, "runs": runs}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.mark.parametrize(
    ("name", "words", "figure"),
    [
        ("mnist-sigmoid", "Paper vs this run", "fig_percentiles.png"),
        ("mnist-lr", "| 5x | 15 | with BN |", "fig_lr.png"),
    ],
)
def test_bnlab_report_renders_a_run_directory_of_the_old_code(
    tmp_path: Path, name: str, words: str, figure: str
) -> None:
    from bnlab import cli

    out = _old_run_dir(tmp_path / "old", name)
    config_before = (out / "config.json").read_bytes()
    assert cli.main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert words in md and "after 300 of 300 steps" in md and f"({figure})" in md
    assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "config.json").read_bytes() == config_before
