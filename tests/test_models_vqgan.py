"""VQGAN (models/vqgan.py, models/vqgan_io.py): min-dalle decoder parity, vqgan-jax msgpack import, the quantiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

from min_dalle_reference import import_min_dalle

from baobab import nn
from baobab.errors import CheckpointError, ShapeMismatchError
from baobab.models import VQGAN, VQGANConfig, build_model, vqgan_io
from baobab.models.flax_msgpack import write_flax_msgpack

# A small config: 16x16 images -> 8x8 codes, attention at level 1 (side 8), a shortcut conv in down[1].
SMALL = dict(resolution=16, in_channels=3, out_channels=3, ch=32, ch_mult=(1, 2), num_res_blocks=1,
             attn_resolutions=(8,), z_channels=8, embed_dim=4, n_embed=16)


@pytest.fixture(scope="module")
def min_dalle_vqgan():
    """min-dalle's detokenizer module (``min_dalle_reference`` undoes its import's side effects)."""
    return import_min_dalle("min_dalle.models.vqgan_detokenizer")


def _build(config, seed=0):
    """A VQGAN with random numpy weights, built abstractly: no per-array init programs to compile."""
    return _random(jax.eval_shape(lambda: build_model(config, key=jax.random.key(0))), seed)


def _random(model, seed=0):
    """``model`` with every array drawn at random (norm scales around 1), so no parameter is a trivial 1 or 0."""
    rng = np.random.RandomState(seed)

    def draw(path, x, meta):
        values = rng.randn(*x.shape).astype(np.float32) * 0.2
        return values + 1.0 if path.endswith("weight") and ".norm" in path else values
    return nn.map_arrays(draw, model)


# ----------------------------------------------------------------------------------------
# Parity with min-dalle's VQGAN decoder (dalle-mini's f16_16384 sizes, random weights)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detokenizer(min_dalle_vqgan):
    torch.manual_seed(0)
    detok = min_dalle_vqgan.VQGanDetokenizer().eval()
    with torch.no_grad():  # the norms start at weight 1, bias 0: move them so a swapped name would show
        for name, p in detok.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    config = VQGANConfig(norm_eps=1e-5)  # min-dalle's GroupNorms use torch's default eps
    abstract = jax.eval_shape(lambda: VQGAN(config, key=jax.random.key(0)))
    # The detokenizer has no encoder: only those arrays need values of their own.
    model = nn.map_arrays(lambda p, x, m: np.zeros(x.shape, x.dtype) if p.startswith(("encoder", "quant_conv"))
                          else x, abstract)
    state = {k: v.detach().numpy() for k, v in detok.state_dict().items()}
    model, report = vqgan_io.load_torch(model, state)
    return detok, model, report


def test_min_dalle_names_load_and_the_encoder_is_reported_fresh(detokenizer):
    detok, model, report = detokenizer
    assert report.kind == "vqgan" and report.fresh and report.loaded == len(detok.state_dict())
    assert all(p.startswith(("encoder.", "quant_conv.")) for p in report.fresh)
    assert "quant_conv.weight" in report.fresh and "encoder.down[4].attn[1].q.weight" in report.fresh
    np.testing.assert_array_equal(model.quantize.embedding.weight, detok.embedding.weight.detach().numpy())
    torch_w = detok.decoder.up[1].block[0].nin_shortcut.weight.detach().numpy()  # (O, I, 1, 1) -> (1, 1, I, O)
    np.testing.assert_array_equal(model.decoder.up[1].block[0].nin_shortcut.weight, torch_w.transpose(2, 3, 1, 0))


def test_decoder_and_decode_code_match_min_dalle(detokenizer):
    detok, model, _ = detokenizer
    z = np.random.RandomState(0).randn(1, 2, 2, 256).astype(np.float32)  # (B, h, w, z_channels)
    codes = np.array([[5, 16383, 0, 777]])  # (B, h*w), row-major 2x2
    with torch.no_grad():
        ref = detok.decoder(torch.from_numpy(z).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        e = detok.embedding(torch.from_numpy(codes)).view(1, 2, 2, 256).permute(0, 3, 1, 2)
        ref_codes = detok.decoder(detok.post_quant_conv(e)).permute(0, 2, 3, 1).numpy()
    # One compilation for both: the decoder alone, and embedding + post_quant_conv + decoder.
    both = jax.jit(lambda m, z, c: m.decoder(jnp.concatenate([z, m.post_quant_conv(m.quantize.embedding(c))])))
    ours = np.asarray(both(model, jnp.asarray(z), jnp.asarray(codes.reshape(1, 2, 2), jnp.int32)))
    assert ours.shape == (2, 32, 32, 3) and ref.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(ours[:1], ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours[1:], ref_codes, atol=1e-4, rtol=0)
    # decode_code takes (B, h*w) and (B, h, w), traced abstractly here (the numbers are checked above).
    for shape in ((1, 4), (1, 2, 2)):
        out = jax.eval_shape(model.decode_code, jax.ShapeDtypeStruct(shape, jnp.int32))
        assert out.shape == (1, 32, 32, 3)


def test_upsample_block_matches_min_dalle_at_a_small_size(min_dalle_vqgan):
    torch.manual_seed(1)
    up = min_dalle_vqgan.Upsample(6)  # nearest x2, conv 3x3, 64 channels
    ours = jax.eval_shape(lambda: VQGAN(VQGANConfig(**SMALL), key=jax.random.key(0))).decoder.up[1].upsample
    ours = nn.replace(ours, conv=nn.replace(ours.conv, weight=jnp.asarray(up.conv.weight.detach().numpy()
                                                                          .transpose(2, 3, 1, 0)),
                                            bias=jnp.asarray(up.conv.bias.detach().numpy())))
    x = np.random.RandomState(0).randn(2, 3, 5, 64).astype(np.float32)
    with torch.no_grad():
        ref = up(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), ref, atol=1e-5)


# ----------------------------------------------------------------------------------------
# vqgan-jax Flax msgpack
# ----------------------------------------------------------------------------------------


def test_flax_names_are_vqgan_jax_names():
    config = VQGANConfig()
    abstract = jax.eval_shape(lambda: VQGAN(config, key=jax.random.key(0)))
    table = vqgan_io.flax_names(config)
    theirs = {table.to_theirs(p)[0]: tuple(x.shape) for p, x in nn.state_dict(abstract).items()}
    expected = {  # names and HWIO shapes of dalle-mini/vqgan_imagenet_f16_16384's flax_model.msgpack
        "encoder/conv_in/kernel": (3, 3, 3, 128), "encoder/down_0/block_1/norm1/scale": (128,),
        "encoder/down_2/block_0/nin_shortcut/kernel": (1, 1, 128, 256), "encoder/down_3/downsample/conv/kernel":
        (3, 3, 256, 256), "encoder/down_4/attn_1/proj_out/kernel": (1, 1, 512, 512),
        "encoder/mid/attn_1/q/bias": (512,), "encoder/conv_out/kernel": (3, 3, 512, 256),
        "quant_conv/kernel": (1, 1, 256, 256), "quantize/embedding/embedding": (16384, 256),
        "post_quant_conv/kernel": (1, 1, 256, 256), "decoder/conv_in/kernel": (3, 3, 256, 512),
        "decoder/mid/block_2/conv2/kernel": (3, 3, 512, 512), "decoder/up_4/attn_2/norm/bias": (512,),
        "decoder/up_4/upsample/conv/kernel": (3, 3, 512, 512), "decoder/up_3/block_0/nin_shortcut/kernel":
        (1, 1, 512, 256), "decoder/up_0/block_2/conv1/kernel": (3, 3, 128, 128), "decoder/conv_out/kernel":
        (3, 3, 128, 3),
    }
    for name, shape in expected.items():
        assert theirs.get(name) == shape, name
    assert not [n for n in theirs if "up_0/upsample" in n or "down_4/downsample" in n or "up_3/attn" in n]
    assert len(theirs) == 343


@pytest.fixture
def flax_file(tmp_path):
    """A msgpack of random weights in vqgan-jax's names and shapes for ``SMALL``, and its flat contents."""
    config = VQGANConfig(**SMALL)
    model = _build(config, seed=3)
    params = vqgan_io.flax_params(model)
    assert params["encoder/down_1/block_0/nin_shortcut/kernel"].shape == (1, 1, 32, 64)
    assert params["decoder/up_1/attn_1/q/kernel"].shape == (1, 1, 64, 64)
    assert params["quantize/embedding/embedding"].shape == (16, 4)
    path = tmp_path / "flax_model.msgpack"
    write_flax_msgpack(path, params)
    return path, params


def test_msgpack_import_copies_every_array(flax_file):
    path, params = flax_file
    model, report = vqgan_io.import_vqgan(path, **SMALL)
    assert report.fresh == [] and report.loaded == len(params)
    table = vqgan_io.flax_names(model.config)
    for ours, x in nn.state_dict(model).items():
        np.testing.assert_array_equal(np.asarray(x), params[table.to_theirs(ours)[0]], err_msg=ours)
    again, _ = vqgan_io.load_flax(_build(model.config, seed=5), params)  # a dict works too
    np.testing.assert_array_equal(again.encoder.conv_in.weight, model.encoder.conv_in.weight)


def _torch_conv(x, kernel, bias, **kw):
    """A conv in torch from a Flax HWIO kernel: the layout vqgan-jax stores."""
    w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return F.conv2d(x, w, torch.from_numpy(bias), **kw)


def _torch_norm(x, params, prefix, eps):
    return F.group_norm(x, 32, torch.from_numpy(params[prefix + "/scale"]), torch.from_numpy(params[prefix + "/bias"]),
                        eps=eps)


def test_msgpack_encoder_pieces_match_torch(flax_file):
    path, p = flax_file
    model, _ = vqgan_io.import_vqgan(path, **SMALL)
    eps = model.config.norm_eps
    rng = np.random.RandomState(0)

    x = rng.randn(2, 8, 8, 32).astype(np.float32)  # a ResnetBlock 32 -> 64 with its nin_shortcut
    b = "encoder/down_1/block_0/"
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    h = _torch_conv(F.silu(_torch_norm(t, p, b + "norm1", eps)), p[b + "conv1/kernel"], p[b + "conv1/bias"], padding=1)
    h = _torch_conv(F.silu(_torch_norm(h, p, b + "norm2", eps)), p[b + "conv2/kernel"], p[b + "conv2/bias"], padding=1)
    ref = _torch_conv(t, p[b + "nin_shortcut/kernel"], p[b + "nin_shortcut/bias"]) + h
    np.testing.assert_allclose(np.asarray(model.encoder.down[1].block[0](jnp.asarray(x))),
                               ref.permute(0, 2, 3, 1).numpy(), atol=1e-4)

    x = rng.randn(2, 16, 16, 32).astype(np.float32)  # Downsample: pad bottom/right by 1, 3x3 stride 2 VALID
    d = "encoder/down_0/downsample/conv/"
    t = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (0, 1, 0, 1))
    ref = _torch_conv(t, p[d + "kernel"], p[d + "bias"], stride=2).permute(0, 2, 3, 1).numpy()
    ours = np.asarray(model.encoder.down[0].downsample(jnp.asarray(x)))
    assert ours.shape == (2, 8, 8, 32)
    np.testing.assert_allclose(ours, ref, atol=1e-4)

    x = rng.randn(2, 8, 8, 64).astype(np.float32)  # AttnBlock: one head over the 64 positions, scale C^-1/2
    a = "encoder/down_1/attn_0/"
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    h = _torch_norm(t, p, a + "norm", eps)
    q, k, v = (_torch_conv(h, p[a + n + "/kernel"], p[a + n + "/bias"]).flatten(2) for n in "qkv")  # (B, C, HW)
    w = torch.softmax(q.transpose(1, 2) @ k / 64 ** 0.5, dim=-1)  # (B, HW query, HW key)
    h = (v @ w.transpose(1, 2)).reshape(2, 64, 8, 8)
    ref = (t + _torch_conv(h, p[a + "proj_out/kernel"], p[a + "proj_out/bias"])).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(model.encoder.down[1].attn[0](jnp.asarray(x))), ref, atol=1e-4)


def test_round_trip_through_torch_names():
    model = _build(VQGANConfig(**SMALL))
    state = vqgan_io.torch_state_dict(model)
    assert state["encoder.down.1.block.0.nin_shortcut.weight"].shape == (64, 32, 1, 1)  # OIHW
    state["loss.discriminator.main.0.weight"] = np.zeros((2, 2))  # taming's discriminator: ignored
    again, report = vqgan_io.load_torch(_build(model.config, seed=1), state)
    assert report.fresh == []
    for (path, a), b in zip(nn.state_dict(model).items(), nn.state_dict(again).values(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)


def test_mismatches_are_reported_together_by_name():
    model = _build(VQGANConfig(**SMALL), seed=0)
    state = vqgan_io.torch_state_dict(model)
    del state["decoder.up.0.block.1.conv2.bias"]  # missing
    state["decoder.up.0.attn.0.q.weight"] = np.zeros((32, 32, 1, 1), np.float32)  # our up[0] has no attention
    state["post_quant_conv.weight"] = np.zeros((8, 5, 1, 1), np.float32)  # wrong shape
    with pytest.raises(ShapeMismatchError) as err:
        vqgan_io.load_torch(model, state)
    message = str(err.value)
    for needle in ("missing (1)", "decoder.up[0].block[1].conv2.bias", "unexpected tensors (1)",
                   "decoder.up.0.attn.0.q.weight", "post_quant_conv.weight", "model has (1, 1, 4, 8)"):
        assert needle in message, (needle, message)
    flax = vqgan_io.flax_params(model)
    del flax["quantize/embedding/embedding"]
    with pytest.raises(ShapeMismatchError, match=r"missing \(1\).*quantize\.embedding\.weight"):
        vqgan_io.load_flax(model, flax)  # a msgpack must hold the encoder too: nothing may stay fresh


def test_pickle_files_are_refused(tmp_path):
    model = _build(VQGANConfig(**SMALL), seed=0)
    path = tmp_path / "detoker.pt"
    path.write_bytes(b"not read")
    for call in (lambda: vqgan_io.load_torch(model, path), lambda: vqgan_io.import_vqgan(path)):
        with pytest.raises(CheckpointError, match=r"pickle.*safetensors.*save_file"):
            call()


def test_safetensors_file_import(tmp_path):
    from safetensors.numpy import save_file

    model = _build(VQGANConfig(**SMALL))
    state = {k: v for k, v in vqgan_io.torch_state_dict(model).items() if not k.startswith(("encoder", "quant_conv"))}
    state["embedding.weight"] = state.pop("quantize.embedding.weight")  # min-dalle's name
    save_file(state, tmp_path / "detoker.safetensors")
    again, report = vqgan_io.load_torch(_build(model.config, seed=1), tmp_path / "detoker.safetensors")
    assert report.fresh and all(p.startswith(("encoder.", "quant_conv.")) for p in report.fresh)
    with pytest.raises(CheckpointError, match=r"expected a vqgan-jax `flax_model.msgpack` or .*\.safetensors"):
        vqgan_io.import_vqgan(tmp_path / "detoker.npz")
    np.testing.assert_array_equal(again.quantize.embedding.weight, model.quantize.embedding.weight)
    np.testing.assert_array_equal(again.decoder.up[1].attn[1].k.weight, model.decoder.up[1].attn[1].k.weight)


# ----------------------------------------------------------------------------------------
# The quantiser
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [True, False])
def test_quantizer_codes_losses_and_straight_through(legacy):
    model = _build(VQGANConfig(**SMALL, legacy_loss=legacy, beta=0.3), seed=0)
    e = np.asarray(model.quantize.embedding.weight)  # (16, 4)
    z = np.random.RandomState(0).randn(2, 3, 5, 4).astype(np.float32) * 0.05
    z_q, codes, losses = jax.jit(model.quantize)(jnp.asarray(z))
    brute = ((z.reshape(2, 15, 1, 4) - e[None, None]) ** 2).sum(-1).argmin(-1)  # (B, h*w)
    assert codes.dtype == jnp.int32 and codes.shape == (2, 15)
    np.testing.assert_array_equal(codes, brute)
    chosen = e[brute].reshape(z.shape)
    np.testing.assert_allclose(z_q, chosen, atol=1e-6)
    mse = ((chosen - z) ** 2).mean()
    w_commit, w_book = (1.0, 0.3) if legacy else (0.3, 1.0)
    np.testing.assert_allclose(losses["commitment"], w_commit * mse, rtol=1e-5)
    np.testing.assert_allclose(losses["codebook"], w_book * mse, rtol=1e-5)

    grad = jax.grad(lambda z: model.quantize(z)[0].sum())(jnp.asarray(z))
    np.testing.assert_array_equal(grad, np.ones_like(z))  # straight through
    # The loss reaches z only through the commitment term, and the codebook only through the other.
    g_z = jax.grad(lambda z: sum(model.quantize(z)[2].values()))(jnp.asarray(z))
    np.testing.assert_allclose(g_z, w_commit * 2 * (z - chosen) / z.size, rtol=1e-4, atol=1e-9)

    def book_loss(weight):
        m = nn.replace(model, quantize=nn.replace(model.quantize, embedding=nn.replace(
            model.quantize.embedding, weight=weight)))
        return sum(m.quantize(jnp.asarray(z))[2].values())
    g_e = jax.grad(book_loss)(jnp.asarray(e))
    expected = np.zeros_like(e)
    np.add.at(expected, brute.reshape(-1), w_book * 2 * (chosen - z).reshape(-1, 4) / z.size)
    np.testing.assert_allclose(g_e, expected, rtol=1e-4, atol=1e-9)


def test_decoder_gradients_check_numerically():
    config = VQGANConfig(resolution=8, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 1), num_res_blocks=1,
                         attn_resolutions=(4,), z_channels=4, embed_dim=4, n_embed=8)
    model = _build(config, seed=0)
    z = jax.random.normal(jax.random.key(1), (1, 4, 4, 4))
    check_grads(jax.jit(lambda z: model.decode(z)), (z,), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


# ----------------------------------------------------------------------------------------
# Shapes, transforms, configs
# ----------------------------------------------------------------------------------------


def test_mnist_sized_model_round_trip_under_jit_and_eval_shape():
    config = VQGANConfig(resolution=32, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                         attn_resolutions=(8,), z_channels=16, embed_dim=8, n_embed=64)
    model = _build(config)  # build_model: the registered kind
    images = jax.random.uniform(jax.random.key(1), (3, 32, 32, 1))  # [0, 1], the caller's convention
    z = jax.eval_shape(model.encode, images)
    assert z.shape == (3, 8, 8, 8)
    z_q, codes, losses = jax.eval_shape(model.quantize, z)
    assert z_q.shape == z.shape and codes.shape == (3, 64) and codes.dtype == jnp.int32
    assert jax.eval_shape(model.decode, z_q).shape == (3, 32, 32, 1)

    @jax.jit
    def pieces(m, x):  # the four methods, composed by hand, and __call__
        z_q, codes, _ = m.quantize(m.encode(x))
        return m.decode(z_q), m.decode_code(codes), m(x)
    decoded, from_codes, out = pieces(model, images)
    shapes = jax.eval_shape(lambda m, x: m(x), model, images)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == jax.tree.map(lambda a: (a.shape, a.dtype), out)
    assert int(out[1].max()) < 64
    np.testing.assert_allclose(decoded, out[0], atol=2e-4)  # one program, fused differently
    np.testing.assert_allclose(from_codes, out[0], atol=2e-4)

    def loss(m):
        recon, _, terms = m(images)
        return jnp.mean((recon - images) ** 2) + sum(terms.values())
    grads = jax.jit(jax.grad(loss))(model)
    assert float(jnp.abs(grads.encoder.conv_in.weight).sum()) > 0  # the straight-through path reaches the encoder
    assert float(jnp.abs(grads.quantize.embedding.weight).sum()) > 0


def test_dropout_needs_a_key_in_training_mode():
    model = _build(VQGANConfig(**SMALL, dropout=0.5), seed=0)
    images = jnp.ones((1, 16, 16, 3))
    with pytest.raises(Exception, match="key"):
        model(images)
    train = jax.jit(lambda m, x, k: m(x, key=k)[0])
    assert not np.allclose(train(model, images, jax.random.key(1)), train(model, images, jax.random.key(2)))
    evaluate = jax.jit(lambda m, x, k: (m(x)[0], m(x, key=k)[0]))
    without, with_key = evaluate(nn.eval_mode(model), images, jax.random.key(1))
    np.testing.assert_array_equal(without, with_key)


def test_bad_inputs_and_configs_are_named():
    model = _build(VQGANConfig(**SMALL), seed=0)
    with pytest.raises(nn.ShapeError, match=r"\(B, H, W, 3\).*divisible by 2.*transpose"):
        model(jnp.ones((1, 3, 16, 16)))
    with pytest.raises(nn.ShapeError, match="not a square grid.*reshape"):
        model.decode_code(jnp.zeros((1, 6), jnp.int32))
    with pytest.raises(nn.ShapeError, match=r"z \(B, h, w, 4\)"):
        model.quantize(jnp.ones((1, 8, 8, 5)))
    with pytest.raises(ValueError, match=r"resolution=18 must be divisible by 2\*\*\(len\(ch_mult\) - 1\) = 4"):
        VQGANConfig(resolution=18, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[48\].*multiples of norm_groups=32"):
        VQGANConfig(ch=48, ch_mult=(2, 1))
    with pytest.raises(ValueError, match="n_embed"):
        VQGANConfig(n_embed=0)
