"""The layer protocol every bnlab layer follows.

A layer maps ``forward(x) -> y`` and ``backward(dy) -> dx``; ``backward`` also fills
``grads`` (same keys as ``params``). Optimizers update ``params`` in place. Non-trainable
state (running statistics) lives in ``buffers``. ``get_config()`` returns the constructor
arguments, so that a model's architecture can be written as JSON and rebuilt by
:func:`layer_from_config`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

__all__ = ["Layer", "layer_from_config", "LAYER_REGISTRY"]

LAYER_REGISTRY: dict[str, type[Layer]] = {}


class Layer:
    """Base class: parameters, gradients, buffers, train/eval mode and (de)serialization."""

    registry_name: ClassVar[str | None] = None

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

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

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
        """Cast parameters, gradients and floating buffers in place (like torch's ``.double()``)."""
        dt = np.dtype(dtype)
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

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load parameters and buffers; all keys and shapes are checked before anything changes."""
        own = {**self.params, **self.buffers}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"{self.name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for k, v in own.items():
            new = np.asarray(state[k])
            if new.shape != v.shape:
                raise ValueError(
                    f"{self.name}.load_state_dict: '{k}' has shape {new.shape}, expected {v.shape}"
                )
        for k in self.params:
            self.params[k][...] = state[k]
        for k in self.buffers:
            self.buffers[k] = np.array(state[k], dtype=self.buffers[k].dtype, copy=True)

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def layer_from_config(kind: str, config: dict[str, Any]) -> Layer:
    """Rebuild a layer from its class name and :meth:`Layer.get_config` output."""
    try:
        cls = LAYER_REGISTRY[kind]
    except KeyError:
        raise ValueError(
            f"unknown layer type {kind!r}; known types: {sorted(LAYER_REGISTRY)}"
        ) from None
    return cls(**config)
