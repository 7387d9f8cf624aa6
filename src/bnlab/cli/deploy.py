"""``bnlab recalibrate`` and ``bnlab export``: the deployment subcommands.

    bnlab recalibrate CHECKPOINT --data mnist --out NEW_CHECKPOINT [--batch-size 60]
    bnlab recalibrate CHECKPOINT --data cifar-10-python.tar.gz --in-place
    bnlab export CHECKPOINT model.onnx [--fold] [--input-shape 32,32,3]

``--data`` is what :func:`bnlab.deploy.inputs.load_inputs` reads: ``mnist`` or
``fashion-mnist`` (the training images, x / 255, flattened when the model starts with a Dense
layer, NHWC otherwise), a CIFAR-10 copy or an image folder as ``bnlab run cifar10-keras
--data`` takes it, or a ``.npy``/``.npz`` file of the model's training inputs exactly as they
were fed to it. Every argument is checked before a file is written; the checkpoint is written
atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bnlab.cli.parser import SubParsers, add_command

__all__ = ["add_recalibrate", "add_export", "cmd_recalibrate", "cmd_export"]


# -- the subcommands: `bnlab recalibrate`, `bnlab export` ---------------------------------------


def add_recalibrate(sub: SubParsers) -> None:
    p = add_command(
        sub,
        "recalibrate",
        cmd_recalibrate,
        "recompute a checkpoint's BN population statistics (Algorithm 2)",
        "Run the training data through the model in training mode with the "
        "weights fixed, set every BatchNorm's running mean to the average batch mean and its "
        "running variance to m/(m-1) times the average batch variance (Ioffe & Szegedy 2015, "
        "Algorithm 2), and write a new checkpoint. The examples are shuffled (datasets are often "
        "sorted by class) and the last incomplete batch is dropped.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the checkpoint to read (.npz)")
    p.add_argument(
        "--data",
        required=True,
        help="mnist, fashion-mnist, a CIFAR-10 path or image folder, or a .npy/.npz of inputs",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="CHECKPOINT",
        help="the checkpoint to write (this or --in-place is required)",
    )
    p.add_argument("--in-place", action="store_true", help="replace CHECKPOINT itself (atomically)")
    p.add_argument("--batch-size", type=int, default=60, help="m, examples per batch")
    p.add_argument(
        "--limit", type=int, default=None, help="use N examples drawn at random (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="draw and order of the batches")
    p.add_argument(
        "--test-subset",
        type=int,
        default=None,
        help="measure the accuracy before and after on the first N test examples of --data "
        "(default: the whole test split)",
    )


def add_export(sub: SubParsers) -> None:
    p = add_command(
        sub,
        "export",
        cmd_export,
        "export a checkpoint's model to ONNX",
        "Write the checkpoint's model (eval mode, running statistics) as an ONNX "
        "file (opset 17) taking NHWC or (N, D) input like bnlab.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the checkpoint to read (.npz)")
    p.add_argument("output", metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--fold", action="store_true", help="fold BN into the preceding layers first")
    p.add_argument(
        "--input-shape",
        default=None,
        help="one example's shape, e.g. 32,32,3 (default: the in_features of a first Dense "
        "layer; needed for a model that starts with a convolution)",
    )


# -- what they run -------------------------------------------------------------------------------


class _SavedOptimizer:
    """Hands a loaded optimizer state back to save_checkpoint unchanged."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def _recalibrate_target(args: argparse.Namespace) -> Path:
    """The checkpoint ``bnlab recalibrate`` writes, after checking every option."""
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (m/(m-1) needs m >= 2), got {args.batch_size}")
    if args.limit is not None and args.limit < args.batch_size:
        raise ValueError(f"--limit {args.limit} is fewer than one batch of {args.batch_size}")
    if args.test_subset is not None and args.test_subset < 1:
        raise ValueError(f"--test-subset must be >= 1, got {args.test_subset}")
    if (args.out is None) == (not args.in_place):
        raise ValueError("give either --out NEW_CHECKPOINT or --in-place (not both)")
    target = Path(args.checkpoint if args.in_place else args.out)
    if not args.in_place and target.exists() and os.path.samefile(target, args.checkpoint):
        raise ValueError(
            f"--out {target} is CHECKPOINT itself (the same file); pass --in-place to replace "
            "it, or give another --out to keep the original"
        )
    if target.is_dir():
        raise IsADirectoryError(f"--out {target} is a directory; give a file name (.npz)")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"--out {target}: directory {target.parent} does not exist")
    return target


def _test_accuracy(model: Any, test: tuple[Any, Any] | None) -> str:
    """The model's accuracy on ``test`` in percent; "—" without a labelled split or for a
    model whose output is not ``(N, classes)``."""
    from bnlab.train import evaluate

    if test is None or len(model.output_shape((1, *test[0].shape[1:]))) != 2:
        return "—"
    return f"{100 * evaluate(model, *test)['accuracy']:.2f}%"


def cmd_recalibrate(args: argparse.Namespace) -> int:
    """Recompute the BN population statistics of a checkpoint (Algorithm 2) into a new one;
    print the test accuracy of ``--data``'s test split before and after."""
    from bnlab.deploy import load_checkpoint, save_checkpoint, shuffled_batches
    from bnlab.deploy.inputs import load_inputs, load_test_split
    from bnlab.deploy.population import (
        batch_norm_layers,
        recompute_population_stats,
        tracks_running_stats,
    )

    target = _recalibrate_target(args)
    ckpt = load_checkpoint(args.checkpoint)
    bns = batch_norm_layers(ckpt.model)
    if not any(tracks_running_stats(bn) for _, bn in bns):
        what = "BatchNorm layers without running statistics" if bns else "no BatchNorm layer"
        print(
            f"bnlab: {args.checkpoint} has {what}, so it has no population statistics to "
            "recompute: nothing to do, no file written"
        )
        return 0
    x = load_inputs(args.data, ckpt.model, name="--data")
    if len(x) < args.batch_size:
        raise ValueError(f"--data: {len(x)} examples are fewer than --batch-size {args.batch_size}")
    test = load_test_split(args.data, ckpt.model, args.test_subset)
    before = _test_accuracy(ckpt.model, test)
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
    split = "no labelled test split in --data" if test is None else f"{len(test[1]):,} examples"
    print(f"bnlab: test accuracy ({args.data} test split, {split}): {before} before, "
          f"{_test_accuracy(ckpt.model, test)} after")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint's model as ONNX, optionally with BN folded away first."""
    from bnlab.deploy import export_onnx, fold_batch_norm, load_checkpoint
    from bnlab.deploy.inputs import input_shape

    out = Path(args.output)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a directory; give the ONNX file's name, e.g. model.onnx")
    if out.exists() and Path(args.checkpoint).exists() and out.samefile(args.checkpoint):
        raise ValueError(f"{out} is the checkpoint itself; give the ONNX file another name")
    if out.exists() and out.suffix.lower() != ".onnx":
        raise FileExistsError(
            f"{out} exists and is not an .onnx file; bnlab replaces only an existing .onnx "
            "file: give a new name such as model.onnx"
        )
    model = load_checkpoint(args.checkpoint).model
    model.eval()
    shape = input_shape(args.input_shape, model, name="--input-shape")
    if args.fold:
        model = fold_batch_norm(model)
    export_onnx(model, args.output, shape)
    print(f"bnlab: wrote {args.output} (input shape (N, {', '.join(map(str, shape))}))")
    return 0
