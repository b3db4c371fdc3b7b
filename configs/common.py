"""Shared defaults of every experiment; each config file starts from `base_config()`.

Field reference (also in the README):
  seed                     RNG seed of init, dropout and the data order.
  init_from                checkpoint dir (a workdir or segjax.convert output) whose model
                           params initialise a fresh run; params it lacks stay random.
  data.*                   dataset, augmentation and eval canvas; see segjax/data.
  model.*                  registry names + constructor arguments; see segjax/models.
  optim.*                  AdamW, per-parameter lr multipliers / weight-decay exemptions, schedule.
  train.*                  global batch, steps, logging / eval / checkpoint periods.
  eval.*                   batch, whole|slide inference, which checkpoint evaluate mode restores.
  predict.*                input folder, output folder, checkpoint for --mode=predict.
"""
import ml_collections

CITYSCAPES_MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics in 0..255
CITYSCAPES_STD = (58.395, 57.12, 57.375)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic"  # synthetic | cityscapes | folder
  c.data.root = ""
  c.data.num_classes = 5
  c.data.class_names = ()  # folder datasets only
  c.data.train_split = "train"
  c.data.eval_split = "val"
  c.data.shuffle = True
  c.data.base_size = (512, 512)  # (h, w) box that random_resize scales by ratio_range
  c.data.ratio_range = (0.5, 2.0)
  c.data.crop_size = (512, 512)  # (h, w)
  c.data.cat_max_ratio = 0.75
  c.data.flip_prob = 0.5
  c.data.photometric = True
  c.data.mean = CITYSCAPES_MEAN
  c.data.std = CITYSCAPES_STD
  c.data.eval_size = (512, 512)  # (h, w) canvas eval images are padded to (255 = ignored)
  c.data.num_parallel_calls = 0  # 0 = tf.data.AUTOTUNE
  c.data.synthetic_train_size = 512
  c.data.synthetic_eval_size = 64
  c.data.synthetic_image_size = (128, 128)
  c.data.synthetic_seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "encoder_decoder"
  c.model.dtype = "float32"  # or bfloat16 (compute only; params and optimizer stay float32)
  c.model.backbone = ml_collections.ConfigDict({"name": "mit_b0", "drop_path_rate": 0.1})
  c.model.decode_head = ml_collections.ConfigDict(
      {"name": "segformer_head", "channels": 256, "dropout": 0.1})
  c.model.neck = ml_collections.ConfigDict()  # empty = none
  c.model.aux_heads = ()  # each {"name": ..., "loss_weight": 0.4, ...}

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 6e-5
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.01
  # Regexes over "/"-joined param paths (e.g. "backbone/block0_0/norm1/scale").
  c.optim.no_decay = ("norm", "_bn/", "dwconv")
  c.optim.lr_mults = (("^decode_head/", 10.0), ("^aux_heads", 10.0))  # (regex, multiplier)
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 1.0
  c.optim.end_lr = 0.0
  c.optim.grad_clip = 0.0  # global-norm clip; 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8  # global, over all devices and hosts
  c.train.num_steps = 160_000
  c.train.log_every = 50
  c.train.eval_every = 16_000
  c.train.checkpoint_every = 16_000
  c.train.max_to_keep = 3
  c.train.async_checkpoint = True
  c.train.num_overlays = 4  # eval images written as TensorBoard/PNG overlays
  # A resume refuses a config that changes seed/data/model/optim/batch unless this is True.
  c.train.allow_config_changes = False
  # <workdir>/train.lock of a run on another host counts as stale after this many seconds
  # without a heartbeat (a run on this host is stale as soon as its process is gone).
  c.train.lock_stale_after = 600.0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8  # global
  c.eval.mode = "whole"  # whole | slide
  c.eval.crop_size = (512, 512)  # slide window (h, w)
  c.eval.stride = (341, 341)  # slide stride (h, w)
  c.eval.scales = (1.0,)  # multi-scale test: e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  c.eval.flip = False  # also average horizontally flipped views
  c.eval.checkpoint = "latest"  # latest | best | <step>, for --mode=evaluate

  c.predict = ml_collections.ConfigDict()
  c.predict.input = ""
  c.predict.output = ""
  c.predict.checkpoint = "latest"
  c.predict.alpha = 0.5  # overlay opacity
  return c


SEGFORMER_DECODER_CHANNELS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


def segformer_cityscapes(variant: str) -> ml_collections.ConfigDict:
  """The SegFormer paper recipe on Cityscapes (mmseg segformer_mit-b*_8xb1-160k_cityscapes)."""
  c = base_config()
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.base_size = (1024, 2048)
  c.data.crop_size = (1024, 1024)
  c.data.eval_size = (1024, 2048)
  c.model.backbone.name = f"mit_{variant}"
  c.model.decode_head.channels = SEGFORMER_DECODER_CHANNELS[variant]
  c.train.batch_size = 8
  c.train.num_steps = 160_000
  c.eval.batch_size = 8
  c.eval.mode = "slide"
  c.eval.crop_size = (1024, 1024)
  c.eval.stride = (768, 768)
  return c
