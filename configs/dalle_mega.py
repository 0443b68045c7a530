"""DALL·E Mega at its released size (2.59B parameters: d 2048, 24+24 layers, 32 heads, GLU 4096),
trained on pre-encoded rows; sized for a TPU v5p pod, it does not train here.

Plan:      baobab plan configs/dalle_mega.py --topology v5p:4x4x4 data.path=DIR   (needs the tpu extra)
Train:     baobab train configs/dalle_mega.py data.path=DIR   (on every host of the slice)
Hardware:  TPU v5p (95 GiB HBM per chip); FSDP over all the chips (mesh.fsdp=-1)
Measured:  `baobab plan` on this 2-core CPU (tests/test_plan_dalle_mega.py), per chip:
           v5p:2x2x2, data.batch_size=64 (8 per chip), FSDP over the 8 chips: needs 6.41 GiB of
           95 GiB (fp32 parameters 1.21, Adam state 2.41, gradients 1.21, activations and
           workspace 1.59 GiB); MFU bound 0.80 (remat), a step at least 53 ms at 459 TFLOP/s
           per chip; the compile takes 2-4 minutes here.
           v5p:4x4x4 as configured (512 rows = 8 per chip, FSDP over the 64 chips, 16 hosts):
           needs 2.96 GiB of 95 GiB (state 628 MiB, activations 2.35 GiB), a step at least
           52.9 ms, at most 2.48M image tokens/s; compile 251 s here.
           v5p is roomy: even data parallel (mesh.data=8 mesh.fsdp=1) with 256 rows per chip
           fits, at 73.81 GiB. On 16 GiB v5e:2x4 chips data parallel needs 40.01 GiB and is
           refused; plan's fix `mesh.data=2 mesh.fsdp=4` fits at 10.30 GiB.

Data (``data.PreparedData``; plan reads only its ``metadata.json``): one record per
image, as DALL·E Mini trained on them, captions already BPE-encoded and images
already VQGAN-encoded::

    text_ids     (64,)  int32  caption BPE ids, <s> ... </s> then padding (id 1)
    text_mask    (64,)  bool   True for a token, False for padding
    image_codes  (256,) int32  the 16x16 VQGAN codes of the image, in [0, image_vocab_size)

written with ``data.write_split(DIR, "train", rows, num_shards=..., info={"vocab_size": 50272,
"image_vocab_size": 16415})`` (and a ``test`` split, or ``data.eval_split=None``). 16415 is
the released Mega's ``image_vocab_size`` (its VQGAN makes 16,384 codes); the model refuses
metadata that disagrees, naming the key.

A step predicts the 256 image tokens of each row (plan's tokens per step); remat recomputes
each layer's forward in the backward pass; compute is bf16 over fp32 master weights. AdamW
stands in for the released run's Distributed Shampoo.
"""

from baobab.data import PreparedData
from baobab.experiment import ExperimentConfig, OptimizerConfig, ScheduleConfig, TrainerConfig
from baobab.models import DalleBartConfig
from baobab.train import CheckpointConfig, MeshConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        task="text_to_image",
        model=DalleBartConfig.mega(scan_layers=True, remat="nothing_saveable"),
        data=PreparedData(path="data/dalle_encoded", batch_size=512, eval_batch_size=512),
        optimizer=OptimizerConfig(kind="adamw", lr=1e-4, weight_decay=0.0, b2=0.99, clip_norm=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=5000, final_fraction=0.1),
        trainer=TrainerConfig(workdir="runs/dalle_mega", steps=500_000, eval_every=5000,
                              precision="params=float32,compute=bfloat16,output=float32"),
        mesh=MeshConfig(data=1, fsdp=-1),
        checkpoint=CheckpointConfig(every=2000),
    )
