"""The glue in ``baobab/`` imports without a cycle, and the layers import downwards only.

``baobab.errors`` and ``baobab.config`` import no other baobab module; ``nn`` imports only
those two; ``data``, ``train`` and ``models`` never import the glue above them.
Function-local imports count (they run when the function does).
"""

import ast
from pathlib import Path

from test_nn_imports import _find_cycle

REPO = Path(__file__).resolve().parents[1]
GLUE = {p.stem for p in (REPO / "baobab").glob("*.py") if p.stem != "__init__"}
PACKAGES = {"nn", "train", "data", "models"}


def baobab_imports(path: Path) -> set[str]:
    """The baobab modules and packages ``path`` imports: glue module names, or a package name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "baobab":
                names = [a.name for a in node.names]
            elif node.module.startswith("baobab."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("baobab.")]
        found.update(n for n in names if n in GLUE | PACKAGES)
    return found


def test_glue_modules_import_without_a_cycle():
    graph = {name: baobab_imports(REPO / "baobab" / f"{name}.py") & GLUE for name in GLUE}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle in baobab/: " + " -> ".join(cycle)
    assert graph["errors"] == set() and graph["config"] == {"errors"}
    assert baobab_imports(REPO / "baobab" / "errors.py") == set()


def test_the_layers_import_downwards_only():
    bottom = {"errors", "config"}
    allowed = {"nn": {"errors", "config"}, "data": bottom | {"nn"}, "train": bottom | {"nn"},
               "models": bottom | {"nn"}}
    for package, ok in allowed.items():
        for path in sorted((REPO / package).glob("*.py")):
            extra = baobab_imports(path) - ok - {package}
            assert not extra, f"{package}/{path.name} imports {sorted(extra)} from above its layer"
