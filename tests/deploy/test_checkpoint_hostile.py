"""Checkpoints under hostile input (issue 15): refuse before writing, validate everything before
assigning anything, no resource exhaustion from small files, dtypes kept, bit-exact resume."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from bnlab.data import BatchIterator
from bnlab.deploy import _ckpt_config
from bnlab.deploy import checkpoint as ckpt_mod
from bnlab.deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bnlab.layers import (
    LAYER_REGISTRY,
    BatchNorm,
    Dense,
    Dropout,
    ReLU,
    Sequential,
)
from bnlab.losses import SoftmaxCrossEntropy
from bnlab.optim import Adam
from bnlab.train import CheckpointCallback, Trainer


def _model(dropout: bool = False) -> Sequential:
    layers = [Dense(4, 6, seed=0), BatchNorm(6), ReLU()]
    layers += [Dropout(0.3, seed=5)] if dropout else []
    return Sequential([*layers, Dense(6, 3, seed=1), BatchNorm(3)])


def _state_bytes(model) -> dict[str, bytes]:
    return {k: v.tobytes() + str(v.dtype).encode() for k, v in model.state_dict().items()}


def _files(d) -> dict[str, bytes]:
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d))}


def _good(tmp_path):
    """A valid checkpoint with optimizer state and extra; returns (path, model, opt)."""
    m = _model()
    opt = Adam.from_model(m, lr=1e-2)
    m.forward(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))
    path = save_checkpoint(tmp_path / "c.npz", m, opt, extra={"a": np.arange(3), "step": 7})
    return path, m, opt


def _parts(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def _write(path, meta, arrays) -> None:
    """A crafted checkpoint: arbitrary meta (JSON-able) and arrays."""
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)


# -- 1. a save that cannot be loaded back changes nothing ------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        np.array([1, "a", None], dtype=object),
        np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
        np.zeros(2, dtype="V4"),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        {1, 2},
        {"__ndarray__": "model/0.W"},
    ],
    ids=["object", "structured", "void", "datetime", "set", "reserved-key"],
)
def test_unloadable_extra_is_refused_before_writing(tmp_path, value) -> None:
    path, m, opt = _good(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(TypeError, match=r"save_checkpoint: extra/a"):
        save_checkpoint(path, m, opt, extra={"a": value})
    assert _files(tmp_path) == before
    load_checkpoint(path)


def test_nan_weights_are_refused_before_writing(tmp_path) -> None:
    path, m, opt = _good(tmp_path)
    before = _files(tmp_path)
    m.layers[0].params["W"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"refusing to write.*'0\.W'.*non-finite"):
        save_checkpoint(path, m, opt)
    assert _files(tmp_path) == before


def test_a_file_that_reads_back_differently_is_not_renamed(tmp_path, monkeypatch) -> None:
    path, m, opt = _good(tmp_path)
    before = _files(tmp_path)
    real = ckpt_mod._write_npz

    def flip(f, arrays):  # a write that silently corrupts one array (bad RAM, buggy FS)
        real(f, {**arrays, "model/0.b": arrays["model/0.b"] + 1})

    monkeypatch.setattr(ckpt_mod, "_write_npz", flip)
    with pytest.raises(OSError, match=r"'model/0\.b' read back different bytes; nothing replaced"):
        save_checkpoint(path, m, opt)
    assert _files(tmp_path) == before


# -- 2. validate everything, then assign -----------------------------------------------------
def _bad_layer1(tmp_path, key, value):
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    arrays[f"model/{key}"] = value
    _write(path, meta, arrays)
    return path


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("1.gamma", np.array([np.nan] * 6, np.float32), "non-finite"),
        ("4.running_var", np.array([1, 1, -1], np.float32), "negative"),
        ("4.running_var", np.ones(3, np.complex64), "complex64"),
        ("1.beta", np.ones(6, bool), "bool"),
        ("3.W", np.zeros((6, 3), "datetime64[s]"), "datetime64"),
        ("4.num_batches_tracked", np.array(2.5), "expected integers"),
        ("4.num_batches_tracked", np.array(-3), r"\[0,"),
        ("3.b", np.array([1e300, 0, 0]), "non-finite"),
        ("3.b", np.zeros(3, np.longdouble), "float128|longdouble"),
    ],
)
def test_bad_array_in_a_later_layer_changes_no_layer(tmp_path, key, value, words) -> None:
    path = _bad_layer1(tmp_path, key, value)
    target = _model()
    before = _state_bytes(target)
    with pytest.raises(CheckpointError, match=rf"'{key}'.*({words})"):
        load_checkpoint(path, model=target)
    assert _state_bytes(target) == before
    with pytest.raises(CheckpointError, match=rf"'{key}'"):
        load_checkpoint(path)


def test_missing_extra_array_raises_before_the_model_is_touched(tmp_path) -> None:
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    del arrays["extra/a"]
    _write(path, meta, arrays)
    target = _model()
    before = _state_bytes(target)
    with pytest.raises(CheckpointError, match=r"extra/a.*lacks"):
        load_checkpoint(path, model=target)
    assert _state_bytes(target) == before


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda o, a: a.update({"optimizer/slots/exp_avg/0.W": np.full((4, 6), np.inf)}), "finite"),
        (lambda o, a: o.update(type="Nope"), "'type' must be one of"),
        (lambda o, a: o.update(iterations=-1), "'iterations'"),
        (lambda o, a: o.update(slots=[1]), "'slots'"),
        (lambda o, a: o["config"].update(beta1="x"), "does not fit"),
        (lambda o, a: o["slots"]["exp_avg"].pop("0.W"), "does not fit"),
    ],
)
def test_bad_optimizer_state_raises_before_anything_changes(tmp_path, edit, words) -> None:
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    edit(meta["optimizer"], arrays)
    _write(path, meta, arrays)
    target = _model()
    before = _state_bytes(target)
    with pytest.raises(CheckpointError, match=rf"optimizer state.*{words}"):
        load_checkpoint(path, model=target)
    assert _state_bytes(target) == before


# -- 3. resource exhaustion -----------------------------------------------------------------
@pytest.mark.parametrize("n", [30000, 1_000_000])
def test_huge_config_in_a_small_file_is_refused_before_building(tmp_path, n, monkeypatch) -> None:
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    meta["model_config"]["layers"][0]["config"].update(in_features=n, out_features=n)
    meta["model_config"]["layers"][1]["config"]["num_features"] = n
    _write(path, meta, arrays)

    def no_build(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(_ckpt_config, "build", no_build)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"max_params=100,000,000.*max_params="):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"inconsistent.*'0\.W' of shape"):
        load_checkpoint(path, max_params=10**13)  # a raised limit still checks the file
    assert time.perf_counter() - t0 < 30  # not an assertion on speed: a guard against hangs


def test_member_declaring_more_bytes_than_it_holds_is_refused(tmp_path) -> None:
    import io
    import zipfile

    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__meta__.npy", _npy(np.array(json.dumps(meta))))
        zf.writestr("model/0.W.npy", head.getvalue() + b"\0" * 96)
    with pytest.raises(CheckpointError, match=r"'model/0\.W' declares shape \(1000000, 1000000\)"):
        load_checkpoint(path)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_max_params_is_a_positive_int() -> None:
    with pytest.raises(ValueError, match="max_params must be a positive int"):
        load_checkpoint("x.npz", max_params=0)


def test_declared_shapes_match_the_layers() -> None:
    """The table in _ckpt_config mirrors every registered layer's constructor."""
    from pathlib import Path

    from bnlab.layers import BatchRenorm, ChannelAffine, Conv2D, GroupNorm, LayerNorm, Residual

    samples = [
        Dense(3, 4),
        Dense(3, 4, use_bias=False),
        Conv2D(2, 5, (3, 1)),
        Conv2D(2, 5, 3, use_bias=False),
        BatchNorm(4),
        BatchNorm(4, affine=False),
        BatchNorm(4, track_running_stats=False),
        BatchRenorm(4),
        ChannelAffine(4),
        Sequential([Dense(3, 4), ReLU(), Sequential([BatchNorm(4), Dropout(0.2)])]),
        Residual([Dense(3, 4), GroupNorm(2, 4)], [Dense(3, 4), LayerNorm(4, bias=False)]),
        Residual([Dense(4, 4), GroupNorm(2, 4, affine=False)]),
        Sequential([Dense(4), BatchNorm()]),  # lazy, not built: no parameters yet
    ]
    for kind, cls in LAYER_REGISTRY.items():
        if not cls.__module__.startswith("bnlab."):  # a test's own layer (e.g. test_fold's)
            continue
        if not kind.startswith("_") and kind not in {type(s).__name__ for s in samples}:
            try:
                samples.append(cls())  # parameterless layers build with defaults
            except TypeError:
                samples.append(cls(4))  # BN variants (SyncBatchNorm, ...)
    for layer in samples:
        kind, cfg = type(layer).__name__, json.loads(json.dumps(layer.get_config()))
        got = _ckpt_config.declared_shapes(Path("x"), kind, cfg)
        assert got == {k: v.shape for k, v in layer.state_dict().items()}, kind


# -- 4. crafted __meta__ ---------------------------------------------------------------------
def _cfg0(m):
    return m["model_config"]["layers"][0]["config"]


META_EDITS = {
    "not-a-dict": (lambda m: [1, 2], "format"),
    "format": (lambda m: m.update(format="x"), "format"),
    "version-str": (lambda m: m.update(version="1"), "'version'"),
    "version-bool": (lambda m: m.update(version=True), "'version'"),
    "version-huge": (lambda m: m.update(version=10**30), "version"),
    "no-class": (lambda m: m.__delitem__("model_class"), "'model_class'"),
    "class-int": (lambda m: m.update(model_class=5), "'model_class'"),
    "unknown-class": (lambda m: m.update(model_class="Evil"), "unknown layer type 'Evil'"),
    "private-class": (lambda m: m.update(model_class="_Activation"), "unknown layer type"),
    "config-list": (lambda m: m.update(model_config=[]), "'model_config'"),
    "keys-int": (lambda m: m.update(model_keys=[1]), "'model_keys'"),
    "keys-missing": (lambda m: m.update(model_keys=["0.W", "9.W"]), r"lacks the model arrays"),
    "optimizer-str": (lambda m: m.update(optimizer="x"), "'optimizer'"),
    "extra-int": (lambda m: m.update(extra=5), "'extra'"),
    "extra-ref-int": (lambda m: m["extra"].update(a={"__ndarray__": 5}), "extra/a"),
    "layers-none": (lambda m: m["model_config"].update(layers=None), r"layers must be"),
    "layers-empty": (lambda m: m["model_config"].update(layers=[]), r"layers must be"),
    "layer-int": (lambda m: m["model_config"]["layers"].__setitem__(0, 5), r"layers\[0\]"),
    "layer-type": (lambda m: m["model_config"]["layers"][2].update(type="Evil"), "Evil"),
    "layer-config": (lambda m: m["model_config"]["layers"][2].update(config=[1]), "config"),
    "dim-str": (lambda m: _cfg0(m).update(in_features="4"), r"layers\[0\]\.config\.in_features"),
    "dim-neg": (lambda m: _cfg0(m).update(out_features=-6), r"config\.out_features"),
    "dim-huge": (lambda m: _cfg0(m).update(out_features=10**30), r"config\.out_features"),
    "bias-str": (lambda m: _cfg0(m).update(use_bias="no"), r"config\.use_bias"),
    "kwarg": (lambda m: _cfg0(m).update(evil=1), r"arguments \['evil'\]"),
    "init": (lambda m: _cfg0(m).update(init="nope"), r"layers\[0\]\.config does not build"),
    "bn-eps": (
        lambda m: m["model_config"]["layers"][1]["config"].update(eps=-1),
        r"layers\[1\]\.config does not build",
    ),
    "threads": (lambda m: m["model_config"].update(kernel_threads="x"), "does not build"),
    "rng": (lambda m: m.update(rng=[1]), "'rng'"),
    "nesting": (lambda m: m["model_config"]["layers"][0].update(type="Sequential"), "layers"),
}


@pytest.mark.parametrize("name", sorted(META_EDITS))
def test_malformed_meta_is_a_checkpoint_error_naming_the_field(tmp_path, name) -> None:
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    edit, words = META_EDITS[name]
    new = edit(meta)
    _write(path, meta if new is None else new, arrays)
    target = _model()
    before = _state_bytes(target)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)
    try:  # into a given model the config need not build; whatever raises changes nothing
        load_checkpoint(path, model=target)
    except CheckpointError:
        assert _state_bytes(target) == before


def test_meta_that_is_not_a_string_or_not_json(tmp_path) -> None:
    path, _, _ = _good(tmp_path)
    _, arrays = _parts(path)
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.arange(3), **arrays)
    with pytest.raises(CheckpointError, match="__meta__ must be one JSON string"):
        load_checkpoint(path)
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array("{" * 100000), **arrays)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_object_member_is_refused_without_unpickling(tmp_path) -> None:
    path, _, _ = _good(tmp_path)
    meta, arrays = _parts(path)
    arrays["extra/a"] = np.array([{"x": 1}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(CheckpointError, match=r"'extra/a' has dtype object.*pickle"):
        load_checkpoint(path)


def test_a_json_file_is_not_a_bnlab_checkpoint(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"lr": 0.1}')
    with pytest.raises(CheckpointError, match=r"not a bnlab checkpoint \(\.npz\).*zip") as e:
        load_checkpoint(path)
    assert "allow_pickle" not in str(e.value)


# -- 4. dtypes kept, resume bit-exact, stale temporaries ----------------------------------------
def test_float64_model_comes_back_float64_with_its_optimizer_slots(tmp_path) -> None:
    m = _model().astype(np.float64)
    opt = Adam.from_model(m, lr=1e-2)
    x = np.random.default_rng(0).normal(size=(8, 4))
    loss_fn = SoftmaxCrossEntropy()
    _, d = loss_fn(m.forward(x), np.arange(8) % 3)
    m.backward(d)
    opt.step()
    save_checkpoint(tmp_path / "c.npz", m, opt)
    ck = load_checkpoint(tmp_path / "c.npz")
    assert _state_bytes(ck.model) == _state_bytes(m)
    opt2 = ck.make_optimizer()
    for s, d in opt.state_dict()["slots"].items():
        for k, v in d.items():
            got = opt2.state_dict()["slots"][s][k]
            assert got.dtype == np.float64 and got.tobytes() == v.tobytes()


def _run(tmp_path, steps, resume_from=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    model = _model(dropout=True)
    it = BatchIterator(x, y, 8, seed=3)
    opt = Adam.from_model(model, lr=1e-2)
    if resume_from is not None:
        ck = load_checkpoint(resume_from, model=model)
        opt = ck.make_optimizer()
        it.load_state_dict(ck.extra["iterator"])
    cb = CheckpointCallback(tmp_path / "run.npz", every=4, write=save_checkpoint, iterator=it)
    Trainer(model, SoftmaxCrossEntropy(), opt, it, callbacks=[cb]).fit(steps)
    return model


def test_resume_with_dropout_and_iterator_is_bit_exact(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _run(tmp_path / "a", 12)
    _run(tmp_path / "b", 5)  # saves at step 4 and at the end (step 5, mid-epoch)
    resumed = _run(tmp_path / "b", 7, resume_from=tmp_path / "b" / "run.npz")
    assert _state_bytes(resumed) == _state_bytes(straight)
    assert straight.layers[3].rng.bit_generator.state == resumed.layers[3].rng.bit_generator.state


def test_bad_generator_state_is_refused(tmp_path) -> None:
    m = _model(dropout=True)
    path = save_checkpoint(tmp_path / "c.npz", m)
    meta, arrays = _parts(path)
    meta["rng"]["3.rng"]["state"] = "x"
    _write(path, meta, arrays)
    target = _model(dropout=True)
    before = target.layers[3].rng.bit_generator.state
    with pytest.raises(CheckpointError, match=r"rng/3\.rng is malformed"):
        load_checkpoint(path, model=target)
    assert target.layers[3].rng.bit_generator.state == before


def test_stale_temporaries_of_killed_saves_are_removed(tmp_path) -> None:
    path, m, opt = _good(tmp_path)
    stale = tmp_path / ".c.npz.bnlab-ab12cd_e.tmp"
    other = tmp_path / ".d.npz.bnlab-ab12cd_e.tmp"  # another target's temporary
    mine = tmp_path / "c.npz.keep.tmp"  # not our naming pattern
    users = tmp_path / ".c.npz.ab12cd_e.tmp"  # looks temporary, but bnlab did not mark it
    fresh = tmp_path / ".c.npz.bnlab-zz12cd_e.tmp"  # a concurrent save that started after us
    for f in (stale, other, mine, users, fresh):
        f.write_bytes(b"half")
        os.utime(f, (time.time() - 60, time.time() - 60))
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    save_checkpoint(path, m, opt)
    assert not stale.exists()
    assert other.exists() and mine.exists() and fresh.exists() and users.exists()


# -- seeded fuzz: any mutation of __meta__ or of an array is a CheckpointError or loads ------
_FUZZ_VALUES = [None, True, 0, -1, 2**63, 10**30, 1.5, float("nan"), float("inf"), "", "x"]
_FUZZ_VALUES += ["Dense", [], [1], {}, {"a": 1}, {"__ndarray__": "model/0.W"}, {"__ndarray__": 5}]
_FUZZ_DTYPES = ["f2", "f8", "c8", "?", "i1", "u8", "M8[s]", "m8[s]", "U3", "S2"]


def _json_paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else []
    items = enumerate(obj) if isinstance(obj, list) else items
    for k, v in items:
        yield from _json_paths(v, (*prefix, k))


def _mutate_meta(meta, rnd):
    paths = list(_json_paths(meta))[1:]
    for _ in range(rnd.choice([1, 2])):
        parent = meta
        path = rnd.choice(paths)
        try:
            for k in path[:-1]:
                parent = parent[k]
            if rnd.random() < 0.15 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = json.loads(json.dumps(rnd.choice(_FUZZ_VALUES)))
        except (KeyError, IndexError, TypeError):
            pass


def _mutate_arrays(arrays, rnd):
    key = rnd.choice(sorted(k for k in arrays if k != "__meta__"))
    a, op = arrays[key], rnd.random()
    if op < 0.15:
        del arrays[key]
    elif op < 0.5:
        arrays[key] = np.ones(a.shape, rnd.choice(_FUZZ_DTYPES))
    elif op < 0.7:
        arrays[key] = np.zeros(tuple(s + 1 for s in a.shape) or (2,), a.dtype)
    else:
        b = a.astype(np.float64)
        b.reshape(-1)[:1] = rnd.choice([np.nan, np.inf, -1.0, 1e300])
        arrays[key] = b


@pytest.mark.parametrize("part", ["meta", "arrays"])
def test_fuzzed_checkpoints_raise_checkpoint_error_or_load(tmp_path, part) -> None:
    import random

    path, _, _ = _good(tmp_path)
    meta0, arrays0 = _parts(path)
    rnd = random.Random(0)
    outcomes = set()
    for _ in range(150):
        meta, arrays = json.loads(json.dumps(meta0)), dict(arrays0)
        _mutate_meta(meta, rnd) if part == "meta" else _mutate_arrays(arrays, rnd)
        _write(path, meta, arrays)
        target = _model()
        before = _state_bytes(target)
        for model in (None, target):
            try:
                ck = load_checkpoint(path, model=model)
                if ck.optimizer_state is not None:
                    ck.make_optimizer()
                outcomes.add("loaded")
            except CheckpointError:
                outcomes.add("refused")
                assert _state_bytes(target) == before
    assert outcomes == {"loaded", "refused"}
