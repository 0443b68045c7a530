"""BERT and ViT against Hugging Face ``transformers``: hidden states, pooler and classifier outputs.

As for the language models, each reference has random weights and a non-default
config, is saved with ``save_pretrained`` and comes into baobab through
``models.hf`` (config translation + name table).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import models, nn
from baobab.models import hf

import torch
import transformers
import safetensors.numpy as safetensors_numpy

ATOL = 1e-5


def _import(ref, tmp_path, **overrides):
    ref.save_pretrained(tmp_path)
    config = hf.config_from_hf(json.loads((tmp_path / "config.json").read_text()), **overrides)
    tensors = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    model = models.build_model(config, key=jax.random.key(1))
    return nn.eval_mode(hf.load_hf(model, tensors, hf.names_for(config))), tensors  # as the .eval() reference


BERT = dict(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
            max_position_embeddings=40, type_vocab_size=3, layer_norm_eps=1e-7, initializer_range=0.1)


def _bert_inputs():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 99, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # padded rows
    mask[2, 3:] = 0
    types = rng.randint(0, 3, ids.shape)
    return ids, mask, types


def test_bert_matches_transformers(tmp_path):
    torch.manual_seed(0)
    ref = transformers.BertModel(transformers.BertConfig(**BERT)).eval()
    model, tensors = _import(ref, tmp_path)
    assert "pooler.dense.weight" in tensors and model.pooler is not None
    ids, mask, types = _bert_inputs()
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    hidden = jax.jit(lambda m, *a: m(*a))(model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    real = mask.astype(bool)  # padded positions are compared too: they attend to the real tokens only
    np.testing.assert_allclose(np.asarray(hidden)[real], out.last_hidden_state.numpy()[real], atol=ATOL)
    np.testing.assert_allclose(np.asarray(hidden), out.last_hidden_state.numpy(), atol=ATOL)
    np.testing.assert_allclose(model.pool(hidden), out.pooler_output.numpy(), atol=ATOL)

    # sentence embeddings: mean over real tokens, as sentence-transformers computes them
    h = out.last_hidden_state.numpy()
    want = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(models.mean_pool(hidden, jnp.asarray(mask)), want, atol=ATOL)


def test_bert_sequence_classifier_matches_transformers(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(**BERT, num_labels=4, hidden_act="gelu_new")
    ref = transformers.BertForSequenceClassification(config).eval()
    model, tensors = _import(ref, tmp_path)
    assert any(n.startswith("bert.") for n in tensors)  # the prefix is stripped by the table
    assert model.config.num_classes == 4 and model.config.activation == "gelu_tanh"
    ids, mask, types = _bert_inputs()
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(types)).logits.numpy()
    np.testing.assert_allclose(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)), want, atol=ATOL)
    assert model.encode(jnp.asarray(ids)).shape == (3, 11, 48)


VIT = dict(image_size=16, patch_size=4, num_channels=2, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
           intermediate_size=80, layer_norm_eps=1e-6, initializer_range=0.1)


def _pixels():
    return np.random.RandomState(0).randn(2, 2, 16, 16).astype(np.float32)  # (B, C, H, W), torch layout


def test_vit_classifier_matches_transformers(tmp_path):
    torch.manual_seed(0)
    ref = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, num_labels=5, qkv_bias=False)).eval()
    model, tensors = _import(ref, tmp_path)
    assert "vit.encoder.layer.1.attention.attention.query.weight" in tensors  # the checkpoint's names
    assert model.config.num_classes == 5 and not model.config.qkv_bias
    pixels = _pixels()
    with torch.no_grad():
        out = ref(pixel_values=torch.tensor(pixels), output_hidden_states=True)
    logits = jax.jit(lambda m, x: m(x))(model, jnp.asarray(pixels.transpose(0, 2, 3, 1)))  # channels-last
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL)


def test_vit_model_with_pooler_matches_transformers(tmp_path):
    torch.manual_seed(0)
    ref = transformers.ViTModel(transformers.ViTConfig(**VIT, hidden_act="gelu_new")).eval()
    model, _ = _import(ref, tmp_path)
    assert model.classifier is None and model.pooler is not None
    pixels = _pixels()
    with torch.no_grad():
        out = ref(pixel_values=torch.tensor(pixels))
    hidden = model.encode(jnp.asarray(pixels.transpose(0, 2, 3, 1)))  # (B, 1 + 16, D)
    np.testing.assert_allclose(hidden, out.last_hidden_state.numpy(), atol=ATOL)
    np.testing.assert_allclose(model.pool(hidden), out.pooler_output.numpy(), atol=ATOL)
