"""cifar10-keras: smoke run on a tiny CIFAR-format file, the epoch metrics against a loop by
hand, data errors, resume (also after an interrupted epoch). The nets against PyTorch:
test_cifar10_keras_nets.py."""

from __future__ import annotations

import argparse
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bnlab.cli.run import add_options
from bnlab.data import cifar_source as cs
from bnlab.data import describe_source
from bnlab.experiments.cifar10_keras import nets as ck
from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig
from bnlab.experiments.cifar10_keras.run import run
from bnlab.train import Trainer


def _write_batches(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """The official python layout: cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    sizes = [len(a) for a in np.array_split(np.arange(n_train), 5)]
    for name, n in [(f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)] + [
        ("test_batch", n_test)
    ]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_batches(tmp_path_factory.mktemp("cifar"))


def _cfg(data: Path, **kw: object) -> dict[str, object]:
    return {"data": str(data), "epochs": 1, "progress": False, **kw}


def test_smoke_run_writes_every_file(tiny: Path, tmp_path: Path) -> None:
    out = run({**_cfg(tiny), "keep_checkpoints": True}, tmp_path / "run")
    for name in (
        "config.json",
        "metrics.json",
        "metrics.csv",
        "fig_accuracy.png",
        "fig_loss.png",
        "report.md",
        "report.html",
        "checkpoints/baseline.npz",
        "checkpoints/bn.npz",
        "checkpoints/bn_epoch_001.npz",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete"
    assert (m["n_train"], m["n_test"]) == (64, 32)
    assert m["data"]["format"] == "python-batches"
    for kind in ("baseline", "bn"):
        h = m["models"][kind]["history"]
        assert h["epoch"] == [1]
        # the recorded test accuracy is the saved net's, and train accuracy counts 64 images
        from bnlab.deploy.checkpoint import load_checkpoint
        from bnlab.train import evaluate

        data = cs.load_cifar10_data(tiny, describe_source(tiny), None, None)
        net = load_checkpoint(out / "checkpoints" / f"{kind}.npz").model
        assert evaluate(net, data.x_test, data.y_test, 500)["accuracy"] == h["test_accuracy"][0]
        assert abs(h["train_accuracy"][0] * 64 - round(h["train_accuracy"][0] * 64)) < 1e-9
        assert np.isfinite(h["train_loss"][0]) and np.isfinite(h["test_loss"][0])
        assert h["epoch_time_s"][0] > 0
    # Keras 2 decay: lr after 2 steps of batch 32 is lr / (1 + 1e-6 * 2)
    assert m["models"]["bn"]["history"]["lr"][0] == pytest.approx(1e-3 / (1 + 2e-6))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["bn_momentum"] == 0.01 and cfg["bn_eps"] == 1e-3
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3
    report = (out / "report.md").read_text()
    assert "original python batches" in report and "87" in report and "77" in report


def test_resume_continues_like_an_uninterrupted_run(tiny: Path, tmp_path: Path) -> None:
    kw = {"models": ["bn"], "train_subset": 32, "test_subset": 8}  # one step per epoch
    run(_cfg(tiny, epochs=2, **kw), tmp_path / "full")
    run(_cfg(tiny, epochs=1, **kw), tmp_path / "part")
    run(_cfg(tiny, epochs=2, resume=True, **kw), tmp_path / "part")
    full, part = (
        json.loads((tmp_path / d / "metrics.json").read_text())["models"]["bn"]["history"]
        for d in ("full", "part")
    )
    assert part["epoch"] == [1, 2]
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
        assert part[key] == full[key], key


@pytest.mark.parametrize("kind", ["baseline", "bn"])
def test_epoch_metrics_are_those_of_the_epoch_computed_by_hand(
    kind: str, tiny: Path, tmp_path: Path
) -> None:
    """metrics.json against an independent epoch: the nets, optimizer, batches and dropout
    seeds of the experiment, trained by a plain loop (loss * batch size, argmax == label)."""
    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.train import evaluate

    config = _cfg(tiny, models=[kind], test_subset=8)
    out = run(config, tmp_path / "run")
    h = json.loads((out / "metrics.json").read_text())["models"][kind]["history"]
    cfg = Cifar10KerasConfig.from_dict(config)
    data = cs.load_cifar10_data(tiny, describe_source(tiny), None, 8)
    model, loss_fn = ck.build_model(kind, cfg), SoftmaxCrossEntropy()
    opt = ck.build_optimizer(kind, model, cfg)
    ck.reseed_dropout(model, cfg, 1)
    loss_sum, correct, total = 0.0, 0, 0
    for xb, yb in ck.epoch_batches(data.x_train, data.y_train, cfg, 1):
        model.train()
        logits = model.forward(xb)
        loss, dlogits = loss_fn(logits, yb)
        model.backward(dlogits)
        opt.step()
        loss_sum, total = loss_sum + float(loss) * len(yb), total + len(yb)
        correct += int(np.sum(np.argmax(logits, axis=1) == yb))
    assert total == 64
    assert h["train_loss"] == [loss_sum / total]
    assert h["train_accuracy"] == [correct / total]
    ev = evaluate(model, data.x_test, data.y_test, 500, loss_fn=loss_fn)
    assert h["test_accuracy"] == [ev["accuracy"]] and h["test_loss"] == [ev["loss"]]


def test_resume_after_an_interrupted_epoch_is_bit_identical(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnlab.deploy.checkpoint import load_checkpoint

    kw = {"models": ["bn"], "epochs": 2, "test_subset": 8}  # 2 steps of 32 per epoch
    run(_cfg(tiny, **kw), tmp_path / "full")
    real, calls = Trainer.train_batch, []

    def interrupt_fourth(self: Trainer, x: np.ndarray, y: object) -> object:
        calls.append(1)
        if len(calls) == 4:  # epoch 2, its second step
            raise KeyboardInterrupt
        return real(self, x, y)

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "train_batch", interrupt_fourth)
        with pytest.raises(KeyboardInterrupt):
            run(_cfg(tiny, **kw), tmp_path / "part")
    m = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["models"]["bn"]["epochs_done"] == 1
    run(_cfg(tiny, resume=True, **kw), tmp_path / "part")
    full, part = (
        json.loads((tmp_path / d / "metrics.json").read_text())["models"]["bn"]["history"]
        for d in ("full", "part")
    )
    for key in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
        assert part[key] == full[key], key
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "bn.npz") for d in ("full", "part"))
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(b.model.state_dict()[k], v, err_msg=k)


def test_ctrl_c_leaves_a_valid_partial_run(
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
        run(_cfg(tiny, epochs=3, test_subset=8), tmp_path / "r")
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["status"] == "interrupted"
    assert m["models"]["baseline"]["epochs_done"] == 1 and m["models"]["bn"]["epochs_done"] == 0
    assert (tmp_path / "r" / "checkpoints" / "baseline.npz").is_file()
    assert not (tmp_path / "r" / "checkpoints" / "bn.npz").exists()
    assert "interrupted" in (tmp_path / "r" / "report.md").read_text()


def test_resume_refuses_a_different_config(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    old = Cifar10KerasConfig.from_dict(_cfg(tiny, models=["bn"])).to_dict()
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="seed"):
        run(_cfg(tiny, models=["bn"], seed=8, resume=True), tmp_path / "r")
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == old
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_no_data_says_where_to_get_cifar10(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cs.ENV_DATA, raising=False)
    with pytest.raises(FileNotFoundError, match=r"cs\.toronto\.edu/~kriz/cifar\.html") as e:
        run({"epochs": 1}, tmp_path / "r")
    assert "cifar-10-python.tar.gz" in str(e.value) and "image folder" in str(e.value)
    assert not (tmp_path / "r").exists()


def test_env_var_is_the_default_path(monkeypatch: pytest.MonkeyPatch, tiny: Path) -> None:
    monkeypatch.setenv(cs.ENV_DATA, str(tiny))
    assert cs.resolve_data_path(None) == tiny
    assert cs.resolve_data_path(str(tiny.parent)) == tiny.parent  # --data wins


def test_wrong_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(FileNotFoundError, match="nope.tar.gz") as e:
        run(_cfg(missing), tmp_path / "r")
    assert "does not exist" in str(e.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["text", "dir", "tar"])
def test_bad_format_lists_accepted_formats(kind: str, tmp_path: Path) -> None:
    if kind == "text":
        bad = tmp_path / "cifar.txt"
        bad.write_text("not cifar")
    elif kind == "dir":
        bad = tmp_path / "empty"
        bad.mkdir()
        (bad / "readme.txt").write_text("nothing here")
    else:
        bad = tmp_path / "other.tar.gz"
        with tarfile.open(bad, "w:gz") as tf:
            info = tarfile.TarInfo("x/readme.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"hi"))
    assert describe_source(bad)["format"] == "unknown"
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        run(_cfg(bad), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def _jpeg_folder_tar(root: Path, quality: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path = root / "imgs.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                buf = io.BytesIO()
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(buf, format="JPEG", quality=quality)
                info = tarfile.TarInfo(f"c/{split}/{cls}/1.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
    return path


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_image_folder_is_tagged_with_its_quality(quality: int, tmp_path: Path) -> None:
    src = describe_source(_jpeg_folder_tar(tmp_path, quality))
    assert src["format"] == "image-folder" and src["encoding"] == "JPEG"
    assert src["jpeg_quality"] == quality
    assert src["tag"] == f"JPEG q{quality} CIFAR-10"


def test_python_batches_tar_is_recognized(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tiny, arcname="cifar-10-batches-py")
    assert describe_source(path)["format"] == "python-batches"
    data = cs.load_cifar10_data(path, {}, 10, None)
    assert data.x_train.shape == (10, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.dtype == np.float32 and 0 <= data.x_test.min() <= data.x_test.max() <= 1


def test_arguments_parse_to_a_config() -> None:
    p = argparse.ArgumentParser()
    add_options(p, Cifar10KerasConfig.options())
    args = p.parse_args(["--models", "bn", "--epochs", "3", "--train-subset", "100"])
    cfg = Cifar10KerasConfig.from_dict(vars(args))
    assert cfg.models == ["bn"] and cfg.epochs == 3 and cfg.train_subset == 100
    assert cfg.lr_baseline == 1e-4 and cfg.lr_bn == 1e-3 and cfg.decay == 1e-6
    with pytest.raises(SystemExit):
        p.parse_args(["--models", "baseline,resnet"])
    with pytest.raises(ValueError, match="epochs"):
        Cifar10KerasConfig.from_dict({"epochs": 0})
    with pytest.raises(ValueError, match="unknown config keys"):
        Cifar10KerasConfig.from_dict({"epoch": 3})


def test_cli_resume_needs_no_force(tiny: Path, tmp_path: Path) -> None:
    from bnlab import cli

    out = tmp_path / "r"
    argv = ["run", "cifar10-keras", "--data", str(tiny), "--no-progress", "--out", str(out)]
    assert cli.main([*argv, "--epochs", "1", "--models", "bn"]) == 0
    assert cli.main([*argv, "--epochs", "2", "--models", "bn"]) == 2  # a run is there
    assert cli.main([*argv, "--epochs", "2", "--models", "bn", "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and m["models"]["bn"]["history"]["epoch"] == [1, 2]


@pytest.mark.parametrize("metrics", ["{}", "[]", '{"models": {"bn": {"history": {}}}}'])
def test_resume_refuses_metrics_that_are_not_ours(tiny: Path, tmp_path: Path, metrics: str) -> None:
    out = tmp_path / "r"
    run(_cfg(tiny, models=["bn"]), out)
    (out / "metrics.json").write_text(metrics)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="not a cifar10-keras metrics file"):
        run(_cfg(tiny, models=["bn"], epochs=2, resume=True), out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
