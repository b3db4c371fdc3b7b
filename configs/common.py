"""Shared defaults of every experiment; each config file starts from `base_config()`.

Field reference (also in the README):
  seed                     RNG seed of init, dropout and the data order.
  init_from                checkpoint dir (a workdir or segjax.convert output) whose model
                           params initialise a fresh run; params it lacks stay random.
  compile_cache_dir        persistent compilation cache ("" = <workdir's parent>/.jax_cache,
                           "off" = none); see segjax/runtime.py.
  data.*                   dataset, augmentation and eval canvas; see segjax/data.
  model.*                  registry names + constructor arguments; see segjax/models.
  optim.*                  AdamW or SGD, per-parameter lr multipliers / weight-decay
                           exemptions, warmup + poly schedule.
  train.*                  global batch, steps, logging / eval / checkpoint periods.
  eval.*                   batch, whole|slide inference, which checkpoint evaluate mode restores.
  predict.*                input folder, output folder, checkpoint for --mode=predict.
"""
import ml_collections
import numpy as np

CITYSCAPES_MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics in 0..255
CITYSCAPES_STD = (58.395, 57.12, 57.375)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ""
  # Compiled programs are kept here and reused by later runs, resumes and evaluations
  # (segjax/runtime.py): "" = <workdir's parent>/.jax_cache, "off" = no cache.
  c.compile_cache_dir = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic"  # a segjax.data.DATASETS name (see the dataset recipes below)
  c.data.root = ""
  c.data.num_classes = 5
  c.data.class_names = ()  # folder datasets only
  c.data.train_split = "train"
  c.data.eval_split = "val"
  # A TFDS data dir: with it, data.name's ArrayRecord copy written there by
  # `python -m segjax.tools.prepare_data` is read instead of the files under data.root.
  # It is also where data.name = "tfds:NAME[/CONFIG]" (a dataset TFDS ships, prepared with
  # `tfds build NAME --file_format=array_record`) is found; for those, the splits are TFDS's
  # ("train", "validation", "test"), data.class_names is required, and:
  c.data.tfds_dir = ""
  c.data.tfds_image_key = ""  # "": the first of image, image_left (cityscapes) it has
  # "": the first of segmentation_label (cityscapes), annotation (scene_parse150),
  # segmentation_mask, label it has; a 3-channel label gives its first channel.
  c.data.tfds_label_key = ""
  c.data.tfds_label_map = ""  # "" | reduce_zero_label | cityscapes_label_ids (-> trainIds)
  c.data.shuffle = True
  c.data.base_size = (512, 512)  # (h, w) box that random_resize scales by ratio_range
  c.data.ratio_range = (0.5, 2.0)
  c.data.crop_size = (512, 512)  # (h, w)
  c.data.cat_max_ratio = 0.75
  c.data.flip_prob = 0.5
  c.data.photometric = True
  c.data.mean = CITYSCAPES_MEAN
  c.data.std = CITYSCAPES_STD
  c.data.num_parallel_calls = 0  # 0 = tf.data.AUTOTUNE's start, min(16, cores), not tuned
  c.data.synthetic_train_size = 512
  c.data.synthetic_eval_size = 64
  c.data.synthetic_image_size = (128, 128)
  c.data.synthetic_seed = 0

  # A whole model replaces c.model: {"name": <MODELS entry>, "dtype": ..., its arguments}.
  c.model = encoder_decoder(backbone={"name": "mit_b0", "drop_path_rate": 0.1},
                            decode_head={"name": "segformer_head", "channels": 256,
                                         "dropout": 0.1})

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # adamw | sgd | adam (sgd, adam: coupled L2 decay, as in torch)
  c.optim.lr = 6e-5
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.momentum = 0.9  # sgd only
  c.optim.weight_decay = 0.01
  # Regexes over "/"-joined param paths (e.g. "backbone/block0_0/mlp/dwconv/kernel").
  c.optim.no_decay = ("dwconv",)
  c.optim.no_decay_norms = True  # BatchNorm/LayerNorm parameters undecayed (by module type)
  c.optim.lr_mults = (("^decode_head", 10.0), ("^auxiliary_head", 10.0))  # (regex, mult)
  c.optim.warmup_steps = 1500
  c.optim.warmup_start_factor = 1e-6
  c.optim.poly_power = 1.0
  c.optim.end_lr = 0.0  # absolute floor of every group (mmseg's eta_min)
  c.optim.grad_clip = 0.0  # global-norm clip; 0 = off
  # Layer-wise lr decay (BEiT/ConvNeXt; 1.0 = off): backbone layer i gets
  # rate ** (num_layers + 1 - i), ids from the backbone's layer_id rule (mmseg's).
  c.optim.layer_decay_rate = 1.0
  c.optim.layer_decay_num_layers = 12
  c.optim.layer_decay_type = "layer_wise"  # layer_wise | stage_wise
  c.optim.ema_decay = 0.0  # > 0: evaluate/save an EMA of the weights (e.g. 0.9999); 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8  # global, over all devices and hosts
  # Micro-batches per step (gradients averaged, one update): batch_size / grad_accum images
  # are in memory at a time. batch_size must be a multiple of devices x grad_accum.
  c.train.grad_accum = 1
  # Backward-pass recomputation per backbone block, memory for speed (segjax.models.layers.
  # REMAT_POLICIES): "none", "block" (keep matmul/conv outputs) or "full" (keep block inputs).
  c.train.remat = "none"
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

  # The device mesh (segjax/parallel.py). Batches are always split over every device;
  # fsdp = k > 1 also splits parameters and optimizer state k ways (fully sharded data
  # parallelism: k devices hold one copy; XLA gathers weights where used).
  c.parallel = ml_collections.ConfigDict()
  c.parallel.fsdp = 1
  c.parallel.fsdp_min_size = 2 ** 14  # arrays with fewer elements stay replicated
  # ((regex searched in e.g. "params/backbone/block1_0/attn/q/kernel", dim or None), ...):
  # the first match splits that dimension (None: replicate); default the largest divisible.
  c.parallel.fsdp_rules = ()

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8  # global
  c.eval.mode = "whole"  # whole | slide
  # Test images are resized to fit this (h, w) box keeping their aspect ratio, predicted,
  # and scored at their original size (mmseg's test Resize); () = data.base_size.
  c.eval.scale = ()
  c.eval.crop_size = (512, 512)  # slide window (h, w)
  c.eval.stride = (341, 341)  # slide stride (h, w)
  c.eval.scales = (1.0,)  # multi-scale test: e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  c.eval.flip = False  # also average horizontally flipped views
  c.eval.boundary_iou = True  # also Boundary IoU (2% of the diagonal); costs ~cumsums per class
  c.eval.checkpoint = "latest"  # latest | best | <step>, for --mode=evaluate
  # DeepLab v1/v2's fully connected CRF on the predictions (segjax/crf.py), off unless
  # --config.eval.crf.enabled=True; the other keys are DeepLab-CRF-LargeFOV's settings.
  c.eval.crf = ml_collections.ConfigDict({
      "enabled": False, "num_iterations": 10, "bi_w": 4.0, "bi_xy_std": 121.0,
      "bi_rgb_std": 5.0, "pos_w": 3.0, "pos_xy_std": 3.0})

  c.predict = ml_collections.ConfigDict()
  c.predict.input = ""
  c.predict.output = ""
  c.predict.checkpoint = "latest"
  c.predict.alpha = 0.5  # overlay opacity
  return c


def encoder_decoder(backbone, decode_head, neck=None, auxiliary_head=(),
                    dtype: str = "float32") -> ml_collections.ConfigDict:
  """config.model of an EncoderDecoder (segjax/models/segmentor.py).

  `decode_head` is one head or a sequence (a cascade, e.g. OCRNet); each `auxiliary_head`
  entry carries its `loss_weight`. dtype: "bfloat16" computes in bfloat16 (params and
  optimizer stay float32).
  """
  model = {"name": "encoder_decoder", "dtype": dtype, "backbone": backbone,
           "decode_head": decode_head}
  if neck:
    model["neck"] = neck
  if auxiliary_head:
    model["auxiliary_head"] = tuple(auxiliary_head)
  return ml_collections.ConfigDict(model)


def aux_fcn_head(in_index: int = 2, channels: int = 256, loss_weight: float = 0.4) -> dict:
  """mmseg's auxiliary FCN head on the stage-3 map (deep supervision, weight 0.4)."""
  return {"name": "fcn_head", "in_index": in_index, "channels": channels, "num_convs": 1,
          "concat_input": False, "dropout": 0.1, "loss_weight": loss_weight}


def dilated_resnet(depth: int = 50, output_stride: int = 8, **kwargs) -> dict:
  """mmseg's ResNetV1c with dilated last stages: "d8" (strides 1,2,1,1, dilations 1,1,2,4)
  or output stride 16 (strides 1,2,2,1, dilations 1,1,1,2); contract_dilation as mmseg."""
  strides, dilations = {8: ((1, 2, 1, 1), (1, 1, 2, 4)),
                        16: ((1, 2, 2, 1), (1, 1, 1, 2)),
                        32: ((1, 2, 2, 2), (1, 1, 1, 1))}[output_stride]
  return {"name": f"resnet{depth}_v1c", "strides": strides, "dilations": dilations,
          "contract_dilation": True, **kwargs}


def cityscapes_config(crop_size) -> ml_collections.ConfigDict:
  """base_config() on Cityscapes: 19 classes, 2048x1024 frames randomly resized by
  data.ratio_range, `crop_size` (h, w) crops, evaluation on whole 1024x2048 frames."""
  c = base_config()
  c.data.name = "cityscapes"
  c.data.root = "data/cityscapes"
  c.data.num_classes = 19
  c.data.base_size = (1024, 2048)
  c.data.crop_size = tuple(crop_size)
  return c


# mmseg's other `_base_/datasets/*.py` recipes. Every one keeps base_config()'s augmentation:
# random resize of data.base_size by 0.5-2, crops that re-draw while one class covers more
# than 75% (cat_max_ratio 0.75), flip 0.5, photometric distortion, ImageNet mean/std; test
# images are resized into data.base_size keeping their aspect (eval.scale = ()). mmseg writes
# scales (w, h), segjax boxes (h, w): mmseg's (2048, 512) is base_size (512, 2048).
# train.batch_size is the global batch of the recipes' names (4 GPUs x 4 = "4xb4": 16; 4 x 2
# for Mapillary); their schedules stay with the experiment files.


def _dataset_config(name: str, root: str, num_classes: int, base_size, crop_size,
                    batch_size: int = 16) -> ml_collections.ConfigDict:
  c = base_config()
  c.data.name = name
  c.data.root = root
  c.data.num_classes = num_classes
  c.data.base_size = tuple(base_size)
  c.data.ratio_range = (0.5, 2.0)
  c.data.crop_size = tuple(crop_size)
  c.data.cat_max_ratio = 0.75
  c.train.batch_size = batch_size
  c.eval.crop_size = tuple(crop_size)  # slide inference, where a model's recipe asks for it
  c.eval.stride = tuple(s * 2 // 3 for s in crop_size)
  return c


def ade20k_config() -> ml_collections.ConfigDict:
  """mmseg ade20k.py: ADE20K, 150 classes (reduce_zero_label), scale (2048, 512), 512x512
  crops. data.root: the unzipped ADEChallengeData2016/ (segjax/data/ade20k.py)."""
  return _dataset_config("ade20k", "data/ade/ADEChallengeData2016", 150, (512, 2048),
                         (512, 512))


def voc_aug_config() -> ml_collections.ConfigDict:
  """mmseg pascal_voc12_aug.py: VOC 2012 + SBD (10,582 training images), 21 classes, scale
  (2048, 512), 512x512 crops (padded with 255 when smaller), val = VOC 2012 val. data.root
  holds VOCdevkit/ and benchmark_RELEASE/ (segjax/data/voc_aug.py)."""
  return _dataset_config("voc_aug", "data/voc_aug", 21, (512, 2048), (512, 512))


def pascal_context_config(num_classes: int = 59) -> ml_collections.ConfigDict:
  """mmseg pascal_context_59.py (59 classes, background ignored) or pascal_context.py (60,
  background a class): scale (520, 520), 480x480 crops, slide windows 480 stride 320. data.root
  holds VOCdevkit/VOC2010/ and trainval/ (segjax/data/pascal_context.py)."""
  if num_classes not in (59, 60):
    raise ValueError(f"PASCAL-Context has 59 or 60 classes, not {num_classes}")
  return _dataset_config(f"pascal_context_{num_classes}", "data/pascal_context", num_classes,
                         (520, 520), (480, 480))


def coco_stuff164k_config() -> ml_collections.ConfigDict:
  """mmseg coco-stuff164k.py: COCO-Stuff 164k, 171 classes, scale (2048, 512), 512x512 crops.
  data.root holds images/ and annotations/ (segjax/data/coco_stuff.py)."""
  return _dataset_config("coco_stuff164k", "data/coco_stuff164k", 171, (512, 2048), (512, 512))


MAPILLARY_VERSIONS = {"v1.2": ("mapillary_v1_2", 65), "v2.0": ("mapillary_v2", 124)}


def mapillary_config(version: str = "v2.0", crop_size=(1024, 1024)) -> ml_collections.ConfigDict:
  """mmseg mapillary_v1_65.py ("v1.2": 65 classes, "Unlabeled" ignored) or mapillary_v2.py
  ("v2.0": 124 classes): scale (2048, 1024), global batch 8. mmseg's base crop is 512x1024;
  the 1024x1024 default here is the usual choice for Mapillary's large images (mmseg's one
  Mapillary model config pads to 1280x1280). data.root holds training/ and validation/
  (segjax/data/mapillary.py)."""
  if version not in MAPILLARY_VERSIONS:
    raise ValueError(f"Mapillary version must be one of {sorted(MAPILLARY_VERSIONS)}, "
                     f"got {version!r}")
  name, num_classes = MAPILLARY_VERSIONS[version]
  c = _dataset_config(name, "data/mapillary", num_classes, (1024, 2048), crop_size,
                      batch_size=8)
  c.eval.stride = tuple(s * 3 // 4 for s in crop_size)  # 1024 -> 768, as SegFormer's slide
  return c


SEGFORMER_DECODER_CHANNELS = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


def segformer_cityscapes(variant: str) -> ml_collections.ConfigDict:
  """The SegFormer paper recipe on Cityscapes: 1024x1024 crops, batch 8, 160k steps, AdamW
  6e-5 with the head at lr x10, warmup 1500 then poly 1.0, sliding-window test.

  The head is the paper's / HF's (768 channels for B2-B5), not mmseg 1.2.2's 256-channel
  ConvModule head, and weight decay exempts every norm layer and the depthwise convs (the
  paper's code), where mmseg's segformer configs (custom_keys norm/head) decay the decode
  head's BatchNorm and the dwconvs.
  """
  c = cityscapes_config(crop_size=(1024, 1024))
  c.eval.mode = "slide"
  c.eval.crop_size = (1024, 1024)
  c.eval.stride = (768, 768)
  return _segformer(c, variant, batch_size=8)


def segformer_ade20k(variant: str) -> ml_collections.ConfigDict:
  """The SegFormer paper recipe on ADE20K (mmseg segformer_mit-*_8xb2-160k_ade20k-512x512):
  512x512 crops (640x640 for B5, as the paper), batch 16, 160k steps, AdamW 6e-5 with the
  head at lr x10, warmup 1500 then poly 1.0, whole-image test at scale (2048, 512). Head and
  weight-decay groups as `segformer_cityscapes` (the paper's/HF's)."""
  c = ade20k_config()
  if variant == "b5":
    c.data.base_size = (640, 2048)  # mmseg segformer_mit-b5_8xb2-160k_ade20k-640x640
    c.data.crop_size = (640, 640)
  c.eval.mode = "whole"
  return _segformer(c, variant, batch_size=16)


def _segformer(c: ml_collections.ConfigDict, variant: str, batch_size: int
               ) -> ml_collections.ConfigDict:
  """The SegFormer model and schedule of `variant` on the dataset config `c`."""
  c.model.backbone.name = f"mit_{variant}"
  c.model.decode_head.channels = SEGFORMER_DECODER_CHANNELS[variant]
  c.train.batch_size = batch_size
  c.train.num_steps = 160_000
  c.eval.batch_size = 8
  return c


def cnn_recipe(c: ml_collections.ConfigDict, model: ml_collections.ConfigDict,
               num_steps: int) -> ml_collections.ConfigDict:
  """mmseg's CNN schedule on the dataset config `c` (its crops and batch): SGD lr 0.01,
  momentum 0.9, coupled weight decay 5e-4 on every parameter (BN included), poly 0.9 to 1e-4
  without warmup, whole-image test; evaluation and checkpoints every tenth of the run."""
  c.model = model
  c.optim.name = "sgd"
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.no_decay = ()
  c.optim.no_decay_norms = False
  c.optim.lr_mults = ()
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.9
  c.optim.end_lr = 1e-4
  c.train.num_steps = num_steps
  c.train.eval_every = num_steps // 10
  c.train.checkpoint_every = num_steps // 10
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c


def cnn_cityscapes(model: ml_collections.ConfigDict, num_steps: int = 80_000
                   ) -> ml_collections.ConfigDict:
  """mmseg's CNN recipe on Cityscapes (e.g. pspnet_r50-d8_4xb2-80k_cityscapes-512x1024):
  random resize of 2048x1024 by 0.5-2, 512x1024 crops (cat_max_ratio 0.75), flip,
  photometric distortion, global batch 8, `cnn_recipe`'s SGD schedule; whole-image test at
  1024x2048 (mmseg's test mode for these configs)."""
  c = cityscapes_config(crop_size=(512, 1024))
  c.train.batch_size = 8
  return cnn_recipe(c, model, num_steps)


# ViT models (SETR, Segmenter): mmseg 1.2.2's configs around its VisionTransformer.

VIT_DIMS = {"tiny": 192, "small": 384, "base": 768, "large": 1024}


def vit_backbone(variant: str, img_size, **kwargs) -> dict:
  """mmseg's VisionTransformer as its SETR / Segmenter configs set it: patch 16, LayerNorm
  eps 1e-6, the position embedding learnt at `img_size` (h, w) and resized to other inputs."""
  return {"name": f"vit_{variant}", "img_size": tuple(img_size), "layer_norm_eps": 1e-6,
          **kwargs}


def setr_cityscapes(model: ml_collections.ConfigDict, lr: float = 0.01
                    ) -> ml_collections.ConfigDict:
  """mmseg's SETR recipe on Cityscapes (setr_vit-l_*_8xb1-80k_cityscapes-768x768): random
  resize of 2049x1025 by 0.5-2, 768x768 crops, global batch 8, 80k steps of SGD (lr `lr`,
  momentum 0.9, no weight decay, poly 0.9 to 1e-4, no warmup) with every head (mmseg's
  custom key "head": decode and auxiliary heads) at lr x10; sliding-window test, 768x768
  windows every 512, on frames resized into 1025x2049 (mmseg's scale (2049, 1025))."""
  c = cityscapes_config(crop_size=(768, 768))
  c.data.base_size = (1025, 2049)
  c.train.batch_size = 8
  c = cnn_recipe(c, model, 80_000)
  c.optim.lr = lr
  c.optim.weight_decay = 0.0
  c.optim.lr_mults = (("head", 10.0),)
  c.eval.mode = "slide"
  c.eval.crop_size = (768, 768)
  c.eval.stride = (512, 512)
  return c


def segmenter_ade20k(variant: str, decoder: str) -> ml_collections.ConfigDict:
  """mmseg's Segmenter recipe on ADE20K (segmenter_vit-{t,s,b,l}_mask_8xb1-160k_ade20k-512x512
  and segmenter_vit-s_fcn_...): ViT-`variant` (patch 16, final LayerNorm, stochastic depth
  0.1, the last layer's tokens) with the mask transformer (`decoder="mask"`: 2 layers,
  heads of 64 channels) or the linear decoder ("linear": a 1x1 conv, mmseg's FCNHead with
  num_convs=0); inputs normalised to [-1, 1] (mean = std = 127.5); 512x512 crops (640x640
  and scale (2560, 640) for ViT-L, as mmseg's file), global batch 8, 160k steps of SGD lr
  0.001 (momentum 0.9, no weight decay, poly 0.9 to 1e-4); sliding-window test with windows
  of the crop size every 480 (608 for ViT-L)."""
  dims = VIT_DIMS[variant]
  crop = 640 if variant == "large" else 512
  backbone = vit_backbone(variant, (crop, crop), out_indices=-1, final_norm=True,
                          with_cls_token=True, interpolate_mode="bicubic", drop_path_rate=0.1)
  if decoder == "mask":
    head = {"name": "segmenter_mask_head", "num_layers": 2, "num_heads": dims // 64,
            "embed_dims": dims, "drop_path_rate": 0.1}
  elif decoder == "linear":
    head = {"name": "fcn_head", "channels": dims, "num_convs": 0, "concat_input": False,
            "dropout": 0.0}
  else:
    raise ValueError(f"Segmenter decoder must be 'mask' or 'linear', got {decoder!r}")
  model = encoder_decoder(backbone, head)
  model.name = "segmenter"  # logits resized to the input in the model, as mmseg's
  c = ade20k_config()
  c.data.mean = c.data.std = (127.5, 127.5, 127.5)
  if variant == "large":  # mmseg's ade20k_640x640.py
    c.data.base_size = (640, 2560)
    c.data.crop_size = (640, 640)
  c.train.batch_size = 8
  c = cnn_recipe(c, model, 160_000)
  c.optim.lr = 0.001
  c.optim.weight_decay = 0.0
  c.eval.mode = "slide"
  c.eval.crop_size = (crop, crop)
  c.eval.stride = (crop - 32, crop - 32)
  return c


# Semantic FPN on transformer backbones (PVT v1/v2, PoolFormer): the PVT authors' recipe,
# which PVTv2-Seg, PoolFormer's code and mmseg 1.2.2's configs/poolformer copy.


def semantic_fpn_ade20k(backbone: dict, frozen: tuple = ()) -> ml_collections.ConfigDict:
  """Semantic FPN (Kirillov et al. 2019: mmseg's FPN neck, 256 channels, 4 outputs, and
  FPNHead, 128 channels, dropout 0.1) on `backbone`, trained on ADE20K as the PVT authors'
  code does (github.com/whai362/PVT segmentation/configs/sem_fpn/PVT/fpn_pvt_*_ade20k_40k.py,
  "8 GPUs, so lr x2 and max_iters / 2" of mmseg 0.13's 4-GPU 80k schedule): random resize of
  (2048, 512) by 0.5-2, 512x512 crops (cat_max_ratio 0.75), flip, photometric distortion;
  global batch 32 (8 x 4), 40k steps of AdamW lr 2e-4, betas (0.9, 0.999), weight decay 1e-4
  on every parameter (no exemptions, no head multiplier), no warmup, poly 0.9 down to 0;
  evaluation and checkpoints every 4k steps; whole-image test with the image resized into
  (2048, 512) keeping its aspect. The references then round the test size to a multiple of 32
  (AlignResize / ResizeToMultiple); segjax feeds it as is, which these backbones accept.
  `frozen`: regexes of parameter paths never updated (lr multiplier 0: no step, no decay),
  e.g. the patch embedding that mmseg's PoolFormer (frozen_stages=0) freezes."""
  c = ade20k_config()
  c.model = encoder_decoder(
      backbone, neck={"name": "fpn", "out_channels": 256, "num_outs": 4},
      decode_head={"name": "fpn_head", "in_index": (0, 1, 2, 3),
                   "feature_strides": (4, 8, 16, 32), "channels": 128, "dropout": 0.1})
  c.optim.name = "adamw"
  c.optim.lr = 2e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 1e-4
  c.optim.no_decay = ()
  c.optim.no_decay_norms = False
  c.optim.lr_mults = tuple((pattern, 0.0) for pattern in frozen)
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.9
  c.optim.end_lr = 0.0
  c.train.batch_size = 32
  c.train.num_steps = 40_000
  c.train.eval_every = 4_000
  c.train.checkpoint_every = 4_000
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c


# The Caffe-era VGG-16 models on VOC (FCN, DeepLab v1, ParseNet, the dilation context module):
# configs/{fcn32s,fcn16s,fcn8s,deeplabv1,parsenet,context}_vgg16_voc.py.


def caffe_voc(model: ml_collections.ConfigDict, crop_size, batch_size: int, num_steps: int,
              lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, flip: bool = True,
              lr_mults=()) -> ml_collections.ConfigDict:
  """VOC 2012 + SBD as those Caffe models train: no random rescaling or photometric
  distortion, random `crop_size` crops padded with 255 where the image is smaller, optional
  mirroring; whole-image test at the image's own size (VOC's images fit in 500x500). Caffe's
  SGD: momentum, coupled L2 decay except on biases, biases at lr x2 (every layer's
  `lr_mult: 2, decay_mult: 0`) after the model's own `lr_mults`; no warmup, constant lr
  (configs set a step or poly decay on top)."""
  c = voc_aug_config()
  c.model = model
  c.data.base_size = (500, 500)
  c.data.ratio_range = (1.0, 1.0)
  c.data.crop_size = tuple(crop_size)
  c.data.cat_max_ratio = 1.0
  c.data.flip_prob = 0.5 if flip else 0.0
  c.data.photometric = False
  c.optim.name = "sgd"
  c.optim.lr = lr
  c.optim.momentum = momentum
  c.optim.weight_decay = weight_decay
  c.optim.no_decay = ("bias$",)
  c.optim.no_decay_norms = False
  c.optim.lr_mults = tuple(lr_mults) + (("bias$", 2.0),)
  c.optim.warmup_steps = 0
  c.optim.poly_power = 0.0  # constant
  c.optim.end_lr = 0.0
  c.train.batch_size = batch_size
  c.train.num_steps = num_steps
  c.train.eval_every = num_steps // 10
  c.train.checkpoint_every = num_steps // 10
  c.eval.batch_size = 8
  c.eval.mode = "whole"
  return c


# Class weights of the real-time models' recipes (ENet, ESPNet): w_c = 1 / ln(c + p_c).


def train_label_histogram(data, num_classes: int):
  """(pixels of each class, all pixels) over the label maps of data.train_split under
  data.root: every pixel counts in the total, ignored ones (255) included, as in ENet's and
  ESPNet's own code, whose histograms count the void pixels as a class of their own. Reads
  every training label map once (a minute or two for Cityscapes' 2,975)."""
  from segjax import data as data_lib  # the data reader only when it is needed
  source = data_lib.build_source(data, data.train_split)
  class_pixels, total = np.zeros(num_classes, np.int64), 0
  for i in range(len(source)):
    _, mask = source.load(i)
    class_pixels += np.bincount(mask.ravel(), minlength=256)[:num_classes]
    total += mask.size
  return class_pixels, total


def log_class_weights(class_pixels, total_pixels: int, c: float):
  """ENet's class weighting (Paszke et al. 2016, also ESPNet's): w = 1 / ln(c + p), p the
  class's share of the training pixels; c = 1.02 (ENet) bounds a weight to [1, 50.5], c = 1.10
  (ESPNet) to [1, 10.5]. A class never seen weighs 0 (it never occurs in a label; ENet's code
  zeroes it too)."""
  p = np.asarray(class_pixels, np.float64) / max(int(total_pixels), 1)
  weights = np.where(p > 0, 1.0 / np.log(c + p), 0.0)
  return tuple(float(w) for w in weights)


def espnet_cityscapes(model: dict, batch_size: int, root=None) -> ml_collections.ConfigDict:
  """The official ESPNet / ESPNet-C recipe (github.com/sacmehta/ESPNet train/main.py) on
  Cityscapes: Adam lr 5e-4, betas (0.9, 0.999), weight decay 5e-4 as L2 on every parameter
  (torch's Adam), lr halved after 100 and 200 of 300 epochs, cross-entropy weighted by
  1 / ln(1.10 + p_class) when `root` (the data root, whose training labels give p) is set.
  An official epoch passes the 2,975 training frames five times, at 768x1536, 720x1280,
  256x512, 384x768 and 512x1024: 14,875 images, so 300 epochs are 300 * 14,875 / batch_size
  steps here. Here frames of 512x1024 are randomly rescaled by 0.5-1.5 and cropped to
  512x1024 (padded with the ignore label where smaller), with horizontal flips; the official
  loaders resize whole frames, cut up to 32-100 pixels off the borders, and flip with
  cv2.flip(img, 0), which is a vertical flip. Test on the whole frame at 512x1024, scored at
  1024x2048."""
  c = cityscapes_config(crop_size=(512, 1024))
  c.data.base_size = (512, 1024)
  c.data.ratio_range = (0.5, 1.5)
  c.data.cat_max_ratio = 1.0
  c.data.photometric = False
  loss = {"name": "cross_entropy", "weight": 1.0}
  if root:
    c.data.root = root
    loss["class_weight"] = log_class_weights(
        *train_label_histogram(c.data, c.data.num_classes), 1.10)
  model = ml_collections.ConfigDict({"dtype": "float32", **model, "loss": (loss,)})
  num_steps = 300 * 5 * 2975 // batch_size
  c = cnn_recipe(c, model, num_steps=num_steps)
  c.optim.name = "adam"
  c.optim.lr = 5e-4
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  c.optim.weight_decay = 5e-4
  c.optim.lr_step_size = num_steps // 3  # 100 epochs
  c.optim.lr_step_gamma = 0.5
  c.train.batch_size = batch_size
  c.eval.crop_size = (512, 1024)
  c.eval.stride = (341, 683)
  return c


# Real-time models (BiSeNet V1/V2, STDC): configs/{bisenetv1,bisenetv2,stdc}_*_city.py.


def realtime_cityscapes(model: ml_collections.ConfigDict, crop_size, batch_size: int,
                        num_steps: int, lr: float) -> ml_collections.ConfigDict:
  """mmseg 1.2.2's recipe of its real-time Cityscapes models: the CNN recipe (`cnn_recipe`:
  SGD momentum 0.9, coupled decay 5e-4 on every parameter, poly 0.9 to 1e-4, whole-image
  test at 1024x2048) with `crop_size` crops, global batch `batch_size` and learning rate `lr`,
  after a linear warmup over 1000 steps from lr x 0.1 (LinearLR(start_factor=0.1, end=1000)
  then PolyLR(begin=1000))."""
  c = cityscapes_config(crop_size=crop_size)
  c.train.batch_size = batch_size
  c = cnn_recipe(c, model, num_steps)
  c.optim.lr = lr
  c.optim.warmup_steps = 1000
  c.optim.warmup_start_factor = 0.1
  return c
