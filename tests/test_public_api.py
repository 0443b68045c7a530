"""The public surface of baobab.nn, pinned: a change here is a deliberate API change."""

from baobab import nn

NN_PUBLIC = [
    # core
    "ArrayMeta", "array_meta", "DEFAULT_RULES", "Module", "Policy", "ShapeError", "Stacked", "check_dim", "check_ndim",
    "count_parameters", "create_sharded", "eval_mode", "freeze", "is_array", "is_state", "iter_arrays",
    "iter_modules", "labels", "load_state_dict", "logical_axes", "logical_to_mesh", "map_arrays",
    "named_parameters", "param", "path_matches", "replace", "shardings", "state", "state_dict",
    "stateful_call", "static", "subkey", "summary", "train_mode", "trainable", "unfreeze",
    "update_state", "with_policy", "kernel_mesh", "current_kernel_mesh",
    # layers
    "AdaptiveAvgPool", "AvgPool", "BatchNorm", "Conv", "ConvTranspose", "Dropout", "Embedding", "GatedMLP",
    "GlobalAvgPool", "GroupNorm", "KVCache", "Lambda", "LayerNorm", "LearnedPositionalEmbedding", "Linear",
    "LoRALinear", "lora", "merge_lora", "attention", "Int8Linear", "int8_lora_bases",
    "MLP", "MaxPool", "MultiHeadAttention", "RMSNorm", "Rearrange", "Reduce", "RopeScaling",
    "RotaryEmbedding", "Sequential", "SinusoidalPositionalEmbedding",
]


def test_nn_public_names_are_pinned():
    assert sorted(n for n in dir(nn) if not n.startswith("_")) == sorted(NN_PUBLIC)


def test_every_public_name_is_documented():
    for name in NN_PUBLIC:
        obj = getattr(nn, name)
        if callable(obj) and not isinstance(obj, dict):
            assert (obj.__doc__ or "").strip(), f"nn.{name} has no docstring"
