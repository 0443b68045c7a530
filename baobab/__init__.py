"""baobab: a neural-network framework on a functional core, on JAX.

Subpackages: ``baobab.nn`` (modules), ``baobab.train`` (the training loop),
``baobab.data`` (input pipelines), ``baobab.models`` (the model zoo). Importing any
of them changes nothing in the process: process-wide settings (``baobab.host_memory``)
are made by the ``baobab`` command or by an explicit call.
"""

__version__ = "0.1.0"
