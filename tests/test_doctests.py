"""Every docstring example in baobab's packages runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import baobab.nn

PACKAGES = ["baobab.nn"]
MODULES = ["baobab.config"] + sorted(
    f"{pkg}.{m.name}" for pkg in PACKAGES for m in pkgutil.iter_modules(importlib.import_module(pkg).__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
