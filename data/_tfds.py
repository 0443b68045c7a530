"""TFDS datasets read without TensorFlow, from their ArrayRecord files.

``tfds.data_source`` and ``tfds.builder_from_directory`` read datasets prepared with
``file_format="array_record"`` in pure Python (images are decoded with Pillow).
Datasets prepared as TFRecord (TFDS's default) need TensorFlow to read and are
refused with the fix. ``tensorflow_datasets`` is imported only when this is called.

Elements are dicts of numpy arrays, e.g. ``{"image": (H, W, C) uint8, "label": () int64}``.
"""

from __future__ import annotations

from pathlib import Path

import grain

from baobab.errors import MissingFileError

from ._errors import DataError

__all__ = ["from_tfds"]


def from_tfds(name: str, *, split: str = "train", data_dir: str | Path | None = None) -> grain.MapDataset:
    """A ``grain.MapDataset`` over a TFDS split (``"train"``, ``"test[:10%]"``, ...).

    ``name`` is a registered dataset name looked up under ``data_dir`` (or TFDS's
    default folder), or the path of a prepared dataset version folder (the one that
    holds ``dataset_info.json``).
    """
    import tensorflow_datasets as tfds  # lazy: a heavy import, and only this source needs it

    path = Path(name)
    try:
        if (path / "dataset_info.json").is_file():
            source = tfds.builder_from_directory(str(path)).as_data_source(split=split)
        elif path.is_absolute() or path.exists():
            raise MissingFileError(f"{path} is not a prepared TFDS dataset folder (no dataset_info.json). "
                                    f"Pass the version folder, e.g. {path}/1.0.0, or a dataset name.")
        else:
            source = tfds.data_source(name, split=split, data_dir=None if data_dir is None else str(data_dir))
    except tfds.core.registered.DatasetNotFoundError as err:
        raise MissingFileError(
            f"TFDS dataset {name!r} was not found under data_dir={str(data_dir)!r}. Prepare it first with "
            f"builder.download_and_prepare() using file_format='array_record', or pass its folder."
        ) from err
    except NotImplementedError as err:
        raise DataError(f"TFDS dataset {name!r} cannot be read without TensorFlow ({err}). Re-prepare it "
                        f"with file_format='array_record'.") from err
    if len(source) == 0:
        raise DataError(f"TFDS dataset {name!r} split {split!r} is empty.")
    return grain.MapDataset.source(source)
