"""baobab.data: input pipelines on grain, from files to sharded device batches.

The contract, in four pieces:

* **An example** is a dict of features: numpy arrays (images ``(H, W, C)``, labels
  ``()``, tokens ``(T,)``), ``bytes`` (encoded images) or ``str`` (text).
* **A source** is a ``grain.MapDataset`` of examples with random access:
  ``from_arrays``, ``load_prepared`` / ``ArrayRecordSource`` (the native format),
  ``from_tfds`` (TFDS without TensorFlow), ``image_folder``, ``text_corpus``, and the
  embedded ``mnist``.
* **A transform** is a small pure per-example callable: a ``grain.transforms.Map``
  (``t(example)``) or ``RandomMap`` (``t(example, rng)``, drawing from grain's
  per-element seeded RNG). ``Pack`` packs token streams.
* **A loader** (``train_loader`` / ``eval_loader``) runs shuffle -> repeat -> shard by
  process -> transforms -> batch, with prefetching, global ``jax.Array`` batches on a
  mesh, and exact, checked checkpoint state (``CheckpointSave`` / ``CheckpointRestore``).

``baobab data prepare`` (``prepare_image_folder``, ``prepare_text``,
``prepare_arrays``) writes ArrayRecord shards plus ``metadata.json``. Neither
TensorFlow nor PyTorch is imported here. Design notes: ``docs/design.md``,
"Data pipeline".
"""

from ._array_record import ArrayRecordSource as ArrayRecordSource
from ._array_record import write_array_record as write_array_record
from ._arrays import ArraySource as ArraySource
from ._arrays import from_arrays as from_arrays
from ._arrays import load_npz as load_npz
from ._batch import stack_examples as stack_examples
from ._checkpoint import CheckpointRestore as CheckpointRestore
from ._checkpoint import CheckpointSave as CheckpointSave
from ._errors import CorruptRecordError as CorruptRecordError
from ._errors import DataError as DataError
from ._global import batch_sharding as batch_sharding
from ._global import global_batch as global_batch
from ._image import CenterPad as CenterPad
from ._image import DecodeImage as DecodeImage
from ._image import Normalize as Normalize
from ._image import RandomCrop as RandomCrop
from ._image import RandomFlip as RandomFlip
from ._image import Resize as Resize
from ._image import decode_image as decode_image
from ._image_folder import ImageFolderSource as ImageFolderSource
from ._image_folder import image_folder as image_folder
from ._labels import OneHot as OneHot
from ._loader import Loader as Loader
from ._loader import LoaderIterator as LoaderIterator
from ._loader import apply_transforms as apply_transforms
from ._loader import eval_loader as eval_loader
from ._loader import train_loader as train_loader
from ._metadata import read_metadata as read_metadata
from ._mnist import MNIST_DIR as MNIST_DIR
from ._mnist import mnist as mnist
from ._packing import Pack as Pack
from ._prepare import prepare_arrays as prepare_arrays
from ._prepare import prepare_image_folder as prepare_image_folder
from ._prepare import prepare_text as prepare_text
from ._prepared import load_prepared as load_prepared
from ._prepared import write_split as write_split
from ._records import decode_example as decode_example
from ._records import encode_example as encode_example
from ._tfds import from_tfds as from_tfds
from ._text_classes import DOCSTRING_PACKAGES as DOCSTRING_PACKAGES
from ._text_classes import EncodeText as EncodeText
from ._text_classes import count_truncated as count_truncated
from ._text_classes import jsonl_texts as jsonl_texts
from ._text_classes import python_docstrings as python_docstrings
from ._text import TextSource as TextSource
from ._text import stdlib_text_files as stdlib_text_files
from ._text import text_corpus as text_corpus
from ._text_split import split_documents as split_documents
from ._token_chunks import TokenChunks as TokenChunks
from ._tokenize import ByteTokenize as ByteTokenize
from ._tokenize import Tokenize as Tokenize
from ._config import DATASETS as DATASETS
from ._config import DatasetEntry as DatasetEntry
from ._config import DataConfig as DataConfig
from ._config import DataInfo as DataInfo
from ._config import ImageFolderData as ImageFolderData
from ._config import MnistData as MnistData
from ._config import CaptionedMnistData as CaptionedMnistData
from ._captions import CaptionTokenizer as CaptionTokenizer
from ._config import PreparedData as PreparedData
from ._config import TextClassificationData as TextClassificationData
from ._config import TextData as TextData
from ._config import build_data as build_data
from ._config import data_info as data_info
