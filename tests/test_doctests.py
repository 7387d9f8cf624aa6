"""Every ``>>>`` example in bnlab's docstrings runs and prints what it says."""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import bnlab

MODULES = sorted(m.name for m in pkgutil.walk_packages(bnlab.__path__, "bnlab."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    with warnings.catch_warnings():  # the deprecated shims warn on import (tested elsewhere)
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
