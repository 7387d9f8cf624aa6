"""Same seed, same bits for the conv net: a few training steps' parameters, before vs after.

Runs ``--steps`` RMSprop steps of benchmarks/bench_cnn.py's Keras cifar10_cnn nets (with and
without BN, batch 32, fixed random data) through three paths: ``Sequential``, ``Trainer`` and
a hand-written loop over the layers; saves every parameter and buffer to an ``.npz``. Run it
once per version of bnlab (``--src`` puts that ``src/`` first on the path, e.g. a
``git archive`` export of the old revision), then ``compare`` the two files with
``np.array_equal`` (exit status 1 on any difference)::

    git archive HEAD | tar -x -C /tmp/before
    .venv/bin/python benchmarks/compare_steps.py run /tmp/before.npz --src /tmp/before/src
    .venv/bin/python benchmarks/compare_steps.py run /tmp/after.npz
    .venv/bin/python benchmarks/compare_steps.py compare /tmp/before.npz /tmp/after.npz
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("seq", "trainer", "loop")


def _run_worker(out: str, steps: int) -> None:
    import numpy as np

    sys.path.insert(0, HERE)
    from bench_cnn import BATCH, ours_model

    from bnlab.losses import SoftmaxCrossEntropy
    from bnlab.optim import RMSprop
    from bnlab.train import Trainer

    rng = np.random.default_rng(0)
    x = rng.random((steps, BATCH, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, (steps, BATCH))
    saved: dict[str, np.ndarray] = {}
    for bn in (False, True):
        for path in PATHS:
            model = ours_model(bn)
            opt = RMSprop(model.params, model.grads, lr=1e-3 if bn else 1e-4, decay=1e-6)
            loss_fn = SoftmaxCrossEntropy()
            layers = list(model.layers)
            trainer = Trainer(model, loss_fn, opt, list(zip(x, y, strict=True)))
            for s in range(steps):
                if path == "trainer":
                    trainer.step()
                    continue
                if path == "seq":
                    _, d = loss_fn(model.forward(x[s]), y[s])
                    model.backward(d, need_input_grad=False)
                else:
                    h = x[s]
                    for layer in layers:
                        h = layer.forward(h)
                    _, d = loss_fn(h, y[s])
                    for layer in reversed(layers[1:]):
                        d = layer.backward(d)
                    layers[0].backward(d, need_input_grad=False)
                opt.step()
            for k, v in model.state_dict().items():
                saved[f"{'bn' if bn else 'plain'}/{path}/{k}"] = np.asarray(v)
    np.savez(out, **saved)


def _compare(a: str, b: str) -> int:
    import numpy as np

    fa, fb = np.load(a), np.load(b)
    bad = sorted(set(fa.files) ^ set(fb.files))
    for key in sorted(set(fa.files) & set(fb.files)):
        if not np.array_equal(fa[key], fb[key]):
            bad.append(key)
    groups = sorted({k.rsplit("/", 1)[0] for k in fa.files})
    for g in groups:
        diff = [k for k in bad if k.startswith(g + "/")]
        print(f"{g}: {'IDENTICAL' if not diff else f'{len(diff)} arrays differ: {diff[:4]}'}")
    # the three paths of one file against each other
    for f, name in ((fb, b),):
        for net in ("plain", "bn"):
            keys = [k.split("/", 2)[2] for k in f.files if k.startswith(f"{net}/seq/")]
            for path in PATHS[1:]:
                same = all(
                    np.array_equal(f[f"{net}/seq/{k}"], f[f"{net}/{path}/{k}"]) for k in keys
                )
                print(f"{name}: {net} seq vs {path}: {'identical' if same else 'DIFFERENT'}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("out")
    run.add_argument("--src", default=None, help="a bnlab src/ directory to import instead")
    run.add_argument("--steps", type=int, default=3)
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a")
    cmp.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "compare":
        return _compare(args.a, args.b)
    if args.worker:
        _run_worker(args.out, args.steps)
        return 0
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.path.abspath(args.src) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "run", args.out, "--steps", str(args.steps), "--worker"]
    return subprocess.run(cmd, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
