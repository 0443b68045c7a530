"""The public surface of baobab.data is pinned, documented, and its examples run."""

import doctest
import importlib
import pkgutil

import pytest

import baobab.data

PUBLIC = {
    # sources
    "from_arrays", "ArraySource", "load_npz", "ArrayRecordSource", "write_array_record", "load_prepared",
    "write_split", "read_metadata", "from_tfds", "image_folder", "ImageFolderSource", "text_corpus",
    "TextSource", "TokenChunks", "split_documents", "stdlib_text_files", "mnist", "MNIST_DIR", "python_docstrings", "jsonl_texts", "DOCSTRING_PACKAGES",
    # record format
    "encode_example", "decode_example",
    # transforms
    "DecodeImage", "decode_image", "Resize", "CenterPad", "RandomCrop", "RandomFlip", "Normalize", "OneHot",
    "ByteTokenize", "Tokenize", "EncodeText", "count_truncated", "Pack", "apply_transforms", "stack_examples",
    # loaders, global batches, checkpoints
    "train_loader", "eval_loader", "Loader", "LoaderIterator", "global_batch", "batch_sharding",
    "CheckpointSave", "CheckpointRestore",
    # preparing datasets
    "prepare_image_folder", "prepare_text", "prepare_arrays",
    # errors
    "DataError", "CorruptRecordError",
    # experiment config sections: the kind table and its builders
    "DATASETS", "DatasetEntry", "DataConfig", "DataInfo", "MnistData", "CaptionedMnistData", "CaptionTokenizer", "ImageFolderData", "TextData", "TextClassificationData",
    "PreparedData", "build_data", "data_info",
}


def test_public_names_are_pinned():
    assert {n for n in dir(baobab.data) if not n.startswith("_")} == PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC - {"MNIST_DIR", "DATASETS", "DataConfig", "DOCSTRING_PACKAGES", "DataError"}))
def test_public_names_come_from_private_modules_and_have_docstrings(name):
    obj = getattr(baobab.data, name)
    # batch_sharding is nn's one definition, shared with train (data and train re-export it)
    home = "baobab.nn._" if name == "batch_sharding" else "baobab.data._"
    assert obj.__module__.startswith(home), name
    assert obj.__doc__ and len(obj.__doc__) > 20, f"baobab.data.{name} needs a docstring"


MODULES = sorted(m.name for m in pkgutil.iter_modules(baobab.data.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"baobab.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in baobab.data.{name}"
