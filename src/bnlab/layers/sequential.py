"""Sequential: a stack of layers applied in order, with flat parameter/gradient views."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from bnlab.layers._common import InputShapeError, fmt_shape
from bnlab.layers._rollback import restore, snapshot
from bnlab.layers.base import Layer, layer_from_config
from bnlab.runtime import check_thread_count
from bnlab.runtime import kernel_threads as _kernel_threads

__all__ = ["Sequential"]


class Sequential(Layer):
    """y = f_L(... f_2(f_1(x))); backward applies the layers' backward passes in reverse.

    ``params``, ``grads``, ``buffers`` and ``regularizers`` are flat dicts keyed ``"i.key"``
    (layer index, then the layer's own key) whose values are the layers' own arrays, so an
    optimizer built on ``model.params``/``model.grads`` updates the layers in place.

    Intermediate outputs and gradients live in buffers owned by each layer and are overwritten
    by the next step (that is what keeps a training step free of large allocations); the
    arrays returned by :meth:`forward` and :meth:`backward` are the caller's own. A backward
    pass applies to the most recent forward pass.

    A forward pass is all or nothing for the model's state: if any layer raises (a BN refusing
    a batch with Inf in a later layer, Ctrl-C), every buffer (running statistics,
    ``num_batches_tracked``) and every generator (Dropout's masks) is put back as it was
    before the call. The snapshot copies the buffers of the layers in training mode, which are
    per-channel vectors: about 7 us for three BN layers of 100 channels, within the noise of
    a 700 us training step of a 784-100-100-100-10 BN MLP at batch 60 on 2 cores.

    Threads: the kernels follow the runtime's policy (:mod:`bnlab.runtime`: image kernels of a
    conv net on one thread while BLAS runs its products on all cores), the same whether the
    layers are called through a Sequential, through ``Trainer`` or in a hand-written loop.
    ``kernel_threads=n`` runs every kernel of :meth:`forward`/:meth:`backward` on ``n``
    threads instead (an explicit override); ``None`` (the default) applies the policy.

    >>> import numpy as np
    >>> from bnlab.layers import Dense, Sigmoid
    >>> model = Sequential([Dense(4, 8, seed=0), Sigmoid(), Dense(8, 2, seed=1)])
    >>> model.forward(np.zeros((3, 4), np.float32)).shape
    (3, 2)
    """

    def __init__(
        self,
        layers: Iterable[Layer | dict[str, Any]],
        *,
        name: str | None = None,
        kernel_threads: int | None = None,
    ) -> None:
        kernel_threads = check_thread_count(kernel_threads, "Sequential: kernel_threads")
        built: list[Layer] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, dict):  # {"type": ..., "config": ...} from get_config()
                layer = layer_from_config(layer["type"], layer.get("config", {}))
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Sequential: layer at index {i} must be a bnlab Layer, "
                    f"got {type(layer).__name__}"
                )
            built.append(layer)
        if not built:
            raise ValueError("Sequential: expected at least one layer, got none")
        self.layers: list[Layer] = built
        self.name = name or "Sequential"
        self.kernel_threads: int | None = kernel_threads
        self.training = True
        self._checked: tuple[int, ...] | None = None
        self._reuse_output = False
        for layer in built:
            layer.reuse_output = True

    # -- flat views ---------------------------------------------------------------------------
    def _flat(self, attr: str) -> dict[str, Any]:
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in getattr(layer, attr).items()
        }

    def _flat_call(self, method: str) -> dict[str, Any]:
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in getattr(layer, method)().items()
        }

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._flat("params")

    @params.setter
    def params(self, value: dict[str, np.ndarray]) -> None:
        raise AttributeError("Sequential.params is a view of its layers' params; set those")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._flat("grads")

    @grads.setter
    def grads(self, value: dict[str, np.ndarray]) -> None:
        raise AttributeError("Sequential.grads is a view of its layers' grads; set those")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self._flat("buffers")

    @buffers.setter
    def buffers(self, value: dict[str, np.ndarray]) -> None:
        raise AttributeError("Sequential.buffers is a view of its layers' buffers; set those")

    @property
    def regularizers(self) -> dict[str, Any]:
        return self._flat("regularizers")

    @regularizers.setter
    def regularizers(self, value: dict[str, Any]) -> None:
        raise AttributeError(
            "Sequential.regularizers is a view of its layers' regularizers; set those"
        )

    @property
    def reuse_output(self) -> bool:
        """Whether the returned arrays are internal buffers (set by an enclosing Sequential)."""
        return self._reuse_output

    @reuse_output.setter
    def reuse_output(self, value: bool) -> None:
        self._reuse_output = bool(value)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def sublayers(self) -> list[Layer]:
        return list(self.layers)

    # -- shapes -------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"Sequential({len(self.layers)} layers)"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape after every layer; a mismatch names both layers and both shapes."""
        return self._shapes(tuple(input_shape))[-1]

    def _shapes(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        shapes = [shape]
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except InputShapeError as err:
                source = (
                    f"{self.layers[i - 1].describe()} at index {i - 1} produced"
                    if i > 0
                    else "the model input has shape"
                )
                raise ValueError(
                    f"{layer.describe()} at index {i} expected input {err.expected} but "
                    f"{source} {fmt_shape(shape)}"
                ) from None
            shapes.append(shape)
        return shapes

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Check every layer's input shape, then build lazy layers (``Dense(units)``) with it.

        ``input_shape`` includes the batch axis (any size): ``model.build((1, 28, 28, 1))``.
        A shape error names the layers before anything is built.
        """
        if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in input_shape
        ):
            raise ValueError(
                f"{self.name}.build: input_shape must be a tuple of ints with the batch axis "
                f"first, e.g. (1, 28, 28, 1); got {input_shape!r}"
            )
        shapes = self._shapes(tuple(int(d) for d in input_shape))
        for layer, shape in zip(self.layers, shapes, strict=False):
            layer.build(shape)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The eval-mode output for ``x``, computed ``batch_size`` examples at a time; the
        train/eval mode of every layer is restored afterwards."""
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(
                f"{self.name}.predict: batch_size must be a positive int, got {batch_size!r}"
            )
        batch_size = int(batch_size)
        x = np.asarray(x)
        if x.ndim < 1 or x.dtype.kind not in "fiub":
            raise ValueError(
                f"{self.name}.predict: x must be an array of examples (batch axis first) of "
                f"numbers, got {x.dtype} of shape {x.shape}"
            )
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            parts = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        finally:
            for m, mode in modes:
                m.training = mode
        return np.concatenate(parts) if parts else self.forward(x)

    # -- computation --------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        if x.shape[1:] != self._checked:
            self.build(x.shape)  # checks every layer's shape, then builds lazy layers
            self._checked = x.shape[1:]
        saved = snapshot(self.layers)
        try:
            threads = self.kernel_threads
            if threads is None:  # the runtime's policy: no override to apply
                for layer in self.layers:
                    x = layer.forward(x)
            else:
                with _kernel_threads(threads):
                    for layer in self.layers:
                        x = layer.forward(x)
        except BaseException:
            restore(saved)  # an earlier BN must not keep this failed batch in its statistics
            raise
        return x if self._reuse_output else x.copy()

    def backward(self, dy: np.ndarray, *, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dy`` = dL/dy; fill every layer's grads; return dL/dx.

        ``need_input_grad=False`` stops at the first layer that has parameters and passes it
        ``need_input_grad=False`` (Dense and Conv2D then skip dL/dx): a training step needs
        no dL/dx.
        """
        threads = self.kernel_threads
        if threads is None:  # the runtime's policy: no override to apply
            return self._backward(dy, need_input_grad)
        with _kernel_threads(threads):
            return self._backward(dy, need_input_grad)

    def _backward(self, dy: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        stop = 0
        if not need_input_grad:
            stop = next(
                (i for i, layer in enumerate(self.layers) if layer.params), len(self.layers)
            )
        for i in range(len(self.layers) - 1, stop - 1, -1):
            layer = self.layers[i]
            if not need_input_grad and i == stop:
                layer.backward(dy, need_input_grad=False)
                return None
            try:
                dx = layer.backward(dy)
            except FloatingPointError as e:  # NaN passes through Dense: a data-parallel
                if i == len(self.layers) - 1:  # step reduces it before refusing on every rank
                    raise
                raise FloatingPointError(
                    f"{e} (no parameter was updated, but the grads of the layers after index "
                    f"{i} hold this dy's values: zero_grad() or backward again)"
                ) from e
            if dx is None:
                raise TypeError(
                    f"{self.name}: {layer.describe()} at index {i} returned None from "
                    "backward(dy, need_input_grad=True); it must return dL/dx"
                )
            dy = dx
        if not need_input_grad:
            return None
        return dy if self._reuse_output else np.array(dy, copy=True)

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def astype(self, dtype: Any) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    # -- serialization ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every layer's parameters and buffers, keyed ``"i.key"``."""
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in layer.state_dict().items()
        }

    def _split_state(self, state: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``state`` keyed ``"i.key"`` as one dict per layer; KeyError on unknown or missing
        keys."""
        per_layer: list[dict[str, np.ndarray]] = [{} for _ in self.layers]
        unexpected = []
        for key, value in state.items():
            idx, _, sub = key.partition(".")
            if not idx.isdigit() or int(idx) >= len(self.layers):
                unexpected.append(key)
                continue
            per_layer[int(idx)][sub] = value
        own = {
            f"{i}.{k}"
            for i, layer in enumerate(self.layers)
            for k in {**layer.params, **layer.buffers}
        }
        missing = sorted(own - set(state))
        unexpected += sorted(set(state) - own - set(unexpected))
        if missing or unexpected:
            raise KeyError(
                f"{self.name}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        return per_layer

    def check_state_dict(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        """Raise (KeyError, ValueError) if :meth:`load_state_dict` would refuse ``state``: every
        layer's keys, shapes, dtypes and values are checked; nothing changes."""
        for i, (layer, sub) in enumerate(zip(self.layers, self._split_state(state), strict=True)):
            where = f"{self.name}: layer {i} ({layer.describe()} '{layer.name}')"
            try:
                layer.check_state_dict(sub, f"{prefix}{i}.")
            except KeyError as e:
                raise KeyError(f"{where}: {e.args[0]}") from None
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load a :meth:`state_dict`; every layer's part is checked (see
        :meth:`check_state_dict`) before any layer changes."""
        self.check_state_dict(state)
        for layer, sub_state in zip(self.layers, self._split_state(state), strict=True):
            layer.load_state_dict(sub_state)

    def generators(self) -> dict[str, np.random.Generator]:
        """Every layer's generators, keyed ``"i.name"``."""
        return self._flat_call("generators")

    def summary(self, input_shape: tuple[int, ...]) -> str:
        """A table of each layer's output shape and parameter count.

        ``input_shape`` is one example's shape, without the batch dimension (Keras' convention),
        e.g. ``(28, 28, 1)`` or ``(784,)``.
        """
        shapes = self._shapes((1, *input_shape))
        rows = [("#", "layer", "output shape", "params")]
        rows.append(("", "input", fmt_shape(shapes[0]), ""))
        for i, (layer, shape) in enumerate(zip(self.layers, shapes[1:], strict=True)):
            rows.append((str(i), layer.describe(), fmt_shape(shape), f"{layer.num_params():,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"total parameters: {self.num_params():,}")
        return "\n".join(lines)

    def get_config(self) -> dict[str, Any]:
        """``{"layers": [{"type", "config"}, ...], "name", "kernel_threads"}``."""
        layers = [
            {"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers
        ]
        return {"layers": layers, "name": self.name, "kernel_threads": self.kernel_threads}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Rebuild a Sequential (with fresh weights) from :meth:`get_config` output."""
        if "layers" not in config:
            raise ValueError(
                f"Sequential.from_config: expected a dict with 'layers', got keys {sorted(config)}"
            )
        return cls(
            config["layers"], name=config.get("name"), kernel_threads=config.get("kernel_threads")
        )

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner}\n])"
