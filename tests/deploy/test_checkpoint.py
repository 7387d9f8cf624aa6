"""Checkpoints: round trip, atomic writes, damaged files, bit-for-bit resumption."""

import numpy as np
import pytest

from bnlab.data import BatchIterator
from bnlab.deploy import checkpoint as ckpt_mod
from bnlab.deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bnlab.layers import BatchNorm, Dense, ReLU, Sequential
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import L2, Adam, StepDecay, add_penalty_grads


def _model(hidden=8):
    return Sequential(
        [
            Dense(4, hidden, seed=0, kernel_regularizer=L2(1e-3)),
            BatchNorm(hidden),
            ReLU(),
            Dense(hidden, 3, seed=1),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)


def _train(model, opt, batches, steps):
    loss_fn = SoftmaxCrossEntropy()
    for _ in range(steps):
        xb, yb = next(batches)
        _, dout = loss_fn(model.forward(xb), yb)
        model.backward(dout)
        add_penalty_grads(model)
        opt.step()


def _opt(model):
    return Adam.from_model(model, lr=StepDecay(0.01, step_size=4, gamma=0.5))


def test_round_trip(tmp_path):
    model = _model()
    opt = _opt(model)
    x, y = _data()
    _train(model, opt, BatchIterator(x, y, 8, seed=1).batches(), 3)
    extra = {"step": 3, "big": 2**100, "nested": {"a": [1, 2.5, None, "s"], "arr": np.arange(3)}}
    path = save_checkpoint(tmp_path / "c.npz", model, opt, extra=extra)
    ck = load_checkpoint(path)
    assert ck.model is not model and ck.model.get_config() == model.get_config()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(ck.model.state_dict()[k], v)
    assert ck.model.layers[1].num_batches_tracked == 3
    np.testing.assert_array_equal(ck.model.forward(x), model.forward(x))
    assert ck.model.layers[0].regularizers["W"] == L2(1e-3)
    assert ck.extra["step"] == 3 and ck.extra["big"] == 2**100
    assert ck.extra["nested"]["a"] == [1, 2.5, None, "s"]
    np.testing.assert_array_equal(ck.extra["nested"]["arr"], np.arange(3))
    state = opt.state_dict()
    assert ck.optimizer_state["iterations"] == 3 and ck.optimizer_state["config"] == state["config"]
    for s, d in state["slots"].items():
        for k, v in d.items():
            np.testing.assert_array_equal(ck.optimizer_state["slots"][s][k], v)
    # the file is a plain npz: readable without pickles
    with np.load(path, allow_pickle=False) as z:
        assert "__meta__" in z.files and "model/0.W" in z.files


def test_resume_is_bit_for_bit(tmp_path):
    x, y = _data()
    straight = _model()
    _train(straight, _opt(straight), BatchIterator(x, y, 8, seed=5).batches(), 10)

    first = _model()
    opt = _opt(first)
    it = BatchIterator(x, y, 8, seed=5)
    _train(first, opt, it.batches(), 5)  # stops mid-epoch (37 samples, batches of 8)
    save_checkpoint(tmp_path / "c.npz", first, opt, extra={"iterator": it.state_dict()})
    del first, opt, it

    ck = load_checkpoint(tmp_path / "c.npz")
    opt2 = ck.make_optimizer()
    it2 = BatchIterator(x, y, 8, seed=999)  # the seed is overwritten by the saved state
    it2.load_state_dict(ck.extra["iterator"])
    _train(ck.model, opt2, it2.batches(), 5)
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(ck.model.state_dict()[k], v, err_msg=k)


def test_load_into_existing_model(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "c.npz", model)
    other = _model()
    other.layers[0].params["W"][...] = 0
    ck = load_checkpoint(tmp_path / "c.npz", model=other)
    assert ck.model is other and ck.optimizer_state is None and ck.extra is None
    np.testing.assert_array_equal(other.layers[0].params["W"], model.layers[0].params["W"])


def test_other_architecture_names_the_layer(tmp_path):
    save_checkpoint(tmp_path / "c.npz", _model(hidden=8))
    other = _model(hidden=9)
    before = other.layers[3].params["W"].copy()
    with pytest.raises(CheckpointError, match=r"layer 0 \(Dense.*'0\.W' is shape \(4, 8\)"):
        load_checkpoint(tmp_path / "c.npz", model=other)
    np.testing.assert_array_equal(other.layers[3].params["W"], before)  # nothing changed


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    path = save_checkpoint(tmp_path / "c.npz", model)
    good = path.read_bytes()
    model.layers[0].params["W"][...] += 1

    def failing_write(f, arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(ckpt_mod, "_write_npz", failing_write)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, model)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temp file left
    ck = load_checkpoint(path)
    assert not np.array_equal(ck.model.layers[0].params["W"], model.layers[0].params["W"])


def test_unserializable_extra_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="extra/obj holds a object"):
        save_checkpoint(tmp_path / "c.npz", _model(), extra={"obj": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [0, 100, "half", -30])
def test_truncated_file(tmp_path, cut):
    path = save_checkpoint(tmp_path / "c.npz", _model(), extra={"a": np.arange(1000)})
    data = path.read_bytes()
    n = len(data) // 2 if cut == "half" else cut
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"c\.npz is truncated or corrupt.*earlier"):
        load_checkpoint(path)


def test_corrupt_bytes_inside(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", _model())
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the first array's data: CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="c.npz"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a bnlab checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match=r"\.npy"):
        load_checkpoint(tmp_path / "arr.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz"):
        load_checkpoint(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_checkpoint(tmp_path / "absent.npz")
