"""bnlab: Batch Normalization and Batch Renormalization from first principles.

``import bnlab`` is light: NumPy and Numba only; matplotlib, Pillow, onnx, torch and tqdm are
imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "save", "load"]


def __getattr__(name: str) -> object:
    """``bnlab.save(model, path)`` and ``bnlab.load(path)``: :mod:`bnlab.deploy.checkpoint`'s,
    imported on first use (``import bnlab`` stays light; a model's own ``save`` method would
    make the layers, floor 2, import deploy, floor 3)."""
    if name in ("save", "load"):
        from bnlab.deploy import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
