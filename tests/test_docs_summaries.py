"""docs/nn.md shows nn.summary of a small transformer and a small ResNet; keep it current."""

import os
from pathlib import Path

if __name__ == "__main__":  # the sharded table needs 8 fake devices, set before jax loads
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax

from baobab import nn
from models_for_tests import TinyResNet, TinyTransformer

DOC = Path(__file__).resolve().parents[1] / "docs" / "nn.md"


def render(mesh=None) -> dict[str, str]:
    transformer = TinyTransformer(key=jax.random.key(0))
    resnet = TinyResNet(key=jax.random.key(0))
    out = {"transformer": nn.summary(transformer), "resnet": nn.summary(resnet)}
    if mesh is not None:
        out["transformer-sharded"] = nn.summary(transformer, mesh=mesh, rules=nn.DEFAULT_RULES)
    return out


def test_docs_show_the_current_summaries(mesh8):
    text = DOC.read_text()
    for name, table in render(mesh8).items():
        assert f"<!-- summary:{name} -->\n```text\n{table}\n```" in text, (
            f"docs/nn.md summary '{name}' is stale; regenerate it with "
            f"`python tests/test_docs_summaries.py`")


if __name__ == "__main__":  # regenerate the tables in docs/nn.md
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    text = DOC.read_text()
    for name, table in render(mesh).items():
        start = text.index(f"<!-- summary:{name} -->\n```text\n") + len(f"<!-- summary:{name} -->\n```text\n")
        end = text.index("```", start)  # the block's closing fence (tables hold no backticks)
        text = text[:start] + table + "\n" + text[end:]
    DOC.write_text(text)
