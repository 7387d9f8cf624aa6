"""``bnlab recalibrate`` and ``bnlab export``: the deployment subcommands (wired in bnlab.cli).

    bnlab recalibrate CHECKPOINT --data mnist --out NEW_CHECKPOINT [--batch-size 60]
    bnlab recalibrate CHECKPOINT --data cifar-10-python.tar.gz --in-place
    bnlab export CHECKPOINT model.onnx [--fold] [--input-shape 32,32,3]

``--data`` is ``mnist`` or ``fashion-mnist`` (the training images, x / 255, flattened when
the model starts with a Dense layer, NHWC otherwise; the preprocessing of bnlab's MNIST
experiments), a CIFAR-10 copy or an image folder as ``bnlab run cifar10-keras --data`` takes
it (:func:`bnlab.data.load_cifar10`: the training images, x / 255, NHWC), or a
``.npy``/``.npz`` file holding the model's training inputs exactly as they were fed to it (the
array ``x`` of an ``.npz``, or its only array). Inputs must be finite.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the bnlab command starts fast: layers are imported when a command runs
    from bnlab.layers.base import Layer

__all__ = ["add_recalibrate", "add_export", "cmd_recalibrate", "cmd_export", "load_inputs"]


def _first_leaf(model: Layer) -> Layer:
    from bnlab.deploy._walk import iter_leaves

    return next(iter_leaves(model))


def load_inputs(data: str, model: Layer, limit: int | None = None) -> np.ndarray:
    """The training inputs named by ``--data`` (see the module docstring), float32."""
    if data in ("mnist", "fashion-mnist"):
        from bnlab.data import load_fashion_mnist, load_mnist

        (x, _), _ = (load_mnist if data == "mnist" else load_fashion_mnist)()
        x = x[:limit].astype(np.float32) / np.float32(255)
        from bnlab.layers.dense import Dense

        if isinstance(_first_leaf(model), Dense):
            x = x.reshape(len(x), -1)
        return x
    path = Path(data)
    if path.suffix not in (".npy", ".npz") and path.exists():
        return _cifar_inputs(path, limit)
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(
            f"--data: expected 'mnist', 'fashion-mnist', a CIFAR-10 path or image folder, or a "
            f".npy/.npz file of inputs, got {data!r} (no such path)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"--data: no file at {path}")
    x = _read_array(path)[:limit]
    if x.dtype.kind != "f" or x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"--data: {path} holds dtype {x.dtype} shape {x.shape}; expected preprocessed "
            "floats of shape (N, ...) with N >= 1"
        )
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise ValueError(
            f"--data: {path} holds NaN or Inf in {int(bad.sum())} of {len(x)} examples (first: "
            f"row {int(np.argmax(bad))}); population statistics need finite inputs: clean or "
            "drop those rows"
        )
    return x


def _cifar_inputs(path: Path, limit: int | None) -> np.ndarray:
    """The training images of a CIFAR-10 copy or image folder (load_cifar10), x / 255, NHWC."""
    from bnlab.data import load_cifar10

    (x, _), _ = load_cifar10(path)
    return x[:limit].astype(np.float32) / np.float32(255)


def _read_array(path: Path) -> np.ndarray:
    """The array of a .npy, or the ``x`` (or only) array of a .npz; never unpickles."""
    import zipfile

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded as z:
            names = z.files
            if "x" not in names and len(names) != 1:
                raise ValueError(f"--data: {path} must hold an array 'x' or one array, has {names}")
            return z["x" if "x" in names else names[0]]
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        if str(e).startswith("--data"):
            raise
        raise ValueError(
            f"--data: {path} cannot be read as a .npy/.npz array of numbers ({e}); save the "
            "inputs with numpy.save or numpy.savez"
        ) from None


class _SavedOptimizer:
    """Hands a loaded optimizer state back to save_checkpoint unchanged."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def cmd_recalibrate(args: argparse.Namespace) -> int:
    """Recompute the BN population statistics of a checkpoint (Algorithm 2) into a new one."""
    from bnlab.deploy import (
        load_checkpoint,
        recompute_population_stats,
        save_checkpoint,
        shuffled_batches,
    )

    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (m/(m-1) needs m >= 2), got {args.batch_size}")
    if args.limit is not None and args.limit < args.batch_size:
        raise ValueError(f"--limit {args.limit} is fewer than one batch of {args.batch_size}")
    if (args.out is None) == (not args.in_place):
        raise ValueError("give either --out NEW_CHECKPOINT or --in-place (not both)")
    target = Path(args.checkpoint if args.in_place else args.out)
    if target.is_dir():
        raise IsADirectoryError(f"--out {target} is a directory; give a file name (.npz)")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"--out {target}: directory {target.parent} does not exist")
    ckpt = load_checkpoint(args.checkpoint)
    x = load_inputs(args.data, ckpt.model)
    if len(x) < args.batch_size:
        raise ValueError(f"--data: {len(x)} examples are fewer than --batch-size {args.batch_size}")
    batches = shuffled_batches(x, args.batch_size, limit=args.limit, seed=args.seed)
    summary = recompute_population_stats(ckpt.model, batches)
    extra = dict(ckpt.extra or {})
    extra["recalibrated"] = {
        "data": str(args.data),
        "batches": summary.num_batches,
        "examples": summary.num_examples,
        "layers": summary.layers,
    }
    opt = None if ckpt.optimizer_state is None else _SavedOptimizer(ckpt.optimizer_state)
    save_checkpoint(target, ckpt.model, opt, extra=extra)  # atomic: temp file, then rename
    print(
        f"bnlab: recalibrated {len(summary.layers)} BN layers over {summary.num_batches} "
        f"batches of {args.batch_size} ({summary.num_examples} examples); wrote {target}"
    )
    return 0


def _input_shape(text: str | None, model: Layer) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ValueError(f"--input-shape: expected e.g. 784 or 32,32,3, got {text!r}")
        return shape
    from bnlab.layers.dense import Dense

    first = _first_leaf(model)
    if isinstance(first, Dense):
        return (int(first.in_features),)
    raise ValueError(
        f"--input-shape is needed: the model starts with {type(first).__name__}, whose input "
        "height and width cannot be inferred (e.g. --input-shape 32,32,3)"
    )


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint's model as ONNX, optionally with BN folded away first."""
    from bnlab.deploy import export_onnx, fold_batch_norm, load_checkpoint

    out = Path(args.output)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a directory; give the ONNX file's name, e.g. model.onnx")
    model = load_checkpoint(args.checkpoint).model
    model.eval()
    shape = _input_shape(args.input_shape, model)
    if args.fold:
        model = fold_batch_norm(model)
    export_onnx(model, args.output, shape)
    print(f"bnlab: wrote {args.output} (input shape (N, {', '.join(map(str, shape))}))")
    return 0


def add_recalibrate(sub: Any) -> None:
    p = sub.add_parser(
        "recalibrate",
        help="recompute a checkpoint's BN population statistics (Algorithm 2)",
        description="Run the training data through the model in training mode with the "
        "weights fixed, set every BatchNorm's running mean to the average batch mean and its "
        "running variance to m/(m-1) times the average batch variance (Ioffe & Szegedy 2015, "
        "Algorithm 2), and write a new checkpoint. The examples are shuffled (datasets are often "
        "sorted by class) and the last incomplete batch is dropped.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument(
        "--data",
        required=True,
        help="mnist, fashion-mnist, a CIFAR-10 path or image folder, or a .npy/.npz of inputs",
    )
    p.add_argument("--out", default=None, metavar="CHECKPOINT", help="the checkpoint to write")
    p.add_argument("--in-place", action="store_true", help="replace CHECKPOINT itself (atomically)")
    p.add_argument("--batch-size", type=int, default=60, help="m, examples per batch")
    p.add_argument("--limit", type=int, default=None, help="use N examples drawn at random")
    p.add_argument("--seed", type=int, default=0, help="draw and order of the batches")
    p.set_defaults(func=cmd_recalibrate)


def add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint's model to ONNX",
        description="Write the checkpoint's model (eval mode, running statistics) as an ONNX "
        "file (opset 17) taking NHWC or (N, D) input like bnlab.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("output", metavar="MODEL.onnx")
    p.add_argument("--fold", action="store_true", help="fold BN into the preceding layers first")
    p.add_argument("--input-shape", default=None, help="one example's shape, e.g. 32,32,3")
    p.set_defaults(func=cmd_export)
