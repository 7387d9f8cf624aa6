"""Residual blocks (He et al. 2016): ``y = branch(x) + shortcut(x)``, and option A's shortcut.

A :class:`Residual` is a container like :class:`~bnlab.layers.Sequential`: ``layers`` is
``[branch]`` (identity shortcut) or ``[branch, shortcut]``; ``params``, ``grads``, ``buffers``,
``regularizers`` and ``state_dict`` are flat views keyed ``"0.key"`` (branch) and ``"1.key"``
(shortcut), so optimizers, ``Trainer``, penalties, checkpoints and the forward-pass rollback
see every layer, and ``convert_sync_batchnorm`` converts inside it. Backward is the sum rule::

    dL/dx = branch.backward(dy) + shortcut.backward(dy)          (dy itself for the identity)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.layers._common import InputShapeError, float_input
from bnlab.layers.base import Layer, layer_from_config
from bnlab.layers.sequential import Sequential

__all__ = ["Residual", "ZeroPadShortcut"]

_Spec = Layer | list[Any] | dict[str, Any]


def _as_layer(spec: _Spec, what: str) -> Layer:
    """A Layer from a Layer, a list of layers (a Sequential) or a ``{"type", "config"}`` dict."""
    if isinstance(spec, dict):
        return layer_from_config(spec["type"], spec.get("config", {}))
    if isinstance(spec, (list, tuple)):
        return Sequential(list(spec), name=what)
    if not isinstance(spec, Layer):
        raise TypeError(
            f"Residual: {what} must be a bnlab Layer or a list of them, got {type(spec).__name__}"
        )
    return spec


class Residual(Layer):
    """``y = branch(x) + shortcut(x)``; ``shortcut=None`` is the identity.

    ``branch``: a Sequential or a list of layers. ``shortcut``: None, or a layer / list of
    layers (a 1x1 strided ``Conv2D`` projection, + ``BatchNorm``: He et al.'s option B; or
    :class:`ZeroPadShortcut`, option A). ``zero_init_last_gamma=True`` sets gamma of the last
    normalization layer of the branch to 0 (Goyal et al. 2017), so the block starts as its
    shortcut.

    >>> import numpy as np
    >>> from bnlab.layers import Dense, ReLU
    >>> block = Residual([Dense(4, 4, seed=0), ReLU()])
    >>> x = np.ones((2, 4), np.float32)
    >>> bool(np.allclose(block.forward(x), x + np.maximum(x @ block.params["0.0.W"], 0)))
    True
    """

    def __init__(
        self,
        branch: _Spec,
        shortcut: _Spec | None = None,
        *,
        zero_init_last_gamma: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        layers = [_as_layer(branch, "branch")]
        if shortcut is not None:
            layers.append(_as_layer(shortcut, "shortcut"))
        self._inner = Sequential(layers, name=self.name)  # the flat views and state handling
        self.layers: list[Layer] = self._inner.layers
        if not isinstance(zero_init_last_gamma, (bool, np.bool_)):
            got = zero_init_last_gamma
            raise TypeError(f"Residual: zero_init_last_gamma must be True or False, got {got!r}")
        self.zero_init_last_gamma = bool(zero_init_last_gamma)
        self._zeroed = False
        self._shapes_seen: tuple[int, ...] | None = None
        self._zero_last_gamma()

    @property
    def branch(self) -> Layer:
        return self.layers[0]

    @property
    def shortcut(self) -> Layer | None:
        return self.layers[1] if len(self.layers) > 1 else None

    def _zero_last_gamma(self) -> None:
        if not self.zero_init_last_gamma or self._zeroed:
            return
        norms = [m for m in self.branch.modules() if not m.sublayers() and "gamma" in m.params]
        if norms:
            norms[-1].params["gamma"][...] = 0
            self._zeroed = True

    # -- flat views (as Sequential's) ---------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._inner.params

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError("Residual.params is a view of its layers' params; set those")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._inner.grads

    @grads.setter
    def grads(self, value: dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError("Residual.grads is a view of its layers' grads; set those")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self._inner.buffers

    @buffers.setter
    def buffers(self, value: dict[str, np.ndarray]) -> None:
        if value:
            raise AttributeError("Residual.buffers is a view of its layers' buffers; set those")

    @property
    def regularizers(self) -> dict[str, Any]:
        return self._inner.regularizers

    @regularizers.setter
    def regularizers(self, value: dict[str, Any]) -> None:
        if value:
            raise AttributeError("Residual.regularizers is a view of its layers'; set those")

    def sublayers(self) -> list[Layer]:
        return list(self.layers)

    # -- shapes -------------------------------------------------------------------------------
    def describe(self) -> str:
        return "Residual" if self.shortcut is None else f"Residual(+{self.shortcut.describe()})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The branch's output shape, which must equal the shortcut's (or the input's)."""
        a = tuple(self.branch.output_shape(tuple(input_shape)))
        b = tuple(input_shape if self.shortcut is None else self.shortcut.output_shape(input_shape))
        if a != b:
            raise InputShapeError(
                self.describe(),
                f"for which the branch and the shortcut agree (branch gives {a}, shortcut {b}; "
                "give the shortcut a projection or ZeroPadShortcut)",
                tuple(input_shape),
            )
        return a

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Build lazy layers of the branch and shortcut; then zero gamma if asked."""
        for layer in self.layers:
            layer.build(tuple(input_shape))
        self._zero_last_gamma()

    # -- computation --------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """branch(x) + shortcut(x) (shapes checked once per input shape)."""
        shape = np.shape(x)
        if shape != self._shapes_seen:
            self.output_shape(shape)
            self.build(shape)
            self._shapes_seen = shape
        a = self.branch.forward(x)
        b = x if self.shortcut is None else self.shortcut.forward(x)
        return np.add(a, b, dtype=a.dtype)

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """dL/dx = dbranch + dshortcut; fills the grads of both."""
        da = self.branch.backward(dy, need_input_grad=need_input_grad)
        db: np.ndarray | None
        if self.shortcut is None:
            db = dy
        else:
            db = self.shortcut.backward(dy, need_input_grad=need_input_grad)
        if not need_input_grad:
            return None
        assert da is not None and db is not None
        return np.add(da, db, dtype=da.dtype)

    # -- mode, dtype, state (delegated to the layers) -----------------------------------------
    def train(self, mode: bool = True) -> Residual:
        self.training = mode
        self._inner.train(mode)
        return self

    def astype(self, dtype: Any) -> Residual:
        self._inner.astype(dtype)
        return self

    def zero_grad(self) -> None:
        self._inner.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        return self._inner.state_dict()

    def check_state_dict(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        self._inner.check_state_dict(state, prefix)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._inner.load_state_dict(state)

    def generators(self) -> dict[str, np.random.Generator]:
        return self._inner.generators()

    def get_config(self) -> dict[str, Any]:
        """``{"branch": {"type", "config"}, "shortcut": ... or None, "zero_init_last_gamma",
        "name"}``."""

        def spec(layer: Layer | None) -> dict[str, Any] | None:
            return (
                None
                if layer is None
                else {"type": type(layer).__name__, "config": layer.get_config()}
            )

        return {
            "branch": spec(self.branch),
            "shortcut": spec(self.shortcut),
            "zero_init_last_gamma": self.zero_init_last_gamma,
            "name": self.name,
        }

    def __repr__(self) -> str:
        return f"Residual(branch={self.branch!r}, shortcut={self.shortcut!r})"


class ZeroPadShortcut(Layer):
    """He et al.'s option A shortcut: ``y = x[:, ::s, ::s, :]`` with zero channels appended up
    to ``out_channels`` (no parameters). Backward: ``dx[:, ::s, ::s, :] = dy[..., :C_in]``,
    0 elsewhere."""

    def __init__(self, out_channels: int, stride: int = 2, *, name: str | None = None) -> None:
        super().__init__(name=name)
        for arg, v in (("out_channels", out_channels), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"ZeroPadShortcut: {arg} must be a positive int, got {v!r}")
        self.out_channels, self.stride = int(out_channels), int(stride)
        self._in_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        return f"ZeroPadShortcut({self.out_channels}, stride={self.stride})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 4 or input_shape[3] > self.out_channels:
            raise InputShapeError(
                self.describe(), f"(N, H, W, C <= {self.out_channels})", input_shape
            )
        n, h, w, _ = input_shape
        s = self.stride
        return (n, -(-h // s), -(-w // s), self.out_channels)

    def forward(self, x: np.ndarray) -> np.ndarray:
        arr = float_input(x, self.describe(), 4)
        shape = self.output_shape(arr.shape)
        y = np.zeros(shape, arr.dtype)
        s = self.stride
        y[..., : arr.shape[3]] = arr[:, ::s, ::s, :]
        self._in_shape = arr.shape
        return y

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        if self._in_shape is None:
            raise RuntimeError(f"{self.describe()}.backward called before forward")
        if np.shape(dy) != self.output_shape(self._in_shape):
            raise ValueError(
                f"{self.describe()}.backward: dy must have shape "
                f"{self.output_shape(self._in_shape)}, got {np.shape(dy)}"
            )
        dy = np.asarray(dy)
        dx = np.zeros(self._in_shape, dy.dtype)
        s = self.stride
        dx[:, ::s, ::s, :] = dy[..., : self._in_shape[3]]
        return dx

    def get_config(self) -> dict[str, Any]:
        return {"out_channels": self.out_channels, "stride": self.stride, "name": self.name}
