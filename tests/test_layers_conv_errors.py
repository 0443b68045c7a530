"""Conv, pooling, embedding, einops and container layers: bad inputs are diagnosed, and
the behaviour that has no PyTorch reference (keys in Sequential, einops layers) holds."""

import einops
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from baobab import nn

K = jax.random.key(0)


# ----------------------------------------------------------------------------------------
# Errors at call time name the layer, its path, the expected and the received value
# ----------------------------------------------------------------------------------------


def test_conv_wrong_channels_names_layer_expected_and_received():
    conv = nn.Conv(8, 16, (3, 3), key=K)
    with pytest.raises(nn.ShapeError, match=r"Conv \(the root module\): expected input with last "
                                            r"dimension 8 \(in_channels\), got shape \(2, 5, 5, 7\)"):
        conv(jnp.ones((2, 5, 5, 7)))


def test_conv_error_inside_sequential_names_the_path():
    model = nn.Sequential(nn.Conv(3, 8, (3, 3), key=K), nn.Conv(4, 8, (3, 3), key=K))
    with pytest.raises(nn.ShapeError, match=r"Conv at 'layers\[1\]': expected input with last dimension 4"):
        model(jnp.ones((1, 6, 6, 3)))


def test_conv_transpose_wrong_channels():
    with pytest.raises(nn.ShapeError, match=r"ConvTranspose .*dimension 8 \(in_channels\), got shape \(2, 4, 3\)"):
        nn.ConvTranspose(8, 4, 3, key=K)(jnp.ones((2, 4, 3)))


def test_conv_unbatched_wrong_channels_reports_the_shape_given():
    with pytest.raises(nn.ShapeError, match=r"dimension 8 \(in_channels\), got shape \(5, 5, 7\)"):
        nn.Conv(8, 8, (3, 3), key=K)(jnp.ones((5, 5, 7)))


def test_conv_wrong_ndim():
    with pytest.raises(nn.ShapeError, match=r"expected a 2D input \(N, H, W, C\) or unbatched \(H, W, C\), "
                                            r"i\.e\. 4 or 3 dimensions, got shape \(2, 3, 5, 5, 8\)"):
        nn.Conv(8, 8, (3, 3), key=K)(jnp.ones((2, 3, 5, 5, 8)))


def test_int_window_on_images_hints_at_a_tuple():
    with pytest.raises(nn.ShapeError, match=r"An int window means 1D; for 2D pass a tuple, e\.g\. window=\(3, 3\)"):
        nn.MaxPool(2)(jnp.ones((2, 8, 8, 3)))


def test_pool_input_smaller_than_window():
    with pytest.raises(nn.ShapeError, match=r"MaxPool .*size 2 with padding 0 is smaller than the window 3"):
        nn.MaxPool((3, 3))(jnp.ones((1, 2, 5, 1)))


def test_embedding_float_ids_and_attend_width():
    emb = nn.Embedding(10, 4, key=K)
    with pytest.raises(TypeError, match=r"Embedding \(the root module\): expected integer ids, got dtype float32"):
        emb(jnp.ones((2, 3)))
    with pytest.raises(nn.ShapeError, match=r"Embedding .*last dimension 4 \(features\), got shape \(2, 5\)"):
        emb.attend(jnp.ones((2, 5)))


def test_embedding_out_of_range_id_is_nan_not_clamped():
    emb = nn.Embedding(10, 4, key=K)
    out = jax.jit(emb)(jnp.array([0, 10, -1, 9]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1:3]).all() and np.isfinite(out[3]).all()


def test_global_avg_pool_too_few_dims():
    with pytest.raises(nn.ShapeError, match=r"2 spatial dimensions, i\.e\. at least 3 dimensions, got shape \(4, 8\)"):
        nn.GlobalAvgPool()(jnp.ones((4, 8)))


# ----------------------------------------------------------------------------------------
# Errors at construction
# ----------------------------------------------------------------------------------------


def test_groups_must_divide_channels_names_both_numbers():
    with pytest.raises(ValueError, match=r"Conv: groups=3 must divide in_channels=8"):
        nn.Conv(8, 12, 3, key=K, groups=3)
    with pytest.raises(ValueError, match=r"Conv: groups=4 must divide out_channels=6"):
        nn.Conv(8, 6, 3, key=K, groups=4)
    with pytest.raises(ValueError, match=r"ConvTranspose: groups=3 must divide in_channels=4"):
        nn.ConvTranspose(4, 6, 3, key=K, groups=3)


def test_bad_padding_string_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"padding 'full' is not a padding mode; use one of \['SAME', 'VALID', 'CAUSAL'\]"):
        nn.Conv(4, 4, 3, key=K, padding="full")
    nn.Conv(4, 4, 3, key=K, padding="same")  # any case


@pytest.mark.parametrize("padding", [(1,), ((1, 2, 3), 0), -1, 1.5])
def test_bad_padding_values(padding):
    with pytest.raises(ValueError, match=r"Conv: padding must be one of"):
        nn.Conv(4, 4, (3, 3), key=K, padding=padding)


def test_causal_padding_beyond_1d_is_not_implemented():
    with pytest.raises(NotImplementedError, match=r"'CAUSAL' is defined for 1D convolutions only.*explicit \(lo, hi\) pairs"):
        nn.Conv(4, 4, (3, 3), key=K, padding="CAUSAL")


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"Conv: kernel_size must be an int \(1D\) or a tuple of 2 or 3 ints"):
        nn.Conv(4, 4, (3, 3, 3, 3), key=K)
    with pytest.raises(ValueError, match=r"Conv: stride must be an int >= 1 or 2 such ints"):
        nn.Conv(4, 4, (3, 3), key=K, stride=(1, 2, 3))
    with pytest.raises(ValueError, match=r"ConvTranspose: output_padding=\(2,\) must be smaller than the stride \(2,\)"):
        nn.ConvTranspose(4, 4, 3, key=K, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"ConvTranspose: padding must be an int or one int per spatial"):
        nn.ConvTranspose(4, 4, 3, key=K, padding="SAME")
    with pytest.raises(ValueError, match=r"MaxPool: padding=\(2, 2\) must be at most half the \(dilated\) window"):
        nn.MaxPool((3, 3), padding=2)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool: output_size must be 2 positive ints or None"):
        nn.AdaptiveAvgPool((0, 3))


def test_sequential_non_module_names_the_fix():
    lin = nn.Linear(4, 4, key=K)
    with pytest.raises(TypeError, match=r"Sequential: layer 1 is .*not an nn\.Module; wrap a plain function "
                                        r"in nn\.Lambda, e\.g\. nn\.Lambda\(relu\)"):
        nn.Sequential(lin, jax.nn.relu)
    with pytest.raises(TypeError, match=r"pass the layers as separate arguments: nn\.Sequential\(\*layers\)"):
        nn.Sequential([lin, lin])
    with pytest.raises(TypeError, match=r"Lambda: Linear is already a module"):
        nn.Lambda(lin)


def test_einops_layers_validate():
    with pytest.raises(ValueError, match=r"Reduce: reduction must be one of \['min', 'max', 'sum', 'mean', 'prod'"):
        nn.Reduce("b h w c -> b c", "average")
    with pytest.raises(ValueError, match=r"Rearrange: pattern must be an einops string with '->'"):
        nn.Rearrange("b h w c")
    with pytest.raises(ValueError, match=r"axis length p=0 must be a positive int"):
        nn.Rearrange("b (h p) c -> b h p c", p=0)


# ----------------------------------------------------------------------------------------
# Behaviour with no PyTorch reference
# ----------------------------------------------------------------------------------------


class Noise(nn.Module):
    """Adds N(0, 1) noise when given a key (a stand-in for dropout)."""

    def __call__(self, x, *, key=None):
        return x if key is None else x + jax.random.normal(key, x.shape)


def test_sequential_gives_each_keyed_layer_its_own_key():
    seq = nn.Sequential(Noise(), nn.Lambda(jnp.negative), Noise())
    x = jnp.zeros(4)
    np.testing.assert_array_equal(seq(x), x)  # no key: deterministic
    out = seq(x, key=K)
    first = jax.random.normal(nn.subkey(K, "layers[0]"), (4,))
    last = jax.random.normal(nn.subkey(K, "layers[2]"), (4,))
    np.testing.assert_allclose(out, -first + last, rtol=1e-6)  # the Lambda got no key
    assert not np.allclose(first, last)


def test_sequential_indexing_and_jit():
    layers = [nn.Linear(4, 4, key=nn.subkey(K, str(i))) for i in range(3)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[1] is layers[1] and isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    x = jnp.ones((2, 4))
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(seq, x), layers[2](layers[1](layers[0](x))), rtol=1e-6)


def test_einops_layers_match_einops_and_are_static():
    x = jax.random.normal(K, (2, 8, 6, 3))
    r = nn.Rearrange("b (h p) w c -> b h (w p c)", p=2)
    np.testing.assert_array_equal(r(x), einops.rearrange(x, "b (h p) w c -> b h (w p c)", p=2))
    red = nn.Reduce("b h (w 2) c -> b c w", "max")
    np.testing.assert_array_equal(red(x), einops.reduce(x, "b h (w 2) c -> b c w", "max"))
    assert jax.tree.leaves(r) == [] and hash(jax.tree.structure(r)) is not None
    assert r.axes_lengths == (("p", 2),)


def test_pools_and_conv_accept_unbatched_input():
    x = jax.random.normal(K, (6, 6, 4))
    for layer in (nn.MaxPool((2, 2)), nn.AvgPool((3, 3), padding=1), nn.AdaptiveAvgPool((4, 3)),
                  nn.Conv(4, 8, (3, 3), key=K, stride=2), nn.ConvTranspose(4, 4, (2, 2), key=K, stride=2)):
        np.testing.assert_allclose(layer(x), layer(x[None])[0], rtol=1e-6, atol=1e-6)
