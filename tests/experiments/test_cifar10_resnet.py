"""cifar10-resnet: a short run on a tiny CIFAR-format folder (files, report, schedule,
weight decay), Ctrl-C, and --resume after an interrupted epoch bit for bit."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from bnlab.experiments.cifar10_resnet import nets
from bnlab.experiments.cifar10_resnet.config import Cifar10ResnetConfig
from bnlab.experiments.cifar10_resnet.run import run
from bnlab.train import Trainer


def write_tiny_cifar(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """The official python layout: cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    sizes = [len(a) for a in np.array_split(np.arange(n_train), 5)]
    names = [(f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)] + [("test_batch", n_test)]
    for name, n in names:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar"))


def _cfg(data: Path, **kw: object) -> dict[str, object]:
    # 64 images of batch 16: 4 steps an epoch; 6 iterations = 1.5 epochs, lr / 10 at 3 and 4
    return {"data": str(data), "iterations": 6, "batch_size": 16, "progress": False, **kw}


def test_short_run_writes_every_file_and_follows_the_schedule(tiny: Path, tmp_path: Path) -> None:
    out = run(_cfg(tiny), tmp_path / "run")
    for name in ("config.json", "metrics.json", "metrics.csv", "fig_error.png", "report.md",
                 "report.html", "checkpoints/resnet20.npz"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and m["iterations_done"] == 6
    h = m["history"]
    assert h["epoch"] == [1, 2] and h["iterations"] == [4, 6]
    assert h["lr"] == [pytest.approx(0.001), pytest.approx(0.001)]  # after steps 4 and 6
    report = (out / "report.md").read_text()
    assert "8.75%" in report and "91.25%" in report and "scaled by 6/64000" in report
    assert "/10 at iteration 3 and 4" in report


def test_full_is_the_papers_schedule() -> None:
    cfg = Cifar10ResnetConfig.from_dict({"full": True})
    assert cfg.iterations == 64000 and cfg.milestones == [32000, 48000]
    assert Cifar10ResnetConfig.from_dict({}).milestones == [500, 750]


def test_weight_decay_is_wd_times_w_on_kernels_only() -> None:
    from bnlab.models import resnet20
    from bnlab.optim import add_penalty_grads

    model = nets.add_weight_decay(resnet20(seed=0), 1e-4)
    leaves = [layer for layer in model.modules() if not layer.sublayers()]
    for layer in leaves:
        for k in layer.grads:
            layer.grads[k][...] = 0
    add_penalty_grads(model)
    decayed = 0
    for layer in leaves:
        for k, g in layer.grads.items():
            want = 1e-4 * layer.params[k] if k == "W" else np.zeros_like(g)
            np.testing.assert_allclose(g, want, rtol=1e-6, atol=0)
            decayed += k == "W"
    assert decayed == 20  # 19 convolutions and the Dense layer


def test_augmentation_pads_with_the_mean_and_crops(tiny: Path) -> None:
    x = np.full((8, 32, 32, 3), 200, np.uint8)
    mean = np.full((32, 32, 3), 200 / 255, np.float32)
    xb, _ = next(iter(nets.epoch_batches(x, np.zeros(8, np.int64), mean, 8, 0, 1)))
    assert xb.dtype == np.float32 and xb.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(xb, 0, atol=1e-6)  # mean subtracted, border filled with 0
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    xb, _ = next(iter(nets.epoch_batches(x, np.zeros(64, np.int64), mean * 0, 64, 0, 1)))
    border = np.abs(xb).sum(axis=3)
    assert (border[:, :4] == 0).any() and (border[:, -4:] == 0).any()  # some padding shows
    assert not (border[:, 4:-4, 4:-4] == 0).all()


def test_ctrl_c_leaves_a_rendered_partial_run(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = Trainer.fit_epoch, []

    def interrupt_second(self: Trainer, *args: object, **kw: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "fit_epoch", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny, test_subset=8), tmp_path / "r")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["history"]["epoch"] == [1]
    assert "interrupted" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "fig_error.png").is_file()


def test_resume_after_an_interrupted_epoch_is_bit_identical(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnlab.deploy.checkpoint import load_checkpoint

    kw = {"iterations": 10, "test_subset": 8}  # epochs of 4, 4 and 2 steps
    run(_cfg(tiny, **kw), tmp_path / "full")
    real, calls = Trainer.train_batch, []

    def interrupt_sixth(self: Trainer, x: np.ndarray, y: object) -> object:
        calls.append(1)
        if len(calls) == 6:  # epoch 2, its second step
            raise KeyboardInterrupt
        return real(self, x, y)

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_batch", interrupt_sixth)
        with pytest.raises(KeyboardInterrupt):
            run(_cfg(tiny, **kw), tmp_path / "part")
    m = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["iterations_done"] == 5
    assert m["history"]["epoch"] == [1]
    run(_cfg(tiny, resume=True, **kw), tmp_path / "part")
    full, part = (
        json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("full", "part")
    )
    for key in ("epoch", "iterations", "train_loss", "train_accuracy", "test_loss",
                "test_accuracy", "lr"):  # fmt: skip
        assert part[key] == full[key], key
    a, b = (
        load_checkpoint(tmp_path / d / "checkpoints" / "resnet20.npz") for d in ("full", "part")
    )
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(b.model.state_dict()[k], v, err_msg=k)
    assert a.optimizer_state["iterations"] == b.optimizer_state["iterations"] == 10


def test_resume_refuses_a_different_config(tiny: Path, tmp_path: Path) -> None:
    run(_cfg(tiny, test_subset=8), tmp_path / "r")
    with pytest.raises(ValueError, match="seed"):
        run(_cfg(tiny, test_subset=8, seed=3, resume=True), tmp_path / "r")
