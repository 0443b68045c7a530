"""The environment that the README's test install makes, seen from plain Python processes.

conftest.py sets ``JAX_PLATFORMS`` and ``XLA_FLAGS`` for this process, so each check
runs a fresh interpreter of this environment with none of the test setup: only
``PATH`` and a scratch ``HOME``, as a user's script would start.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest


def _plain_python(code: str, home) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    # cwd: a user's folder, not the repository (whose build leftovers, e.g. a stale baobab.egg-info, would
    # shadow the installed metadata and with it the jax_plugins entry point).
    return subprocess.run([sys.executable, "-c", code], cwd=home, env=env, capture_output=True, text=True,
                          timeout=300)


def test_transformers_and_sentence_transformers_import_outside_pytest(tmp_path):
    # PyPI's torchvision (x86_64: CUDA builds only) failed this beside the CPU torch; the test extra has none.
    out = _plain_python("import transformers; transformers.LlamaConfig; import sentence_transformers; "
                        "print(transformers.LlamaConfig.model_type)", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["llama"]


TPU_NOISE = re.compile(r"TPU|libtpu|InitGoogle", re.IGNORECASE)


def test_jax_devices_prints_no_tpu_warnings_with_libtpu_installed(tmp_path):
    assert importlib.util.find_spec("libtpu") is not None, "the test extra installs libtpu (jax[tpu])"
    out = _plain_python("import sys, jax; print([d.platform for d in jax.devices()]); "
                        "print(sorted(m for m in sys.modules if m.startswith('baobab')))", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    noise = [line for line in out.stderr.splitlines() if TPU_NOISE.search(line)]
    assert noise == [], "\n".join(noise)
    platforms, baobab_modules = out.stdout.splitlines()
    assert platforms == "['cpu']"
    # JAX ran baobab's plugin hook (pyproject.toml, jax_plugins), which imports nothing more of baobab.
    assert baobab_modules == "['baobab', 'baobab._jax_plugin']"


def test_asking_for_the_tpu_says_why_there_is_none(tmp_path):
    out = _plain_python("import jax\ntry:\n    jax.devices('tpu')\nexcept RuntimeError as e:\n    print(e)", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no TPU chips on this machine's PCI bus" in out.stdout and "JAX_FORCE_TPU_INIT=1" in out.stdout


def test_jax_platforms_set_by_the_user_is_left_alone(tmp_path):
    code = ("import os; os.environ['JAX_PLATFORMS'] = 'cpu'\n"
            "from jax._src import xla_bridge\n"
            "import jax; jax.devices()\n"
            "from baobab import _jax_plugin\n"
            "print(xla_bridge._backend_factories['tpu'].factory is not _jax_plugin._no_tpu_here)")
    out = _plain_python(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "True"  # JAX's own TPU factory, untouched


@pytest.mark.parametrize("modules", ["baobab.train", "baobab, baobab.nn, baobab.train, baobab.data, baobab.models, "
                                                    "baobab.cli"])
def test_baobab_never_imports_torch(modules, tmp_path):
    assert importlib.util.find_spec("torch") is not None, "the test extra installs torch: this checks it stays out"
    out = _plain_python(f"import sys, {modules}; print(sorted(m for m in ('torch', 'tensorboardX', 'tensorflow') "
                        f"if m in sys.modules))", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
