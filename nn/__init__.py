"""baobab.nn: stateless modules that are plain pytrees of arrays.

Start with ``_module.py``: its docstring is the module contract that everything
here builds on. The public names are re-exported explicitly below and pinned by
``tests/test_public_api.py``.
"""

# --- the core: the module contract and what works on any module ---
from ._checks import ShapeError as ShapeError
from ._checks import check_dim as check_dim
from ._checks import check_ndim as check_ndim
from ._keys import subkey as subkey
from ._core import array_meta as array_meta
from ._core import replace as replace
from ._fields import ArrayMeta as ArrayMeta
from ._fields import is_array as is_array
from ._fields import param as param
from ._fields import state as state
from ._fields import static as static
from ._module import Module as Module
from ._params import count_parameters as count_parameters
from ._params import freeze as freeze
from ._params import is_state as is_state
from ._params import labels as labels
from ._params import load_state_dict as load_state_dict
from ._params import logical_axes as logical_axes
from ._params import named_parameters as named_parameters
from ._params import path_matches as path_matches
from ._params import state_dict as state_dict
from ._params import trainable as trainable
from ._params import unfreeze as unfreeze
from ._precision import Policy as Policy
from ._precision import with_policy as with_policy
from ._sharding import DEFAULT_RULES as DEFAULT_RULES
from ._kernel_mesh import kernel_mesh as kernel_mesh
from ._kernel_mesh import current_kernel_mesh as current_kernel_mesh
from ._sharding import create_sharded as create_sharded
from ._sharding import logical_to_mesh as logical_to_mesh
from ._sharding import shardings as shardings
from ._stacked import Stacked as Stacked
from ._state import eval_mode as eval_mode
from ._state import stateful_call as stateful_call
from ._state import train_mode as train_mode
from ._state import update_state as update_state
from ._summary import summary as summary
from ._tree import iter_arrays as iter_arrays
from ._tree import iter_modules as iter_modules
from ._tree import map_arrays as map_arrays

# --- the layer library ---
from ._attention_fn import attention as attention
from ._attention import MultiHeadAttention as MultiHeadAttention
from ._batchnorm import BatchNorm as BatchNorm
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._dropout import Dropout as Dropout
from ._einops import Rearrange as Rearrange
from ._einops import Reduce as Reduce
from ._embedding import Embedding as Embedding
from ._kv_cache import KVCache as KVCache
from ._int8_linear import Int8Linear as Int8Linear
from ._linear import Linear as Linear
from ._lora import LoRALinear as LoRALinear
from ._lora import lora as lora
from ._lora import merge_lora as merge_lora
from ._lora import int8_lora_bases as int8_lora_bases
from ._mlp import GatedMLP as GatedMLP
from ._mlp import MLP as MLP
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pool import AdaptiveAvgPool as AdaptiveAvgPool
from ._pool import AvgPool as AvgPool
from ._pool import GlobalAvgPool as GlobalAvgPool
from ._pool import MaxPool as MaxPool
from ._positional import LearnedPositionalEmbedding as LearnedPositionalEmbedding
from ._positional import RopeScaling as RopeScaling
from ._positional import RotaryEmbedding as RotaryEmbedding
from ._positional import SinusoidalPositionalEmbedding as SinusoidalPositionalEmbedding
from ._sequential import Lambda as Lambda
from ._sequential import Sequential as Sequential
