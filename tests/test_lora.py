"""LoRA: a tree transform that trains adapters only, carries no optimizer state for frozen
weights, merges back into plain ``Linear`` layers, and exports to transformers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import models, nn, train
from baobab.models import hf_io


def _gpt(scan):
    return models.build_model(models.GPT2Config(vocab_size=64, max_len=16, hidden_size=32, num_layers=2,
                                                num_heads=4, tie_embeddings=False, scan_layers=scan),
                              key=jax.random.key(0))


def _lm_loss(model, batch, key):
    logits = model(batch["tokens"][:, :-1])  # (B, T, V)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:]).mean()


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "stacked"])
def test_lora_trains_adapters_only_and_merges(scan):
    model = _gpt(scan)
    pattern = "transformer.h*.attn.c_attn"
    tuned = nn.lora(model, pattern, "lm_head", rank=4, alpha=8.0, key=jax.random.key(1))
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 64, (4, 9)))
    np.testing.assert_array_equal(tuned(ids[:, :-1]), model(ids[:, :-1]))  # lora_b = 0: same function
    trainable = [p for p, x, m in nn.iter_arrays(tuned) if m.kind == "param" and not m.frozen]
    assert trainable and all(p.endswith(("lora_a", "lora_b")) for p in trainable)

    mesh = train.make_mesh(devices=jax.devices()[:1])
    opt = optax.adam(1e-2)
    state = train.create_state(tuned, opt, mesh=mesh, rules=nn.DEFAULT_RULES)
    step = train.jit_step(train.make_train_step(_lm_loss, opt), state, mesh=mesh, rules=nn.DEFAULT_RULES)
    losses = []
    for _ in range(5):
        state, metrics = step(state, {"tokens": ids})
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    after = nn.state_dict(state.model)
    for path, x in nn.state_dict(tuned).items():  # frozen weights: bit-identical; adapters: moved
        same = np.array_equal(np.asarray(after[path]), np.asarray(x))
        assert same != path.endswith(("lora_a", "lora_b")), path

    merged = nn.merge_lora(state.model)
    assert not any(isinstance(m, nn.LoRALinear) for _, m in nn.iter_modules(merged))
    assert sorted(nn.state_dict(merged)) == sorted(nn.state_dict(model))  # the original paths
    np.testing.assert_allclose(merged(ids[:, :-1]), state.model(ids[:, :-1]), atol=1e-5)


def test_merged_lora_exports_to_transformers(tmp_path):
    import torch
    import transformers
    model = _gpt(False)
    tuned = nn.lora(model, "*.c_attn", "*.c_fc", rank=2, key=jax.random.key(1))
    # pretend training moved the adapters
    tuned = nn.map_arrays(lambda p, x, m: x + 0.05 if p.endswith("lora_b") else x, tuned)
    merged = nn.merge_lora(tuned)
    out = hf_io.export_hf(merged, tmp_path / "hf")
    ref = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = np.random.RandomState(0).randint(0, 64, (2, 10))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(tuned(jnp.asarray(ids)), want, atol=1e-5)


def test_lora_errors_name_the_layers():
    with pytest.raises(ValueError, match=r"match no Linear layer .* its Linear layers are \['transformer"):
        nn.lora(_gpt(False), "*.nothing_here", rank=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        nn.lora(_gpt(False), "lm_head", rank=0, key=jax.random.key(0))


def _state_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_lora_optimizer_state_is_a_small_fraction_of_full_fine_tuning():
    """Measured on the all-MiniLM-L6-v2 architecture (abstract: nothing allocated), Adam, rank 8 on q and v."""
    config = models.BertConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536,
                               num_classes=4)
    opt = train.only_trainable(optax.adamw(1e-4))

    def full():
        return models.build_model(config, key=jax.random.key(0))

    def adapted():
        return nn.unfreeze(nn.lora(full(), "*.attention.self.query", "*.attention.self.value", rank=8,
                                   key=jax.random.key(1)), "classifier")

    full_state = _state_bytes(jax.eval_shape(lambda: opt.init(full())))
    lora_state = _state_bytes(jax.eval_shape(lambda: opt.init(adapted())))
    fraction = lora_state / full_state
    print(f"Adam state: full fine-tune {full_state / 2**20:.1f} MiB, LoRA r=8 {lora_state / 2**20:.3f} MiB "
          f"({100 * fraction:.2f} %)")
    assert full_state == 2 * 4 * nn.count_parameters(full()) + 4  # two fp32 moments per weight (+ count)
    assert fraction < 0.01
