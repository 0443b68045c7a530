"""nn.summary: a readable table, with shardings when given a mesh."""

import jax

from baobab import nn
from models_for_tests import ResNetBN, Tower
from test_sharding import RULES


def test_summary_lists_paths_shapes_counts_axes(key, capsys):
    model = ResNetBN(8, 16, 4, key=key)
    text = nn.summary(model)
    assert isinstance(text, str) and capsys.readouterr().out == ""  # returned, not printed
    lines = text.splitlines()
    assert lines[0] == "ResNetBN"
    assert lines[1].split() == ["path", "shape", "dtype", "params", "axes"]
    row = next(l for l in lines if l.startswith("stacked.layer.fc1.weight"))
    assert row.split()[1:4] == ["(2,", "16,", "16)"]
    assert "512" in row and "(layers, embed, mlp)" in row
    assert any(l.startswith("blocks[0].bn.running_mean") and "(state)" in l for l in lines)
    total = nn.count_parameters(model)
    assert f"total: {total:,} parameters" in lines[-1]


def test_summary_shows_shardings(key, mesh8):
    text = nn.summary(Tower(key=key), mesh=mesh8, rules=RULES)
    row = next(l for l in text.splitlines() if l.startswith("blocks[0].attn.q.weight"))
    assert row.rstrip().endswith("P('fsdp', 'tensor')")
