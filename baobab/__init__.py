"""baobab: a neural-network framework on a functional core, on JAX.

Subpackages: ``baobab.nn`` (modules), ``baobab.train`` (the training loop),
``baobab.data`` (input pipelines), ``baobab.models`` (the model zoo).
"""

__version__ = "0.1.0"
