"""ONNX export of an eval-mode bnlab model (needs ``pip install onnx onnxruntime``; from a
clone of bnlab, ``pip install -e '.[onnx]'``).

bnlab is channels-last (NHWC); ONNX's Conv, MaxPool, GlobalAveragePool and
BatchNormalization are channels-first (NCHW). The graph keeps bnlab's interface: its input and
output are NHWC exactly as bnlab's. A ``Transpose`` to NCHW is inserted before the first
channels-first operator and one back to NHWC before anything that depends on the memory order
(Flatten, Dense on 4-D input, the graph output), so that Flatten orders features as bnlab
does (h, w, c).

Layer mapping: Dense -> Gemm (MatMul + Add on inputs of rank > 2); Conv2D -> Conv;
MaxPool2D -> MaxPool; GlobalAveragePool2D -> GlobalAveragePool (+ Flatten); Flatten -> Flatten;
ReLU/Sigmoid/Tanh/Softmax -> Relu/Sigmoid/Tanh/Softmax; BatchNorm -> BatchNormalization with the
running statistics (Mul + Add when its axis is not the channel axis); ChannelAffine -> Mul + Add;
Dropout -> nothing (the identity at inference); GroupNorm -> Reshape + LayerNormalization +
Reshape + Mul + Add; LayerNorm -> LayerNormalization; Residual -> both paths, then Add;
ZeroPadShortcut -> Slice + Pad; AvgPool2D -> AveragePool (count_include_pad=0).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bnlab._atomic import atomic_write
from bnlab.deploy._walk import (
    bn_scale_shift,
    builtin_kind,
    check_eval_mode,
    check_model,
    check_running_stats,
    check_state_values,
    children,
    describe,
    is_batch_norm,
    iter_paths,
    leaf_shapes,
    model_dtype,
    residual_parts,
)
from bnlab.layers.base import Layer

__all__ = ["export_onnx", "OPSET"]

OPSET = 17
_WHERE = "export_onnx"
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


class _Graph:
    """A growing ONNX graph that tracks the current tensor, its rank and its layout."""

    def __init__(self, helper: Any, numpy_helper: Any, dtype: np.dtype[Any]) -> None:
        self.h, self.nph, self.dtype = helper, numpy_helper, dtype
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.cur = "input"
        self.rank = 0
        self.nchw = False  # only meaningful when rank == 4
        self._n = 0

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: np.ndarray, dtype: Any = None) -> str:
        name = self._name(base)
        arr = np.asarray(value, dtype=dtype or self.dtype)
        self.inits.append(self.nph.from_array(arr, name=name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self._name(base)
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=out, **attrs))
        self.cur = out
        return out

    def to_nchw(self) -> None:
        if self.rank == 4 and not self.nchw:
            self.op("Transpose", [self.cur], "to_nchw", perm=list(_NHWC_TO_NCHW))
            self.nchw = True

    def to_nhwc(self) -> None:
        if self.rank == 4 and self.nchw:
            self.op("Transpose", [self.cur], "to_nhwc", perm=list(_NCHW_TO_NHWC))
            self.nchw = False

    def axis(self, bnlab_axis: int) -> int:
        """The ONNX axis of bnlab's ``bnlab_axis`` in the current layout."""
        ax = bnlab_axis % self.rank
        return _NHWC_TO_NCHW.index(ax) if self.rank == 4 and self.nchw else ax

    def affine(self, bnlab_axis: int, scale: np.ndarray, shift: np.ndarray, base: str) -> None:
        """``y = x * scale + shift`` broadcast along ``bnlab_axis``."""
        ax = self.axis(bnlab_axis)
        shape = [scale.shape[0] if i == ax else 1 for i in range(self.rank)]
        s = self.const(f"{base}_scale", scale.reshape(shape))
        t = self.const(f"{base}_shift", shift.reshape(shape))
        self.op("Mul", [self.cur, s], f"{base}_mul")
        self.op("Add", [self.cur, t], f"{base}_add")


def _dense(g: _Graph, layer: Any) -> None:
    w = layer.params["W"]
    b = layer.params.get("b")
    if g.rank == 2:
        inputs = [g.cur, g.const("W", w)] + ([g.const("b", b)] if b is not None else [])
        g.op("Gemm", inputs, layer.name)
        return
    g.to_nhwc()
    g.op("MatMul", [g.cur, g.const("W", w)], layer.name)
    if b is not None:
        g.op("Add", [g.cur, g.const("b", b)], f"{layer.name}_bias")


def _pads(layer: Any, in_shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int]):
    """ONNX pads [top, left, bottom, right] for bnlab's ``padding`` (TF's "same" convention)."""
    padding = getattr(layer, "padding", "valid")
    if isinstance(padding, int | np.integer):
        return [int(padding)] * 4
    if isinstance(padding, tuple | list) and len(padding) == 2:
        return [int(padding[0]), int(padding[1])] * 2
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding != "same":
        raise ValueError(f"{_WHERE}: layer '{layer.name}': unsupported padding {padding!r}")
    begin, end = [], []
    for size, k, s in zip(in_shape[:2], kernel, stride, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def _conv(g: _Graph, layer: Any, in_shape: tuple[int, ...]) -> None:
    g.to_nchw()
    w = np.transpose(layer.params["W"], (3, 2, 0, 1))  # (kh, kw, cin, cout) -> (cout, cin, kh, kw)
    kernel = (int(w.shape[2]), int(w.shape[3]))
    stride = _pair(getattr(layer, "stride", 1))
    inputs = [g.cur, g.const("W", w)]
    if "b" in layer.params:
        inputs.append(g.const("b", layer.params["b"]))
    pads = _pads(layer, in_shape, kernel, stride)
    g.op("Conv", inputs, layer.name, kernel_shape=list(kernel), strides=list(stride), pads=pads)


def _maxpool(g: _Graph, layer: Any, in_shape: tuple[int, ...]) -> None:
    g.to_nchw()
    kernel = _pair(getattr(layer, "pool_size", 2))
    stride = _pair(getattr(layer, "stride", None) or kernel)
    pads = _pads(layer, in_shape, kernel, stride)
    g.op("MaxPool", [g.cur], layer.name, kernel_shape=list(kernel), strides=list(stride), pads=pads)


def _batch_norm(g: _Graph, layer: Any) -> None:
    axis = int(getattr(layer, "axis", -1))
    if g.rank == 4 and axis % 4 == 3:
        g.to_nchw()
    if g.axis(axis) != 1:
        scale, shift = bn_scale_shift(layer)
        g.affine(axis, scale, shift, layer.name)
        return
    mean = layer.buffers["running_mean"]
    gamma = layer.params.get("gamma", np.ones_like(mean))
    beta = layer.params.get("beta", np.zeros_like(mean))
    stats = [gamma, beta, mean, layer.buffers["running_var"]]
    names = [g.const(f"{layer.name}_{k}", v) for k, v in zip("gbmv", stats, strict=True)]
    g.op("BatchNormalization", [g.cur, *names], layer.name, epsilon=float(layer.eps))


def _group_norm(g: _Graph, layer: Any, in_shape: tuple[int, ...]) -> None:
    """GroupNorm as Reshape (N, G, -1) + LayerNormalization (no affine) + Reshape + Mul + Add:
    onnxruntime has LayerNormalization in float32 and float64 (not InstanceNormalization in
    float64, nor GroupNormalization at opset 17)."""
    if g.rank not in (2, 4):
        raise TypeError(f"{_WHERE}: GroupNorm layer '{layer.name}' on rank {g.rank} input")
    g.to_nchw()
    c, groups = in_shape[-1], layer.num_groups
    size = int(np.prod(in_shape)) // groups
    back = [0, c, *in_shape[:-1]] if g.rank == 4 else [0, c]
    g.op("Reshape", [g.cur, g.const("shape", np.array([0, groups, size]), np.int64)], "gn_in")
    ones, zeros = g.const("ones", np.ones(size)), g.const("zeros", np.zeros(size))
    g.op("LayerNormalization", [g.cur, ones, zeros], layer.name, axis=2, epsilon=layer.eps)
    g.op("Reshape", [g.cur, g.const("shape", np.array(back), np.int64)], "gn_out")
    if layer.affine:
        g.affine(-1, layer.params["gamma"], layer.params["beta"], layer.name)


def _layer_norm(g: _Graph, layer: Any) -> None:
    g.to_nhwc()
    k = len(layer.normalized_shape)
    inputs = [g.cur]
    if "gamma" in layer.params:
        inputs.append(g.const("gamma", layer.params["gamma"]))
    else:
        inputs.append(g.const("ones", np.ones(layer.normalized_shape)))
    if "beta" in layer.params:
        inputs.append(g.const("beta", layer.params["beta"]))
    g.op("LayerNormalization", inputs, layer.name, axis=g.rank - k, epsilon=layer.eps)


def _zero_pad(g: _Graph, layer: Any, in_shape: tuple[int, ...]) -> None:
    """He et al.'s option A: strided Slice of H and W, then Pad of the channels with zeros."""
    g.to_nchw()
    s = layer.stride
    ints = {
        k: g.const(k, np.array(v), np.int64)
        for k, v in (
            ("starts", [0, 0]),
            ("ends", [2**62, 2**62]),
            ("axes", [2, 3]),
            ("steps", [s, s]),
        )
    }
    g.op("Slice", [g.cur, *ints.values()], f"{layer.name}_slice")
    pads = g.const(
        "pads", np.array([0, 0, 0, 0, 0, layer.out_channels - in_shape[-1], 0, 0]), np.int64
    )
    g.op("Pad", [g.cur, pads], layer.name)


def _layer(g: _Graph, layer: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    """Append the nodes of one leaf layer."""
    kind = builtin_kind(layer)
    if is_batch_norm(layer):
        _batch_norm(g, layer)
    elif kind == "Dense":
        _dense(g, layer)
    elif kind == "Conv2D":
        _conv(g, layer, in_shape)
    elif kind == "MaxPool2D":
        _maxpool(g, layer, in_shape)
    elif kind == "GlobalAveragePool2D":
        g.to_nchw()
        g.op("GlobalAveragePool", [g.cur], layer.name)
        if len(out_shape) == 1:
            g.op("Flatten", [g.cur], f"{layer.name}_flatten", axis=1)
    elif kind == "Flatten":
        g.to_nhwc()
        g.op("Flatten", [g.cur], layer.name, axis=1)
    elif kind in ("ReLU", "Sigmoid", "Tanh"):
        g.op({"ReLU": "Relu"}.get(kind, kind), [g.cur], layer.name)
    elif kind == "Softmax":
        g.op("Softmax", [g.cur], layer.name, axis=g.axis(int(getattr(layer, "axis", -1))))
    elif kind == "ChannelAffine":
        g.affine(layer.axis, layer.params["scale"], layer.params["shift"], layer.name)
    elif kind == "GroupNorm":
        _group_norm(g, layer, in_shape)
    elif kind == "LayerNorm":
        _layer_norm(g, layer)
    elif kind == "ZeroPadShortcut":
        _zero_pad(g, layer, in_shape)
    elif kind == "AvgPool2D":  # "same" averages the real pixels only, as count_include_pad=0
        g.to_nchw()
        pads = [layer._pads(*in_shape[:2])[i] for i in (0, 2, 1, 3)]
        attrs = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides)}
        g.op("AveragePool", [g.cur], layer.name, pads=pads, count_include_pad=0, **attrs)
    g.rank = len(out_shape) + 1


_KNOWN: tuple[str, ...] = ("Dense", "Conv2D", "MaxPool2D", "GlobalAveragePool2D", "Flatten")
_KNOWN += ("ReLU", "Sigmoid", "Tanh", "Softmax", "Dropout", "ChannelAffine")
_KNOWN += ("GroupNorm", "LayerNorm", "ZeroPadShortcut", "AvgPool2D")


def _emit(g: _Graph, layer: Layer, shapes: dict[int, Any]) -> None:
    """Append the nodes of ``layer``: a leaf, a chain of layers or a residual block (both paths
    from the block's input, in one layout, then Add)."""
    parts = residual_parts(layer)
    if parts is not None:
        g.to_nchw()  # convolutions follow: the branch and shortcut share one Transpose
        start = (g.cur, g.rank, g.nchw)
        _emit(g, parts[0], shapes)
        branch, nchw = g.cur, g.nchw
        g.cur, g.rank, g.nchw = start
        if parts[1] is not None:
            _emit(g, parts[1], shapes)
        if g.rank == 4 and g.nchw != nchw:
            (g.to_nchw if nchw else g.to_nhwc)()
        g.op("Add", [branch, g.cur], layer.name)
        return
    subs = children(layer)
    if subs is None:
        _layer(g, layer, *shapes[id(layer)])
        return
    for sub in subs:
        _emit(g, sub, shapes)


def _check_supported(model: Layer) -> None:
    """Raise TypeError naming the first layer with no ONNX mapping."""
    for path, layer in iter_paths(model):
        if not (is_batch_norm(layer) or builtin_kind(layer) in _KNOWN):
            raise TypeError(
                f"{_WHERE}: {describe(path, layer)} has no ONNX mapping; supported: "
                f"{', '.join(_KNOWN)}, BatchNorm, BatchRenorm, Sequential and Residual containers"
            )


def export_onnx(model: Layer, path: str | os.PathLike[str], input_shape: tuple[int, ...]) -> Any:
    """Write ``model`` (eval mode) as an ONNX file (opset 17) and return the ``onnx.ModelProto``.

    Args:
        model: a bnlab layer or Sequential in eval mode, every BN with running statistics.
        path: the ``.onnx`` file; written atomically (temporary file, then rename).
        input_shape: the shape of ONE example, channels-last, without the batch axis, e.g.
            ``(28, 28, 1)`` or ``(784,)``. The batch axis is dynamic (``"batch"``).

    The graph's input ``"input"`` and output ``"output"`` have bnlab's shapes and layout; the
    tensors are in the model's dtype (float32 or float64). The model is checked with
    ``onnx.checker`` before anything is written.

    Raises:
        ValueError: a layer in training mode, a BN without running statistics, a NaN/Inf
            weight or negative running_var, an ``input_shape`` the model cannot take;
            TypeError: a layer with no ONNX mapping, a model mixing float32 and float64 or in
            another dtype, or ``model`` not a bnlab Layer.
    """
    check_model(model, _WHERE)
    _check_supported(model)
    check_eval_mode(model, _WHERE)
    check_running_stats(model, _WHERE)
    check_state_values(model, _WHERE)
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dtype = model_dtype(model, _WHERE)  # of the whole model: its first layer may have none
    shapes = leaf_shapes(model, input_shape, _WHERE)
    g = _Graph(helper, numpy_helper, dtype)
    (in_shape, out_shape) = shapes[0]
    g.rank = len(in_shape) + 1
    _emit(g, model, shapes)
    g.to_nhwc()
    g.op("Identity", [g.cur], "output")
    g.nodes[-1].output[0] = "output"
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    inp = helper.make_tensor_value_info("input", elem, ["batch", *in_shape])
    out = helper.make_tensor_value_info("output", elem, ["batch", *out_shape])
    graph = helper.make_graph(g.nodes, model.name, [inp], [out], g.inits)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bnlab"
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    _atomic_save(onnx, proto, os.fspath(path))
    return proto


def _atomic_save(onnx: Any, proto: Any, path: str) -> None:
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
