"""NonIIDBatches: two classes a batch, half each, seeded; bad arguments are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.data.noniid import NonIIDBatches


def test_a_small_class_is_drawn_with_replacement_and_every_class_is_reached():
    y = np.array([0] * 3 + [1] * 50 + [2] * 50)
    x = np.arange(len(y))[:, None]
    it = NonIIDBatches(x, y, 16, seed=0)
    seen = set()
    for _ in range(40):
        idx = it.indices()
        classes, counts = np.unique(y[idx], return_counts=True)
        assert len(classes) == 2 and counts.tolist() == [8, 8]
        seen |= set(classes.tolist())
    assert seen == {0, 1, 2}


@pytest.mark.parametrize(
    ("y", "bs", "words"),
    [
        (np.repeat([0, 1], 10), 7, "even and >= 2 (half from each of 2 classes), got 7"),
        (np.repeat([0, 1], 10), 0, "got 0"),
        (np.zeros(20, int), 4, "1 class(es)"),
        (np.repeat([0, 1], 5), 4, "x of 20 rows"),
    ],
)
def test_bad_arguments(y, bs, words):
    with pytest.raises(ValueError, match="NonIIDBatches") as e:
        NonIIDBatches(np.zeros((20, 1)), y, bs, seed=0)
    assert words in str(e.value)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        NonIIDBatches(np.zeros((20, 1)), np.repeat([0, 1], 10), 4.0, seed=0)  # type: ignore[arg-type]
