"""MLP, CNN and ResNet: shapes, training steps, explicit BatchNorm state, torchvision sizes and names.

torchvision cannot be installed beside torch 2.13 here, so ResNet is checked against
torchvision's published parameter counts and ``state_dict`` names, not its outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from baobab import models, nn
from baobab.models import hf


def _fit(model, x, y, steps=5, lr=1e-2):
    """A few Adam steps on one batch, under jit, through nn.stateful_call; returns the losses.

    The model is in training mode: each step gets its own dropout key."""
    opt = optax.adam(lr)

    def loss_fn(model, key):
        logits, model = nn.stateful_call(model, x, key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), model

    @jax.jit
    def step(model, opt_state, key):
        (loss, model_with_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, key)
        grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, nn.trainable(model))
        updates, opt_state = opt.update(grads, opt_state, model)
        return optax.apply_updates(model_with_state, updates), opt_state, loss

    opt_state, losses = opt.init(model), []
    for i in range(steps):
        model, opt_state, loss = step(model, opt_state, jax.random.key(100 + i))
        losses.append(float(loss))
    return model, losses


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_small_classifiers_shapes_and_training(kind):
    config = models.MLPConfig(hidden=(64, 32)) if kind == "mlp" else models.CNNConfig(channels=(8, 16), hidden=32)
    model = models.build_model(config, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    y = jnp.arange(16) % 10
    evaluated = nn.eval_mode(model)
    assert evaluated(x).shape == jax.eval_shape(evaluated, x).shape == (16, 10)
    assert model(x, key=jax.random.key(2)).shape == (16, 10)  # with dropout
    trained, losses = _fit(model, x, y, steps=30)  # training losses are noisy with dropout
    eval_loss = lambda m: float(optax.softmax_cross_entropy_with_integer_labels(nn.eval_mode(m)(x), y).mean())
    assert eval_loss(trained) < 0.9 * eval_loss(model), losses
    with pytest.raises(TypeError, match="floating-point"):
        evaluated(jnp.zeros((2, 28, 28, 1), jnp.uint8))
    with pytest.raises(nn.ShapeError, match="784|28, 28, 1"):
        evaluated(jnp.zeros((2, 32, 32, 1)))


def test_cnn_default_size():
    model = jax.eval_shape(lambda k: models.CNN(models.CNNConfig(), key=k), jax.random.key(0))
    assert nn.count_parameters(model) == 421_642


# ----------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------

TORCHVISION_PARAMS = {18: 11_689_512, 50: 25_557_032}  # sum(p.numel() for p in resnetN().parameters())


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_matches_torchvision_sizes_and_names(depth):
    config = models.ResNetConfig(depth=depth)
    model = jax.eval_shape(lambda k: models.ResNet(config, key=k), jax.random.key(0))  # nothing allocated
    assert nn.count_parameters(model) == TORCHVISION_PARAMS[depth]
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    out = jax.eval_shape(lambda m, x: nn.stateful_call(m, x), model, images)
    assert out[0].shape == (2, 1000)

    names = hf.hf_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), model), hf.resnet_names(config))
    width = 512 if depth == 18 else 2048
    assert names["conv1.weight"].shape == (64, 3, 7, 7)  # torch layout (O, I, kh, kw)
    assert names["fc.weight"].shape == (1000, width)
    assert names["layer2.0.downsample.0.weight"].shape == ((128, 64, 1, 1) if depth == 18 else (512, 256, 1, 1))
    assert "layer4.1.bn2.running_var" in names and "bn1.running_mean" in names
    n_bn = sum(1 for n in names if n.endswith("running_mean"))
    # torchvision's state_dict has these names plus one num_batches_tracked per BatchNorm
    assert len(names) + n_bn == {18: 122, 50: 320}[depth]
    if depth == 50:
        assert names["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)  # bottleneck expansion 4


def test_resnet_state_training_and_eval():
    model = models.ResNet(models.ResNetConfig(depth=18, num_classes=4, width=8, small_inputs=True),
                          key=jax.random.key(0))
    assert model.maxpool is None and model.conv1.weight.shape == (3, 3, 3, 8)
    x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3)) + 2.0
    with pytest.raises(RuntimeError, match="stateful_call"):
        model(x)  # training-mode BatchNorm outside nn.stateful_call is refused, never silently dropped
    logits, trained = jax.jit(lambda m, x: nn.stateful_call(m, x))(model, x)
    assert logits.shape == (8, 4)
    before, after = model.layer2[0].downsample[1].running_mean, trained.layer2[0].downsample[1].running_mean
    assert not np.allclose(before, after)  # the statistics came back through jit
    np.testing.assert_allclose(trained.bn1.running_mean, 0.1 * model.conv1(x).mean((0, 1, 2)), atol=1e-5)
    assert nn.is_state(trained).bn1.running_var and not nn.is_state(trained).bn1.weight
    evaluated = nn.eval_mode(trained)
    infer = jax.jit(lambda m, x: m(x))
    other = x.at[1:].set(0.0)  # eval: outputs are per example, independent of the rest of the batch
    np.testing.assert_allclose(infer(evaluated, x)[0], infer(evaluated, other)[0], atol=1e-5)
    table = nn.summary(evaluated)
    assert "layer2[0].downsample[0].weight" in table and "(state)" in table


def test_bottleneck_block():
    from baobab.models.resnet import Bottleneck

    config = models.ResNetConfig(depth=50)
    block = Bottleneck(8, 4, stride=2, config=config, key=jax.random.key(0))  # 8 -> 4 -> 4 -> 16 channels
    out, block2 = nn.stateful_call(block, jax.random.normal(jax.random.key(1), (2, 8, 8, 8)))
    assert out.shape == (2, 4, 4, 16) and bool((out >= 0).all())  # ReLU after the residual sum
    assert block.downsample[0].weight.shape == (1, 1, 8, 16) and block.conv2.stride == (2, 2)
    assert not np.allclose(block2.bn3.running_var, block.bn3.running_var)
