"""Prepared folders of pre-encoded text-to-image rows (what DALL·E Mini trained on):
``text_ids`` (S,), ``text_mask`` (S,) and ``image_codes`` (N,) per record, the
vocabularies in ``metadata.json``. ``data_info`` reads the metadata alone (``baobab
plan`` reads no data), and a tiny DalleBart trains on such a folder.
"""

import numpy as np
import pytest

from baobab import data
from baobab.commands import run_train
from baobab.experiment import CheckpointConfig, ExperimentConfig, LoggingConfig, OptimizerConfig, TrainerConfig
from baobab.experiment import ScheduleConfig
from baobab.models import DalleBartConfig

TEXT_VOCAB, IMAGE_VOCAB, S, N = 40, 24, 8, 16


def encoded_rows(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Caption ids (S,) int32 and mask (S,) bool, and N image codes int32, the codes a function of the caption."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        length = int(rng.integers(3, S + 1))
        ids = np.ones(S, np.int32)  # padding id 1
        ids[:length] = rng.integers(2, TEXT_VOCAB, length)
        codes = (ids[np.arange(N) % S] * 7 + np.arange(N)) % IMAGE_VOCAB
        rows.append({"text_ids": ids, "text_mask": ids != 1, "image_codes": codes.astype(np.int32)})
    return rows


def prepared(folder, count=64) -> str:
    info = {"vocab_size": TEXT_VOCAB, "image_vocab_size": IMAGE_VOCAB}
    data.write_split(folder, "train", encoded_rows(count), info=info)
    data.write_split(folder, "test", encoded_rows(16, seed=1), info=info)
    return str(folder)


def test_data_info_comes_from_the_metadata_alone(tmp_path):
    folder = prepared(tmp_path / "encoded")
    for shard in (tmp_path / "encoded").glob("*.array_record"):
        shard.unlink()  # no record is read: the plan of a pod run needs no data here
    info = data.data_info(data.PreparedData(path=folder))
    assert info == data.DataInfo("text_to_image", vocab_size=TEXT_VOCAB, seq_len=S, image_vocab_size=IMAGE_VOCAB,
                                 image_len=N)


def test_a_folder_without_the_vocabularies_is_refused_by_name(tmp_path):
    data.write_split(tmp_path / "bare", "train", encoded_rows(4))
    with pytest.raises(data.DataError, match="image_vocab_size") as err:
        data.data_info(data.PreparedData(path=str(tmp_path / "bare")))
    assert "info={'vocab_size': ..., 'image_vocab_size': ...}" in str(err.value)


def test_token_rows_still_need_the_data_to_tell_their_length(tmp_path):
    data.write_split(tmp_path / "tokens", "train", [{"tokens": np.arange(n, dtype=np.int32)} for n in (5, 9)])
    assert data.data_info(data.PreparedData(path=str(tmp_path / "tokens"))) is None


def test_a_tiny_dalle_bart_trains_on_encoded_rows(tmp_path):
    model = DalleBartConfig(text_vocab_size=TEXT_VOCAB, image_vocab_size=IMAGE_VOCAB, max_text_len=S, image_len=N,
                            d_model=32, encoder_layers=1, decoder_layers=1, encoder_heads=2, decoder_heads=2,
                            encoder_ffn=64, decoder_ffn=64, decoder_start_token_id=IMAGE_VOCAB, scan_layers=True,
                            remat="nothing_saveable")
    config = ExperimentConfig(
        task="text_to_image", model=model,
        data=data.PreparedData(path=prepared(tmp_path / "encoded"), eval_split="train", batch_size=16,
                               eval_batch_size=64),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-2), schedule=ScheduleConfig(kind="constant"),
        trainer=TrainerConfig(workdir=str(tmp_path / "run"), steps=3, eval_at_start=True),
        checkpoint=CheckpointConfig(async_save=False), logging=LoggingConfig(progress=False, log_every=1))
    result = run_train(config)
    before, after = result.start_eval_metrics["eval/loss"], result.eval_metrics["eval/loss"]
    assert np.isfinite(after) and after < before - 0.05, (before, after)
    assert before == pytest.approx(np.log(IMAGE_VOCAB + 1), abs=0.3)  # a fresh model guesses uniformly
