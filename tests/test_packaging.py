"""The package installs as baobab.nn/train/data/models from top-level folders,
both editable (the test environment) and as a wheel; the console command exists."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["nn", "train", "data", "models"]


def _where(code: str, cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_editable_install_maps_top_level_folders(tmp_path):
    code = "import baobab.nn, baobab.train, baobab.data, baobab.models as m; " \
           "print(baobab.nn.__file__); print(m.__file__)"
    nn_file, models_file = _where(code, tmp_path).splitlines()
    assert Path(nn_file).resolve() == REPO / "nn" / "__init__.py"
    assert Path(models_file).resolve() == REPO / "models" / "__init__.py"


@pytest.mark.slow
def test_wheel_contains_and_imports_the_subpackages(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("baobab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for sub in SUBPACKAGES:
        assert f"baobab/{sub}/__init__.py" in names
    assert "baobab/nn/_module.py" in names and "baobab/cli.py" in names
    assert not any(n.startswith(("tests/", "nn/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "baobab = baobab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    env = dict(os.environ, PYTHONPATH=str(site))
    nn_file = _where("import baobab.nn as nn; nn.Linear; print(nn.__file__)", tmp_path, env)
    assert Path(nn_file).resolve() == (site / "baobab" / "nn" / "__init__.py").resolve()


def test_console_command_exists():
    exe = shutil.which("baobab", path=str(Path(sys.executable).parent))
    assert exe, "the `baobab` console script is not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "baobab 0.1.0"
    help_out = subprocess.run([exe], capture_output=True, text=True)
    assert help_out.returncode == 2 and "demo" in help_out.stdout


def test_runtime_code_never_imports_torch_or_tensorflow():
    forbidden = re.compile(r"^\s*(import|from)\s+(torch|tensorflow)\b|pickle\.loads?\(", re.MULTILINE)
    for folder in ["baobab", *SUBPACKAGES]:
        for path in (REPO / folder).rglob("*.py"):
            hit = forbidden.search(path.read_text())
            assert hit is None, f"{path} contains {hit.group(0)!r}"
