"""The layer protocol every bnlab layer follows; train and deploy accept any :class:`Layer`.

A layer maps ``forward(x) -> y`` and ``backward(dy, *, need_input_grad=True) -> dx``;
``backward`` also fills ``grads`` (same keys as ``params``). Optimizers update ``params`` in
place. Non-trainable state (running statistics) lives in ``buffers``. ``get_config()`` returns
the constructor arguments, so that a model's architecture can be written as JSON and rebuilt by
:func:`layer_from_config`.

What the training loop and bnlab.deploy need of a layer is declared here, with defaults, so
they call it instead of probing for it:

- ``backward(dy, *, need_input_grad=True)``: ``need_input_grad=False`` says the caller will not
  use dL/dx (the model's first layer in a training step); a layer may then skip computing it
  and return None. Every layer's ``backward`` takes this keyword (it may ignore it).
- ``output_shape(input_shape)``: the output shape for an input shape (batch axis included);
  the default is the input shape (shape-preserving layers need not override it).
- ``describe()``: a short label for messages and summaries; the default is the class name.
- ``sublayers()``: the layers a container applies in order (``[]`` for a leaf);
  :meth:`modules` walks them.

A layer of your own (it registers itself by class name for :func:`layer_from_config`)::

    class Double(Layer):
        def forward(self, x):
            return 2.0 * x

        def backward(self, dy, *, need_input_grad=True):
            return 2.0 * dy

    Double().output_shape((3, 4)), Double().describe()    # ((3, 4), 'Double')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Layer",
    "layer_from_config",
    "LAYER_REGISTRY",
    "check_protocol",
    "check_state_array",
]

LAYER_REGISTRY: dict[str, type[Layer]] = {}


class Layer:
    """Base class: parameters, gradients, buffers, train/eval mode and (de)serialization."""

    registry_name: ClassVar[str | None] = None
    #: set by an enclosing Sequential: the arrays ``forward``/``backward`` return may be the
    #: layer's own buffers, overwritten by its next call (a layer is free to ignore it)
    reuse_output: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_REGISTRY[cls.registry_name or cls.__name__] = cls

    def __init__(self, *, name: str | None = None) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        # parameter name -> penalty object (bnlab.optim.L1/L2); counted by the training loop
        self.regularizers: dict[str, Any] = {}
        self.training: bool = True
        self.name: str = name or type(self).__name__

    # -- computation -------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """dL/dx from ``dy`` = dL/dy; fills ``grads``. With ``need_input_grad=False`` the
        caller will not use dL/dx: the layer may skip it and return None."""
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for ``input_shape`` (batch axis included); default: unchanged.

        Raises :class:`bnlab.layers._common.InputShapeError` for a shape the layer refuses.
        """
        return tuple(input_shape)

    def describe(self) -> str:
        """A short label for messages and model summaries (default: the class name)."""
        return type(self).__name__

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create what depends on the input shape (a lazy layer's parameters: ``Dense(units)``);
        nothing by default. :class:`~bnlab.layers.Sequential` calls it before the first forward
        pass with each layer's input shape (batch axis included); a built layer ignores it."""

    # -- structure ---------------------------------------------------------------------------
    def sublayers(self) -> list[Layer]:
        """The layers this container applies in order; ``[]`` for a leaf layer."""
        return []

    def modules(self) -> Iterator[Layer]:
        """This layer, then every layer below it, depth first in forward order."""
        yield self
        for sub in self.sublayers():
            yield from sub.modules()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- mode --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    # -- dtype -------------------------------------------------------------------------------
    def astype(self, dtype: Any) -> Layer:
        """Cast parameters, gradients and floating buffers in place (like torch's ``.double()``)
        to float32 or float64 (anything else is refused: float16 input is computed in float32)."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(
                f"{self.name}.astype: dtype must be float32 or float64, got {dt} (float16 input "
                "is computed in float32; integer or complex weights are not supported)"
            )
        for store in (self.params, self.grads):
            for k, v in store.items():
                store[k] = v.astype(dt)
        for k, v in self.buffers.items():
            if v.dtype.kind == "f":
                self.buffers[k] = v.astype(dt)
        return self

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    # -- serialization -----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this layer (without its weights)."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of parameters and buffers, keyed by name."""
        state = {k: v.copy() for k, v in self.params.items()}
        state.update({k: np.array(v, copy=True) for k, v in self.buffers.items()})
        return state

    def check_state_dict(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        """Raise if ``state`` cannot be loaded by :meth:`load_state_dict`; change nothing.

        Checked: the keys are exactly those of ``params`` and ``buffers``, every shape matches,
        floating arrays receive real numbers (float or int; not bool, complex, object, dates)
        that stay finite in the layer's dtype, integer buffers receive integers that fit, and
        ``running_var`` is >= 0 (a variance). Raises KeyError (keys) or ValueError naming the
        key (``prefix`` + key: a container passes ``"i."``).
        """
        own = {**self.params, **self.buffers}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"{self.name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for k, v in own.items():
            check_state_array(f"{self.name}.load_state_dict: '{prefix}{k}'", state[k], v, k)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load parameters and buffers; everything is checked (see :meth:`check_state_dict`)
        before anything changes."""
        self.check_state_dict(state)
        for k in self.params:
            self.params[k][...] = state[k]
        for k in self.buffers:
            self.buffers[k] = np.array(state[k], dtype=self.buffers[k].dtype, copy=True)

    def generators(self) -> dict[str, np.random.Generator]:
        """The random generators this layer draws from (Dropout's mask stream), by name.

        Checkpoints save and restore their ``bit_generator.state`` so that a resumed run
        draws the same numbers; :class:`~bnlab.layers.Sequential` restores them when a
        forward pass fails.
        """
        return {}

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


_NONNEGATIVE = ("running_var", "num_batches_tracked")  # variances and counts are >= 0


def check_state_array(where: str, new: Any, ref: np.ndarray, key: str = "") -> None:
    """Raise ValueError unless ``new`` can be copied into ``ref`` without loss or surprise.

    ``where`` names the entry in the message. See :meth:`Layer.check_state_dict`.
    """
    arr = new if isinstance(new, np.ndarray) else np.asarray(new)
    if arr.shape != ref.shape:
        raise ValueError(f"{where} has shape {arr.shape}, expected {ref.shape}")
    kind = arr.dtype.kind
    if ref.dtype.kind == "f":
        if kind not in "fiu" or (kind == "f" and arr.dtype.itemsize > 8):
            raise ValueError(
                f"{where} has dtype {arr.dtype}, expected real numbers (float16/32/64 or int) "
                f"for a {ref.dtype} array"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(ref.dtype)
        bad = ~np.isfinite(cast)
        if bad.any():
            raise ValueError(
                f"{where} holds {int(bad.sum())} non-finite value(s) in {ref.dtype} "
                f"(first: {arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))]!r}); expected finite "
                "numbers (a diverged model? load an earlier checkpoint)"
            )
        if key in _NONNEGATIVE and (cast < 0).any():
            raise ValueError(f"{where} holds negative values (min {cast.min()!r}); it must be >= 0")
    elif ref.dtype.kind in "iu":
        if kind not in "iu":
            raise ValueError(f"{where} has dtype {arr.dtype}, expected integers like {ref.dtype}")
        info = np.iinfo(ref.dtype)
        low = 0 if key in _NONNEGATIVE else info.min
        if arr.size and (arr.min() < low or arr.max() > info.max):
            raise ValueError(
                f"{where} holds {arr.min()}..{arr.max()}, expected integers in [{low}, {info.max}]"
            )


def check_protocol(model: object, where: str) -> Layer:
    """``model`` itself if it is a :class:`Layer`; TypeError naming the fix otherwise."""
    if not isinstance(model, Layer):
        raise TypeError(
            f"{where}: model must be a bnlab.layers.Layer (e.g. a Sequential), got "
            f"{type(model).__name__}; subclass bnlab.layers.Layer to train your own"
        )
    return model


def layer_from_config(kind: str, config: dict[str, Any]) -> Layer:
    """Rebuild a layer from its class name and :meth:`Layer.get_config` output."""
    try:
        cls = LAYER_REGISTRY[kind]
    except KeyError:
        raise ValueError(
            f"unknown layer type {kind!r}; known types: {sorted(LAYER_REGISTRY)}"
        ) from None
    return cls(**config)
