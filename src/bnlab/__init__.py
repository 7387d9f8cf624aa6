"""bnlab: Batch Normalization and Batch Renormalization from first principles.

``import bnlab`` is light: NumPy and Numba only; matplotlib, Pillow, onnx, torch and tqdm are
imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
