"""Every option of every experiment is checked before the run directory is touched.

A bad value gives exit status 2 and a one-line error naming the flag, what was expected and
what came; an existing run given with --force is left byte for byte as it was (no file
removed, added or changed, no lock file), and a new --out is not created.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bnlab import cli
from bnlab.experiments import config as options
from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
from bnlab.experiments.population_stats.config import StatsConfig
from bnlab.experiments.renorm_small_batch.config import RenormConfig

MNIST = ["--steps", "4", "--train-subset", "600", "--test-subset", "100", "--no-progress"]
MNIST += ["--hidden", "8", "8"]

# (experiment, base argv, bad argv, words the message must hold)
CASES = [
    ("mnist-sigmoid", MNIST, ["--bn-momentum", "2"], ["--bn-momentum", "[0, 1]", "got 2.0"]),
    ("mnist-sigmoid", MNIST, ["--bn-momentum", "nan"], ["--bn-momentum", "finite", "nan"]),
    ("mnist-sigmoid", MNIST, ["--bn-eps", "-1"], ["--bn-eps", "> 0", "got -1.0"]),
    ("mnist-sigmoid", MNIST, ["--hidden", "0"], ["--hidden", ">= 1", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--hidden", "-3"], ["--hidden", ">= 1", "got -3"]),
    ("mnist-sigmoid", MNIST, ["--batch-size", "1"], ["--batch-size", ">= 2", "got 1"]),
    ("mnist-sigmoid", MNIST, ["--batch-size", "1000000"], ["--batch-size 1000000", "600"]),
    ("mnist-sigmoid", MNIST, ["--monitor-unit", "500"], ["--monitor-unit 500", "0..7"]),
    ("mnist-sigmoid", MNIST, ["--monitor-unit", "-1"], ["--monitor-unit", ">= 0", "got -1"]),
    ("mnist-sigmoid", MNIST, ["--eval-batch-size", "0"], ["--eval-batch-size", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--eval-batch-size", "-1"], ["--eval-batch-size", "got -1"]),
    ("mnist-sigmoid", MNIST, ["--lr", "inf"], ["--lr", "finite", "inf"]),
    ("mnist-sigmoid", MNIST, ["--lr", "0.1", "-2"], ["--lr", "> 0", "-2.0"]),
    ("mnist-sigmoid", MNIST, ["--init-std", "inf"], ["--init-std", "finite", "inf"]),
    ("mnist-sigmoid", MNIST, ["--hidden", "1000000000"], ["GiB", "--hidden", "BNLAB_MAX"]),
    ("mnist-sigmoid", MNIST, ["--seeds", "1000000000"], ["GiB", "--seeds"]),
    ("mnist-sigmoid", MNIST, ["--seeds", "0"], ["--seeds", ">= 1", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--seed", "-1"], ["--seed", ">= 0", "got -1"]),
    ("mnist-sigmoid", MNIST, ["--train-subset", "-5"], ["--train-subset", ">= 1", "got -5"]),
    ("mnist-sigmoid", MNIST, ["--train-subset", "0"], ["--train-subset", ">= 1", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--train-subset", "70000"], ["--train-subset 70000", "60000"]),
    ("mnist-sigmoid", MNIST, ["--test-subset", "0"], ["--test-subset", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--test-subset", "20000"], ["--test-subset 20000", "10000"]),
    ("mnist-sigmoid", MNIST, ["--eval-every", "0"], ["--eval-every", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--steps", "-1"], ["--steps", "got -1"]),
    ("mnist-sigmoid", MNIST, ["--sweep-steps", "0"], ["--sweep-steps", "got 0"]),
    ("mnist-sigmoid", MNIST, ["--sweep-lrs", "-1"], ["--sweep-lrs", "-1.0"]),
    ("mnist-lr", MNIST, ["--base-lr", "0"], ["--base-lr", "> 0", "got 0.0"]),
    ("mnist-lr", MNIST, ["--base-lr", "inf"], ["--base-lr", "finite"]),
    ("mnist-lr", MNIST, ["--multipliers", "1", "0"], ["--multipliers", "> 0"]),
    ("mnist-lr", MNIST, ["--base-lr", "1e308", "--multipliers", "10"], ["overflows", "inf"]),
    ("mnist-lr", MNIST, ["--stall-threshold", "2"], ["--stall-threshold", "[0, 1]"]),
    ("mnist-lr", MNIST, ["--bn-momentum", "2"], ["--bn-momentum", "[0, 1]"]),
]
RSB = ["--steps", "4", "--train-subset", "600", "--test-subset", "256", "--no-progress"]
CASES += [
    ("renorm-small-batch", RSB, ["--momentum", "2"], ["--momentum", "[0, 1]", "got 2.0"]),
    ("renorm-small-batch", RSB, ["--eps", "0"], ["--eps", "> 0", "got 0.0"]),
    ("renorm-small-batch", RSB, ["--rmax", "0.5"], ["--rmax", ">= 1", "got 0.5"]),
    ("renorm-small-batch", RSB, ["--dmax", "-1"], ["--dmax", ">= 0", "got -1.0"]),
    ("renorm-small-batch", RSB, ["--lr", "inf"], ["--lr", "finite"]),
    ("renorm-small-batch", RSB, ["--hidden", "0"], ["--hidden", ">= 1"]),
    ("renorm-small-batch", RSB, ["--hidden", "1000000000"], ["GiB", "--hidden"]),
    ("renorm-small-batch", RSB, ["--micro-sizes", "1"], ["--micro-sizes", ">= 2", "got 1"]),
    ("renorm-small-batch", RSB, ["--micro-sizes", "5"], ["micro size 5", "divide"]),
    ("renorm-small-batch", RSB, ["--batch-size", "2"], ["--batch-size", ">= 4", "got 2"]),
    ("renorm-small-batch", RSB, ["--batch-size", "7"], ["--batch-size", "even", "got 7"]),
    ("renorm-small-batch", RSB, ["--train-subset", "0"], ["--train-subset", "got 0"]),
    ("renorm-small-batch", RSB, ["--train-subset", "-5"], ["--train-subset", "got -5"]),
    ("renorm-small-batch", RSB, ["--test-subset", "10"], ["--batch-size 32", "10 test"]),
    ("renorm-small-batch", RSB, ["--warmup-frac", "2"], ["--warmup-frac", "[0, 1]"]),
    ("renorm-small-batch", RSB, ["--eval-every", "0"], ["--eval-every", "got 0"]),
    ("renorm-small-batch", RSB, ["--seed", "-1"], ["--seed", ">= 0"]),
]
PS = ["--steps", "4", "--train-subset", "600", "--test-subset", "100", "--no-progress"]
CASES += [
    ("population-stats", PS, ["--momenta", "0.1", "2"], ["--momenta", "[0, 1]", "2.0"]),
    ("population-stats", PS, ["--momenta", "-0.1"], ["--momenta", "-0.1"]),
    ("population-stats", PS, ["--lr", "inf"], ["--lr", "finite"]),
    ("population-stats", PS, ["--lr", "-1"], ["--lr", "> 0"]),
    ("population-stats", PS, ["--batch-size", "1"], ["--batch-size", ">= 2"]),
    ("population-stats", PS, ["--recal-examples", "10"], ["--recal-examples 10", "--batch-size"]),
    ("population-stats", PS, ["--steps", "0"], ["--steps", "got 0"]),
    ("population-stats", PS, ["--eval-every", "0"], ["--eval-every", "got 0"]),
    ("population-stats", PS, ["--train-subset", "-5"], ["--train-subset", "got -5"]),
    ("population-stats", PS, ["--test-subset", "0"], ["--test-subset", "got 0"]),
    ("population-stats", PS, ["--seed", "-2"], ["--seed", ">= 0"]),
]
PSE = ["--checkpoints", "nothing/*.npz", "--no-progress"]
CASES += [
    ("population-stats-epochs", PSE, ["--batch-size", "1"], ["--batch-size", ">= 2", "m/(m-1)"]),
    ("population-stats-epochs", PSE, ["--recal-examples", "8"], ["--recal-examples 8", "batch"]),
    ("population-stats-epochs", PSE, ["--eval-batch-size", "0"], ["--eval-batch-size", "got 0"]),
    ("population-stats-epochs", PSE, ["--seed", "-1"], ["--seed", ">= 0"]),
]
CK = ["--data", "no/such/cifar", "--epochs", "1", "--no-progress"]
CASES += [
    ("cifar10-keras", CK, ["--epochs", "0"], ["--epochs", "got 0"]),
    ("cifar10-keras", CK, ["--batch-size", "1"], ["--batch-size", ">= 2"]),
    ("cifar10-keras", CK, ["--eval-batch-size", "0"], ["--eval-batch-size", "got 0"]),
    ("cifar10-keras", CK, ["--lr-bn", "inf"], ["--lr-bn", "finite"]),
    ("cifar10-keras", CK, ["--lr-baseline", "0"], ["--lr-baseline", "> 0"]),
    ("cifar10-keras", CK, ["--decay", "-1"], ["--decay", ">= 0"]),
    ("cifar10-keras", CK, ["--bn-momentum", "2"], ["--bn-momentum", "[0, 1]"]),
    ("cifar10-keras", CK, ["--bn-eps", "0"], ["--bn-eps", "> 0"]),
    ("cifar10-keras", CK, ["--train-subset", "1"], ["--train-subset", ">= 2"]),
    ("cifar10-keras", CK, ["--test-subset", "-5"], ["--test-subset", "got -5"]),
    ("cifar10-keras", CK, ["--train-subset", "16", "--batch-size", "32"], ["--batch-size 32"]),
]


def _old_run(root: Path) -> Path:
    """A directory that looks like a finished run (its content does not matter here)."""
    out = root / "old"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.json", "metrics.csv", "report.md", "fig_accuracy.png"):
        (out / name).write_bytes(f"old {name}".encode())
    (out / "checkpoints" / "bn.npz").write_bytes(b"old checkpoint")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    (out / ".bnlab-manifest.json").write_text(json.dumps({"files": files}))  # bnlab wrote them
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("experiment", "base", "bad", "words"), CASES)
def test_bad_option_leaves_the_old_run_untouched(
    experiment: str,
    base: list[str],
    bad: list[str],
    words: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = _old_run(tmp_path)
    before = _snapshot(old)
    assert cli.main(["run", experiment, *base, *bad, "--out", str(old), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnlab: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert _snapshot(old) == before
    # and into a new directory: it is not created
    new = tmp_path / "new"
    assert cli.main(["run", experiment, *base, *bad, "--out", str(new)]) == 2
    assert not new.exists()


def test_check_rejects_bools_nan_and_non_integers() -> None:
    c = options.Check(int, 1)
    assert c.ok(3) and c.ok(3.0)
    assert not c.ok(True) and not c.ok(2.5) and not c.ok(0)
    f = options.Check(float, 0, 1, lo_open=True)
    assert f.ok(1.0) and f.ok(1e-9)
    assert not f.ok(0.0) and not f.ok(math.nan) and not f.ok(math.inf) and not f.ok("0.5")
    hidden = options.Opt([1], "widths", options.Check(int, 1), nargs="+")
    assert "--hidden must be a non-empty list" in str(hidden.problem("hidden", []))
    assert hidden.problem("hidden", [3, 4]) is None
    lr = options.Opt(0.1, "rate", options.Check(float, 0, lo_open=True))
    assert lr.problem("lr", None) == "--lr must be a finite number > 0, got None"


def test_memory_limit_can_be_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="1 net\\(s\\) of 1,000 parameters"):
        monkeypatch.setenv(options.MAX_MODEL_BYTES_ENV, "1000")
        options.check_model_bytes(1, 1000, "x", "lower it")
    monkeypatch.setenv(options.MAX_MODEL_BYTES_ENV, "12000")
    options.check_model_bytes(1, 1000, "x", "lower it")  # exactly at the limit: fine


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("rho", 1.0, "--rho"),
        ("rms_eps", 0.0, "--rms-eps"),
        ("shift", 1.5, "--shift"),
        ("seed", -1, "--seed"),
    ],
)
def test_cifar_config_only_keys_are_checked(key: str, value: float, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Cifar10KerasConfig.from_dict({"data": "x", key: value})


def test_library_configs_are_checked_too() -> None:
    with pytest.raises(ValueError, match="unknown config keys \\['momentaa'\\]"):
        StatsConfig.from_dict({"momentaa": [0.1]})
    with pytest.raises(ValueError, match="--activation must be one of relu, sigmoid"):
        RenormConfig.from_dict({"activation": "tanh"})
    with pytest.raises(ValueError, match="--hidden must be a non-empty list"):
        RenormConfig.from_dict({"hidden": []})


@pytest.mark.parametrize(
    "name",
    [
        "mnist-sigmoid",
        "mnist-lr",
        "renorm-small-batch",
        "population-stats",
        "population-stats-epochs",
        "cifar10-keras",
    ],
)
def test_one_config_class_per_experiment_gives_every_flag(name: str) -> None:
    """The config class is the one source: every number has a check that its own default
    passes, and every option is a flag of `bnlab run NAME` or marked config-only."""
    from bnlab import experiments
    from bnlab.cli import build_parser
    from bnlab.cli.parser import subparsers_of

    config = experiments.get(name).config
    opts = config.options()
    for key, o in opts.items():
        numeric = isinstance(o.default, int | float) and not isinstance(o.default, bool)
        assert o.check is not None or not numeric, key
        assert o.problem(key, o.default) is None, key
    parser = subparsers_of(subparsers_of(build_parser())["run"])[name]
    dests = {a.dest for a in parser._actions}
    assert {k for k, o in opts.items() if o.cli} <= dests
    assert not {k for k, o in opts.items() if not o.cli} & dests
    assert dests - set(opts) == {"help", "out", "force"}
