"""torch.nn.Sequential -> bnlab Sequential (the inverse of :func:`bnlab.deploy.to_torch`).

Read in :func:`to_torch`'s convention: the torch model takes NHWC input and switches layout with
``Permute`` modules. A torch model without them whose first module is channels-first (Conv2d,
MaxPool2d, BatchNorm2d, AdaptiveAvgPool2d) is taken to receive NCHW input; the bnlab model
then takes the same data as NHWC. Flattening an NCHW map bigger than 1x1 cannot be reproduced
without reordering the next Linear's weights, so it is refused with a clear error.

``BatchNorm1d`` keeps torch's layout: it normalizes axis 1 of an (N, C) or (N, C, L) input
(torch's contract), so it becomes ``BatchNorm(C, axis=1)`` and the bnlab model takes the same
(N, C, L) data as torch; after a Linear, Flatten or global pooling the tensor is (N, C) and
it becomes the usual ``BatchNorm(C)`` (axis -1, the same axis). A channels-last reading would
normalize the wrong axis of an (N, C, L) input and, when C == L, run without error.

The whole model has one dtype, that of the torch module's floating parameters and buffers
(float32 or float64); a module mixing them, or in float16/bfloat16, is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["from_torch"]

_CHANNELS_FIRST = ("Conv2d", "MaxPool2d", "BatchNorm2d", "AdaptiveAvgPool2d", "AvgPool2d")


def _flat_modules(module: Any) -> list[Any]:
    import torch

    if isinstance(module, torch.nn.Sequential):
        return [m for sub in module for m in _flat_modules(sub)]
    return [module]


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _dtype(module: Any) -> np.dtype[Any]:
    """The one floating dtype of ``module``'s parameters and buffers (float32 if none)."""
    import torch

    tensors = [*module.parameters(), *module.buffers()]
    found = sorted({str(t.dtype) for t in tensors if t.is_floating_point() or t.is_complex()})
    if len(found) > 1:
        raise TypeError(
            f"from_torch: the module mixes dtypes {found}; convert it to one with .float() or "
            ".double() first"
        )
    if not found or found[0] == str(torch.float32):
        return np.dtype(np.float32)
    if found[0] == str(torch.float64):
        return np.dtype(np.float64)
    raise TypeError(
        f"from_torch: the module is {found[0]}; bnlab models are float32 or float64, convert "
        "it with .float() or .double() first"
    )


def _fail(i: int, m: Any, why: str) -> TypeError:
    return TypeError(f"from_torch: module {i} ({type(m).__name__}: {m!r}) cannot be read: {why}")


class _Reader:
    """Turns torch modules into bnlab layers while tracking the torch layout."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.layers: list[Any] = []
        self.dtype = dtype
        self.nchw = False
        self.after_gap = False
        self.rank2 = False  # the tensor is known to be (N, features): after Linear/Flatten/GAP

    def permute(self, i: int, m: Any) -> None:
        if m.dims == (0, 3, 1, 2) and not self.nchw:
            self.nchw = True
        elif m.dims == (0, 2, 3, 1) and self.nchw:
            self.nchw = False
        else:
            raise _fail(i, m, f"unexpected permutation {m.dims} (NCHW now: {self.nchw})")

    def conv(self, i: int, m: Any) -> Any:
        from bnlab.layers import Conv2D

        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            raise _fail(i, m, "only groups=1, dilation=1 and zero padding are supported")
        pad = m.padding
        if isinstance(pad, tuple):
            if pad[0] != pad[1]:
                raise _fail(i, m, "only equal padding on both spatial axes is supported")
            pad = int(pad[0])
        padding: Any = "valid" if pad == 0 else pad
        cout, cin, kh, kw = m.weight.shape
        layer = Conv2D(
            cin,
            cout,
            (kh, kw),
            stride=tuple(m.stride),
            padding=padding,
            use_bias=m.bias is not None,
        )
        layer.astype(self.dtype)
        layer.params["W"][...] = np.transpose(_np(m.weight), (2, 3, 1, 0))
        if m.bias is not None:
            layer.params["b"][...] = _np(m.bias)
        return layer

    def batch_norm(self, i: int, m: Any, kind: str) -> Any:
        from bnlab.layers import BatchNorm

        if kind == "BatchNorm1d" and self.nchw:
            raise _fail(i, m, "BatchNorm1d on a 4-D NCHW tensor (torch refuses it too)")
        layer = BatchNorm(
            m.num_features,
            axis=1 if kind == "BatchNorm1d" and not self.rank2 else -1,  # see the docstring
            momentum=m.momentum,
            eps=m.eps,
            affine=m.affine,
            track_running_stats=m.track_running_stats,
        )
        layer.astype(self.dtype)
        if m.affine:
            layer.params["gamma"][...] = _np(m.weight)
            layer.params["beta"][...] = _np(m.bias)
        if m.track_running_stats:
            layer.buffers["running_mean"][...] = _np(m.running_mean)
            layer.buffers["running_var"][...] = _np(m.running_var)
            layer.buffers["num_batches_tracked"][...] = int(m.num_batches_tracked)
        return layer

    def pool(self, i: int, m: Any) -> Any:
        from bnlab.layers import MaxPool2D

        def two(v: Any) -> tuple[int, int]:
            return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

        if two(m.padding) != (0, 0) or two(m.dilation) != (1, 1) or m.ceil_mode:
            raise _fail(i, m, "only padding=0, dilation=1 and ceil_mode=False are supported")
        if m.return_indices:
            raise _fail(i, m, "return_indices=True returns a tuple; bnlab's pooling does not")
        return MaxPool2D(two(m.kernel_size), stride=two(m.stride or m.kernel_size))

    def read(self, i: int, m: Any) -> Any:
        """The bnlab layer for torch module ``m`` (None for layout-only modules)."""
        import bnlab.layers as L
        from bnlab.deploy._torch_modules import torch_modules

        kind = type(m).__name__
        if isinstance(m, torch_modules().Permute):
            return self.permute(i, m)
        if kind in _CHANNELS_FIRST and not self.nchw:
            if self.layers:
                raise _fail(i, m, "a channels-first module on a channels-last tensor")
            self.nchw = True  # plain torch model: NCHW input (see the module docstring)
        if kind in ("Conv2d", "MaxPool2d", "BatchNorm2d", "AvgPool2d") and not self.nchw:
            raise _fail(i, m, "expects an NCHW tensor here")
        if kind == "Linear":
            if self.nchw:
                raise _fail(i, m, "Linear on an NCHW tensor: add Permute(0, 2, 3, 1) before it")
            layer = L.Dense(m.in_features, m.out_features, use_bias=m.bias is not None)
            layer.astype(self.dtype)
            layer.params["W"][...] = _np(m.weight).T
            if m.bias is not None:
                layer.params["b"][...] = _np(m.bias)
            return layer
        if kind == "Conv2d":
            return self.conv(i, m)
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            return self.batch_norm(i, m, kind)
        if kind == "MaxPool2d":
            return self.pool(i, m)
        if kind == "AvgPool2d":
            if m.padding not in (0, (0, 0)) or m.ceil_mode or m.divisor_override is not None:
                raise _fail(i, m, "only padding=0, ceil_mode=False and no divisor_override map")
            return L.AvgPool2D(m.kernel_size, m.stride or m.kernel_size)
        if kind == "AdaptiveAvgPool2d":
            if m.output_size not in (1, (1, 1)):
                raise _fail(i, m, "only output_size=1 (global average pooling) is supported")
            self.nchw, self.after_gap = False, True
            return L.GlobalAveragePool2D()
        if kind == "Flatten":
            if (m.start_dim, m.end_dim) != (1, -1):
                raise _fail(i, m, "only Flatten(start_dim=1, end_dim=-1) maps to bnlab's Flatten")
            if self.after_gap:
                return None  # bnlab's GlobalAveragePool2D already returns (N, C)
            if self.nchw:
                raise _fail(i, m, "flattening NCHW orders features (c, h, w), bnlab (h, w, c)")
            return L.Flatten()
        return self.simple(i, m, kind)

    def simple(self, i: int, m: Any, kind: str) -> Any:
        import bnlab.layers as L
        from bnlab.deploy._torch_modules import torch_modules
        from bnlab.layers.affine import ChannelAffine

        if kind in ("ReLU", "Sigmoid", "Tanh"):
            return getattr(L, kind)()
        if kind == "Dropout":
            return L.Dropout(float(m.p))
        if kind == "Identity":
            return None
        if kind == "Softmax":
            dim = -1 if m.dim is None else int(m.dim)
            if dim not in ((1,) if self.nchw else (-1, 1)):
                raise _fail(i, m, "bnlab's Softmax is over the channels-last feature axis only")
            return L.Softmax()
        if kind in ("GroupNorm", "LayerNorm") or isinstance(m, torch_modules().ZeroPadShortcut):
            return self.norm_or_pad(i, m, kind)
        if isinstance(m, torch_modules().Residual):
            return self.residual(m)
        if isinstance(m, torch_modules().ChannelAffine):
            axis = (0, 2, 3, 1)[m.dim % 4] if self.nchw else m.dim
            layer = ChannelAffine(m.scale.shape[0], axis=axis)
            layer.astype(self.dtype)
            layer.params["scale"][...] = _np(m.scale)
            layer.params["shift"][...] = _np(m.shift)
            return layer
        raise _fail(i, m, "no bnlab equivalent is known")

    def norm_or_pad(self, i: int, m: Any, kind: str) -> Any:
        import bnlab.layers as L

        if kind == "GroupNorm":
            layer: Any = L.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine)
        elif kind == "LayerNorm":
            if self.nchw:
                raise _fail(i, m, "LayerNorm on an NCHW tensor: add Permute(0, 2, 3, 1) before it")
            affine, bias = m.elementwise_affine, m.bias is not None
            layer = L.LayerNorm(tuple(m.normalized_shape), m.eps, affine, bias)
        else:
            if not self.nchw:
                raise _fail(i, m, "ZeroPadShortcut expects an NCHW tensor here")
            return L.ZeroPadShortcut(m.out_channels, m.stride)
        layer.astype(self.dtype)
        if getattr(m, "weight", None) is not None:
            layer.params["gamma"][...] = _np(m.weight)
        if getattr(m, "bias", None) is not None:
            layer.params["beta"][...] = _np(m.bias)
        return layer

    def residual(self, m: Any) -> Any:
        """bnlab's torch ``Residual`` module: each path read from the block's layout."""
        from bnlab.layers import Residual, Sequential

        paths = []
        for part in (m.branch, m.shortcut):
            reader = _Reader(self.dtype)
            reader.nchw, reader.rank2, reader.after_gap = self.nchw, self.rank2, self.after_gap
            reader.layers = [None]  # not the model's first module: no NCHW guess inside a block
            if part is not None:
                _read_all(reader, part)
            paths.append(reader)
        self.nchw = paths[0].nchw
        branch, short = paths[0].layers[1:], paths[1].layers[1:]
        return Residual(Sequential(branch), Sequential(short) if short else None)


def _read_all(reader: _Reader, module: Any) -> None:
    """Append the bnlab layer of every module of ``module`` (flattened) to ``reader.layers``."""
    for i, m in enumerate(_flat_modules(module)):
        try:
            layer = reader.read(i, m)
            if layer is not None:
                layer.check_state_dict(layer.state_dict())  # NaN weights, negative variances
        except ValueError as e:
            raise ValueError(f"from_torch: module {i} ({type(m).__name__}): {e}") from None
        if layer is not None:
            if type(layer).__name__ != "GlobalAveragePool2D":
                reader.after_gap = False
            reader.rank2 = type(layer).__name__ in ("Dense", "Flatten", "GlobalAveragePool2D") or (
                reader.rank2 and type(layer).__name__ not in ("Conv2D", "MaxPool2D")
            )
            layer.train(bool(m.training))
            reader.layers.append(layer)


def from_torch(module: Any) -> Any:
    """A bnlab Sequential equivalent to the torch ``module`` (a Sequential or one module).

    Supported: Linear, Conv2d (groups=1, dilation=1, zero padding), BatchNorm1d/2d (with their
    buffers, ``num_batches_tracked`` included, and any ``momentum`` (None: cumulative),
    ``eps``, ``affine``, ``track_running_stats``), MaxPool2d (padding 0), AdaptiveAvgPool2d(1)
    + Flatten, Flatten, ReLU, Sigmoid, Tanh, Softmax, Dropout, Identity, GroupNorm, LayerNorm
    (channels last), and bnlab's Permute, ChannelAffine, Residual and ZeroPadShortcut modules.
    The bnlab model takes NHWC input where torch takes NCHW, and the torch layout for
    BatchNorm1d (see the module docstring); each layer is in its torch module's train/eval
    mode, and the model in the module's dtype (float32 or float64).

    Raises:
        TypeError: the first module that cannot be read, or a dtype that cannot be kept.
        ValueError: a module whose settings or weights bnlab refuses (e.g. Dropout(p=1),
            NaN weights, a negative running_var), named with its index.
    """
    import torch

    from bnlab.layers import Sequential

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: module must be a torch.nn.Module, got {module!r:.60}")
    reader = _Reader(_dtype(module))
    _read_all(reader, module)
    model = Sequential(reader.layers)
    model.training = bool(module.training)
    return model
