"""`baobab import hf` / `baobab export hf` against transformers, end to end through the CLI.

Each reference has random weights and a non-default config (odd head counts, GQA,
RoPE scaling, untied heads, other norm epsilons), is saved with
``save_pretrained(safe_serialization=True)``, imported as a run directory, restored,
and compared: outputs to fp32 tolerance, 20 greedy tokens for the LMs. The run is
then exported; the folder must hold the very same bytes under the very same names
(HF -> baobab -> HF is bit-exact) and ``from_pretrained`` must compute the same.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_models_encoders import BERT, VIT, _bert_inputs, _pixels
from test_models_lm import _check_against_reference, _gpt2_ref, _llama_ref

from baobab import cli, nn
from baobab.runs import load_run, restore_model
from baobab.models import hf_io

import safetensors.numpy as safetensors_numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ATOL = 1e-5


def _round_trip(ref, tmp_path):
    """save_pretrained -> baobab import hf -> restored model (in eval mode, as the ``.eval()``
    references); then export hf -> (folder, tensors)."""
    src, run, out = tmp_path / "src", tmp_path / "run", tmp_path / "out"
    ref.save_pretrained(src, safe_serialization=True)
    assert cli.main(["import", "hf", str(src), str(run)]) == 0
    model, step = restore_model(load_run(run))
    assert step == 0
    assert cli.main(["export", "hf", str(run), str(out)]) == 0
    before = safetensors_numpy.load_file(src / "model.safetensors")
    after = safetensors_numpy.load_file(out / "model.safetensors")
    assert sorted(after) == sorted(before)
    for name, x in before.items():  # bit-exact: same dtype, shape and bytes
        assert after[name].dtype == x.dtype and after[name].tobytes() == x.tobytes(), name
    return nn.eval_mode(model), out


def test_gpt2_import_export(tmp_path):
    ref = _gpt2_ref(tie=False)
    model, out = _round_trip(ref, tmp_path)
    _check_against_reference(ref, model, tmp_path)
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = torch.tensor(np.random.RandomState(0).randint(1, 97, (2, 9)))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ref(ids).logits)


@pytest.mark.parametrize("variant", ["gqa-llama3-untied", "mqa-linear-bias-tied"])
def test_llama_import_export(variant, tmp_path):
    ref = _llama_ref(variant)
    model, out = _round_trip(ref, tmp_path)
    assert model.config.rope_scaling is not None
    _check_against_reference(ref, model, tmp_path)
    back = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor(np.random.RandomState(0).randint(1, 101, (2, 9)))
    with torch.no_grad():
        np.testing.assert_array_equal(back(ids).logits.numpy(), ref(ids).logits.numpy())


@pytest.mark.parametrize("head", ["model", "classifier"])
def test_bert_import_export(head, tmp_path):
    torch.manual_seed(0)
    if head == "model":
        ref = transformers.BertModel(transformers.BertConfig(**BERT)).eval()
    else:
        ref = transformers.BertForSequenceClassification(
            transformers.BertConfig(**BERT, num_labels=3, hidden_act="gelu_new")).eval()
    model, out = _round_trip(ref, tmp_path)
    ids, mask, types = _bert_inputs()
    args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    back = type(ref).from_pretrained(out).eval()
    with torch.no_grad():
        want, again = ref(**args), back(**args)
    if head == "model":
        got = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
        np.testing.assert_allclose(got, want.last_hidden_state.numpy(), atol=ATOL)
        np.testing.assert_array_equal(again.last_hidden_state.numpy(), want.last_hidden_state.numpy())
    else:
        got = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
        np.testing.assert_allclose(got, want.logits.numpy(), atol=ATOL)
        np.testing.assert_array_equal(again.logits.numpy(), want.logits.numpy())


@pytest.mark.parametrize("head", ["model", "classifier"])
def test_vit_import_export(head, tmp_path):
    torch.manual_seed(0)
    if head == "model":
        ref = transformers.ViTModel(transformers.ViTConfig(**VIT, hidden_act="gelu_new")).eval()
    else:
        ref = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, num_labels=5,
                                                                            qkv_bias=False)).eval()
    model, out = _round_trip(ref, tmp_path)
    pixels = _pixels()
    back = type(ref).from_pretrained(out).eval()
    with torch.no_grad():
        want, again = ref(pixel_values=torch.tensor(pixels)), back(pixel_values=torch.tensor(pixels))
    x = jnp.asarray(pixels.transpose(0, 2, 3, 1))  # channels-last
    if head == "model":
        np.testing.assert_allclose(model.encode(x), want.last_hidden_state.numpy(), atol=ATOL)
        np.testing.assert_array_equal(again.last_hidden_state.numpy(), want.last_hidden_state.numpy())
    else:
        np.testing.assert_allclose(model(x), want.logits.numpy(), atol=ATOL)
        np.testing.assert_array_equal(again.logits.numpy(), want.logits.numpy())


# ----------------------------------------------------------------------------------------
# Bad inputs: errors by name
# ----------------------------------------------------------------------------------------


def _tiny_gpt2_folder(tmp_path):
    ref = _gpt2_ref(tie=True)
    ref.save_pretrained(tmp_path / "src", safe_serialization=True)
    return tmp_path / "src"


def test_errors_by_name(tmp_path, capsys):
    src = _tiny_gpt2_folder(tmp_path)
    assert cli.main(["import", "hf", str(tmp_path / "nowhere"), str(tmp_path / "r0")]) == 2
    assert "does not exist" in capsys.readouterr().err

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((src / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    assert cli.main(["import", "hf", str(pickled), str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "safetensors" in err and "save_file" in err

    odd = tmp_path / "odd"
    odd.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**cfg, "scale_attn_by_inverse_layer_idx": True,
                                                 "add_cross_attention": True}))
    (odd / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    assert cli.main(["import", "hf", str(odd), str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "scale_attn_by_inverse_layer_idx" in err and "add_cross_attention" in err

    # a missing, an unexpected and a mis-shaped tensor, all in one message
    tensors = safetensors_numpy.load_file(src / "model.safetensors")
    del tensors["transformer.ln_f.bias"]
    tensors["transformer.h.0.attn.extra"] = np.zeros(3, np.float32)
    tensors["transformer.wpe.weight"] = np.zeros((47, 48), np.float32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((src / "config.json").read_text())
    safetensors_numpy.save_file(tensors, bad / "model.safetensors")
    with pytest.raises(ValueError) as info:
        hf_io.import_hf(bad)
    message = str(info.value)
    assert "transformer.ln_f.bias" in message and "transformer.h.0.attn.extra" in message
    assert "transformer.wpe.weight (47, 48)" in message and "(48, 48)" in message


def test_sharded_index_folder_is_read(tmp_path):
    ref = _gpt2_ref(tie=True)
    ref.save_pretrained(tmp_path / "src", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").is_file()
    model, report = hf_io.import_hf(tmp_path / "src")
    model = nn.eval_mode(model)  # as the .eval() reference: HF configs carry dropout
    assert report.fresh == [] and model.config.num_heads == 3
    ids = np.random.RandomState(0).randint(1, 97, (2, 9))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(model, jnp.asarray(ids)), want, atol=ATOL)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_state_dict_round_trip_infers_the_config(depth, tmp_path):
    """Without torchvision here: a torchvision-named state_dict in, the same bytes out, depth read off names."""
    from baobab import models

    config = models.ResNetConfig(depth=depth, num_classes=5, width=8)
    model = models.build_model(config, key=jax.random.key(0))
    first = hf_io.export_hf(model, tmp_path / "a")
    assert not (first / "config.json").exists()  # torchvision has none
    (first / "model.safetensors").rename(tmp_path / "resnet.safetensors")
    again, report = hf_io.import_hf(tmp_path / "resnet.safetensors")
    assert again.config == config and report.fresh == []
    second = hf_io.export_hf(again, tmp_path / "b")
    a = safetensors_numpy.load_file(tmp_path / "resnet.safetensors")
    b = safetensors_numpy.load_file(second / "model.safetensors")
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
