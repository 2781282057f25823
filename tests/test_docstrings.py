"""Every public module of the layers, models and features has a runnable docstring example.

The examples themselves run as tests through `--doctest-modules` (pyproject.toml); this test
makes sure a module cannot lose its example without anyone noticing.
"""

import doctest
import importlib
import pkgutil

import pytest

import keras_rankmixer

PACKAGES = ("keras_rankmixer.layers", "keras_rankmixer.models")
MODULES = ["keras_rankmixer.features", "keras_rankmixer.flops", "keras_rankmixer.data.synthetic"]
for _package in PACKAGES:
    _path = importlib.import_module(_package).__path__
    MODULES += [
        f"{_package}.{info.name}"
        for info in pkgutil.iter_modules(_path)
        # presets.py is data (configs and their metadata), not code with an API to show
        if (not info.name.startswith("_") or info.name == "_checks") and info.name != "presets"
    ]


def test_module_list_is_not_empty():
    assert len(MODULES) > 10 and keras_rankmixer.__version__


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_has_an_example(name):
    module = importlib.import_module(name)
    examples = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert examples > 0, f"{name} has no runnable docstring example"
