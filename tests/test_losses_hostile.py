"""Issue 23 (medium): losses refuse what they cannot compute honestly."""

import numpy as np
import pytest

from bnlab.losses import SoftmaxCrossEntropy


def test_zero_classes_is_refused():
    with pytest.raises(ValueError, match="0 classes"):
        SoftmaxCrossEntropy()(np.zeros((4, 0), np.float32), np.zeros(4, np.int64))


def test_longdouble_is_not_silently_float32():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match="computed in float32 silently"):
        SoftmaxCrossEntropy()(np.zeros((2, 3), np.longdouble), np.zeros(2, np.int64))
