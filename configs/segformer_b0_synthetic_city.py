"""SegFormer (MiT-B0) from scratch on synthetic street scenes (segjax/data/synthetic_city.py:
Cityscapes' 19 classes, roads, facades, poles, people, riders, vehicles; 256x512 images).

  python -m segjax.main --config=configs/segformer_b0_synthetic_city.py \
      --workdir=runs/segformer_b0_synthetic_city

A CPU-sized ablation bed where methods differ: the quickstart's shapes are learnt in
minutes, these scenes keep thin structures, small objects and classes 1000x rarer than road
(mIoU averages all 19). The quickstart recipe (AdamW 1e-3, 50 warmup steps, 128-channel
head, no stochastic depth) on 4000 training scenes at 256x512, random rescale 0.5-1.5 and
128x256 crops, batch 8, 800 steps; evaluation on 100 held-out scenes, whole 256x512 images.

Sized for ~10-15 min on 2 CPU cores from the quickstart's measured throughput (~360k
training pixels/s with its evaluations and compile): 800 x 8 x 128x256 pixels is ~10 min,
plus rendering (~25-35 ms a scene on one core, 6400 scenes) and two evaluations.
Measured (2026-12-06, 2 CPU cores shared with other jobs, 1 device): mIoU 0.2913 (aAcc 0.871)
at step 800 and 0.1209 at step 400, 16m54s wall including rendering, compile and both
evaluations; 5-10 img/s in training.
"""
from configs import common


def get_config():
  c = common.base_config()
  c.data.name = "synthetic_city"
  c.data.num_classes = 19
  c.data.synthetic_train_size = 4000
  c.data.synthetic_eval_size = 100
  c.data.synthetic_image_size = (256, 512)  # the dataset's own size (common's is 128x128)
  c.data.base_size = (256, 512)
  c.data.ratio_range = (0.5, 1.5)
  c.data.crop_size = (128, 256)
  c.model.backbone.name = "mit_b0"
  c.model.backbone.drop_path_rate = 0.0
  c.model.decode_head.channels = 128
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.train.batch_size = 8
  c.train.num_steps = 800
  c.train.log_every = 25
  c.train.eval_every = 400
  c.train.checkpoint_every = 400
  c.eval.batch_size = 8
  return c
