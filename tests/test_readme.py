"""The README's two set-up commands, and .ci/run running exactly the test one."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README must open with a bash block holding the two set-up commands"
    return [l for l in block.group(1).splitlines() if l and not l.startswith("#")]


def test_readme_opens_with_two_commands():
    main, test = _readme_commands()
    assert main == "pip install -e . && baobab train"
    assert test == "pip install -e '.[test]' && python -m pytest"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    _, test = _readme_commands()
    assert f'TEST_COMMAND="{test}"' in ci
    assert '"$rc" -eq 5' in ci  # pytest's "no tests collected" is handled
