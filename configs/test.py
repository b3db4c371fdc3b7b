"""A tiny SegFormer on tiny synthetic images, for tests only (seconds per step on CPU).

  python -m segjax.main --config=configs/test.py --workdir=/tmp/segjax_test

No target: it exists so every code path runs fast.
"""
from configs import common


def get_config():
  c = common.base_config()
  c.data.synthetic_train_size = 64
  c.data.synthetic_eval_size = 12
  c.data.synthetic_image_size = (48, 48)
  c.data.base_size = (48, 48)
  c.data.crop_size = (32, 32)
  c.data.num_parallel_calls = 2
  c.model.backbone = {"name": "mit", "hidden_sizes": (8, 16, 24, 32), "depths": (1, 1, 1, 1),
                      "num_heads": (1, 1, 2, 2), "drop_path_rate": 0.1}
  c.model.decode_head.channels = 16
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 2
  c.train.batch_size = 8
  c.train.num_steps = 6
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.train.num_overlays = 2
  c.eval.batch_size = 8
  c.eval.crop_size = (32, 32)
  c.eval.stride = (16, 16)
  return c
