"""Every docstring example in baobab.train runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import baobab.train

MODULES = sorted(m.name for m in pkgutil.iter_modules(baobab.train.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"baobab.train.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in baobab.train.{name}"
