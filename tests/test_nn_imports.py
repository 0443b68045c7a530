"""baobab.nn's private files import each other without a cycle, function-local imports included.

The layers from the bottom: ``_context``, ``_fields`` -> ``_pytree`` -> ``_core`` ->
``_tree`` -> ``_module`` -> everything else. Imports under ``if TYPE_CHECKING:`` are
for annotations only and never run, so they are not edges.
"""

import ast
from pathlib import Path

NN = Path(__file__).resolve().parents[1] / "nn"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(source: str) -> set[str]:
    """The nn files that ``source`` imports, at any depth of its code."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from ._x import y
                found.add(node.module.split(".")[0])
            else:  # from . import _x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("baobab.nn."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("baobab.nn."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _graph() -> dict[str, set[str]]:
    files = {p.stem: p for p in NN.glob("_*.py") if p.stem != "__init__"}
    return {name: _imports(path.read_text()) & set(files) for name, path in files.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_function_local_imports_count_and_type_checking_ones_do_not():
    source = (
        "from . import _context\n"
        "from ._tree import At\n"
        "if TYPE_CHECKING:\n    from ._module import Module\n"
        "def f():\n    from ._precision import cast_floating\n"
        "class C:\n    def g(self):\n        import baobab.nn._params\n"
    )
    assert _imports(source) == {"_context", "_tree", "_precision", "_params"}
    graph = _graph()
    assert graph["_context"] == set() and graph["_fields"] == set()


def test_nn_private_files_import_without_a_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle among nn files: " + " -> ".join(cycle)


def test_the_core_sits_below_module():
    graph = _graph()
    assert "_module" not in graph["_core"] | graph["_tree"] | graph["_pytree"] | graph["_fields"]
