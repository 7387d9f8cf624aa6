"""The old module paths of cifar10-keras still import for one release, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest

from bnlab.data import cifar_source, sources
from bnlab.experiments import cifar10_keras as ck
from bnlab.experiments.cifar10_keras import nets, report

OLD = {
    "bnlab.experiments.cifar10_keras_nets": ("bnlab.experiments.cifar10_keras.nets", nets),
    "bnlab.experiments.cifar10_keras_data": ("bnlab.data.cifar_source", cifar_source),
    "bnlab.experiments.cifar10_keras_report": ("bnlab.experiments.cifar10_keras.report", report),
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_old_path_warns_and_re_exports_the_same_objects(old: str) -> None:
    new_name, new = OLD[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new_name}; import it from"):
        mod = importlib.import_module(old)
    assert mod.__all__
    for name in mod.__all__:
        got = getattr(mod, name)
        want = getattr(new, name, None) or getattr(sources, name, None)
        if name == "load":
            want = cifar_source.load_cifar10_data
        assert got is want, name


def test_the_experiment_module_keeps_the_names_other_experiments_use() -> None:
    assert ck.build_model is nets.build_model and ck.epoch_batches is nets.epoch_batches
    assert ck.load is cifar_source.load_cifar10_data and ck.ENV_DATA == "BNLAB_CIFAR10"
    assert ck.describe_source is sources.describe_source
    for name in ("DESCRIPTION", "add_arguments", "run", "render", "DEFAULTS", "resolve"):
        assert name in ck.__all__ and hasattr(ck, name), name
    assert ck.DEFAULTS["bn_momentum"] == 0.01  # declared once, in Cifar10KerasConfig


def test_no_module_of_the_package_imports_the_deprecated_paths() -> None:
    from pathlib import Path

    pkg = Path(ck.__file__).parent
    for path in pkg.glob("*.py"):
        imports = [
            line
            for line in path.read_text().splitlines()
            if line.lstrip().startswith(("from ", "import "))
        ]
        assert imports, path
        for old in OLD:
            assert not [line for line in imports if old in line], (path, old)
