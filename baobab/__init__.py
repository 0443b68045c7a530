"""baobab: a neural-network framework on a functional core, on JAX.

Subpackages: ``baobab.nn`` (modules), ``baobab.train`` (the training loop),
``baobab.data`` (input pipelines), ``baobab.models`` (the model zoo).
"""

from baobab import _host_memory

__version__ = "0.1.0"

# Before JAX runs anything: XLA:CPU's per-step buffers then reuse the same pages
# instead of faulting in fresh ones (see baobab/_host_memory.py; opt out with
# BAOBAB_HOST_MEMORY=system).
_host_memory.keep_freed_host_memory()
