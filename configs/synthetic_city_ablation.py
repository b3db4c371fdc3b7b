"""The ablation bed of experiments/: configs/segformer_b0_synthetic_city.py with each design
question of the studies as a named choice after the config path.

  python -m segjax.main \
      --config=configs/synthetic_city_ablation.py:decoder=psp,aux=0.4,loss=focal \
      --workdir=runs/ablation

Choices (comma-separated key=value; unnamed keys keep the defaults in brackets):
  recipe   [synthetic_city]: segformer_b0_synthetic_city's data and 800-step schedule;
           cpu: 400 steps of batch 4 on 1600 scenes (each seen once), evaluated on 50
           (the studies' --scale=cpu: ~3 min a run on 2 idle cores; mIoU 0.20 measured,
           against 0.29 for the full 800 x 8 recipe); cityscapes: the SegFormer-B0 paper
           recipe on Cityscapes (segformer_b0_city.py: 1024x1024 crops, 160k steps, slide
           test; set data.root), the studies' --scale=paper.
  decoder  [segformer] | fcn | psp | aspp | deeplabv3plus | uper | fpn: the decode head on
           the same MiT-B0 encoder (hidden sizes 32, 64, 160, 256; strides 4..32). The
           single-map heads (FCN, PSP, ASPP, v3+'s ASPP) read the stride-32 map, as they would
           any non-dilated encoder; ASPP's dilations are scaled to that map (1, 2, 4, 6: the
           paper's 6/12/18 at stride 16 over 513 px are 1/40..1/8 of the map, and at stride
           32 on 128x256 crops the map is 4x8). v3+ takes its low-level 48 channels from the
           stride-4 map; UPer and the Semantic FPN read all four.
  width    [128; 256 with recipe=cityscapes]: the decode head's channels (SegFormer's "C").
  depth    [2]: MiT blocks per stage (B0: 2, 2, 2, 2).
  encoder  [mit_b0] | resnet18 | resnet50: MiT-B0, or mmseg's ResNetV1c (deep stem) of that
           depth (channels 64..512 for 18, 256..2048 for 50; from scratch, as every encoder on
           the bed).
  output_stride [32] | 16 | 8: a ResNet encoder's output stride, by dilating its last stages
           as DeepLab does (common.dilated_resnet: 16 dilates stage 4 by 2, 8 stages 3 and 4
           by 2 and 4). ASPP's dilations grow with the map, 1 (its 1x1 branch) and (2, 4, 6) x
           32 / stride, so they span the same pixels at every stride (the paper doubles them
           from OS 16 to 8).
  aux      [0]: loss weight of an auxiliary FCN head on the stride-16 stage (64 channels,
           mmseg's deep-supervision head); 0 = no auxiliary head.
  model    [none] | <a config in configs/, e.g. fast_scnn_city>: that config's whole model
           (and auxiliary heads) on the bed instead of MiT-B0 + decoder (decoder, width,
           depth, aux, loss, encoder and output_stride then do not apply); training stays the
           bed's recipe (AdamW 1e-3), the same for every model, not each paper's 100k-step
           schedule.
  loss     [ce] | wce | focal | dice | lovasz | ohem: the decode head's loss. wce weights
           cross-entropy by ENet's 1 / ln(1.02 + p) of each class's pixel share p in
           synthetic_city (2.8 for road .. 50.3 for motorcycle; with recipe=cityscapes,
           mmseg's Cityscapes class weights, 0.84 .. 1.15); dice and
           lovasz are added to cross-entropy with weight 1 (alone, from scratch, they train
           poorly: the Lovasz paper fine-tunes a CE model); ohem keeps the pixels with
           p(label) < 0.7, at least 6000 per image (mmseg's 100k of 512x1024, scaled to the
           128x256 crop).
The rest (data, schedule, optimizer) is the recipe's.
"""
from configs import common, segformer_b0_synthetic_city
from segjax import losses
from segjax.data import synthetic_city

RECIPES = ("synthetic_city", "cpu", "cityscapes")
DECODERS = ("segformer", "fcn", "psp", "aspp", "deeplabv3plus", "uper", "fpn")
LOSSES = {
    "ce": None,
    "wce": ({"name": "cross_entropy",
             "class_weight": losses.enet_class_weights(synthetic_city.CLASS_FREQUENCIES)},),
    "focal": ({"name": "focal"},),
    "dice": ({"name": "cross_entropy"}, {"name": "dice", "use_sigmoid": False}),
    "lovasz": ({"name": "cross_entropy"}, {"name": "lovasz"}),
    "ohem": ({"name": "ohem_cross_entropy", "thresh": 0.7, "min_kept": 6000},),
}
ENCODERS = ("mit_b0", "resnet18", "resnet50")
OUTPUT_STRIDES = (32, 16, 8)
DEFAULTS = {"recipe": "synthetic_city", "decoder": "segformer", "width": "", "depth": "2",
            "aux": "0", "loss": "ce", "model": "", "encoder": "mit_b0", "output_stride": "32"}


def parse(arg) -> dict:
  """'decoder=psp,aux=0.4' -> the full choice dict; one clear error for a bad key or value."""
  choices = dict(DEFAULTS)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in DEFAULTS:
      raise ValueError(f"configs/synthetic_city_ablation.py: bad choice {item!r}; expected "
                       f"key=value with key one of {sorted(DEFAULTS)}")
    choices[key] = value
  if choices["recipe"] not in RECIPES:
    raise ValueError(f"recipe={choices['recipe']!r} is not one of {RECIPES}")
  if choices["decoder"] not in DECODERS:
    raise ValueError(f"decoder={choices['decoder']!r} is not one of {DECODERS}")
  if choices["loss"] not in LOSSES:
    raise ValueError(f"loss={choices['loss']!r} is not one of {tuple(LOSSES)}")
  if choices["encoder"] not in ENCODERS:
    raise ValueError(f"encoder={choices['encoder']!r} is not one of {ENCODERS}")
  if choices["output_stride"] not in map(str, OUTPUT_STRIDES):
    raise ValueError(f"output_stride={choices['output_stride']!r} is not one of "
                     f"{OUTPUT_STRIDES}")
  if choices["output_stride"] != "32" and not choices["encoder"].startswith("resnet"):
    raise ValueError(f"output_stride={choices['output_stride']} needs a ResNet encoder "
                     f"(encoder=resnet18|resnet50), not {choices['encoder']}")
  if choices["depth"] != "2" and choices["encoder"] != "mit_b0":
    raise ValueError(f"depth={choices['depth']} sets MiT blocks per stage; "
                     f"encoder={choices['encoder']} has none")
  return choices


def decode_head(decoder: str, width: int, output_stride: int = 32) -> dict:
  single = {"in_index": 3, "channels": width, "dropout": 0.1}
  dilations = (1,) + tuple(d * 32 // output_stride for d in (2, 4, 6))  # 1: the 1x1 branch
  strides = (4, 8, min(16, output_stride), output_stride)  # of the four maps
  return {
      "segformer": {"name": "segformer_head", "channels": width, "dropout": 0.1},
      "fcn": {"name": "fcn_head", **single, "num_convs": 2, "concat_input": True},
      "psp": {"name": "psp_head", **single, "pool_scales": (1, 2, 3, 6)},
      "aspp": {"name": "aspp_head", **single, "dilations": dilations},
      "deeplabv3plus": {"name": "sep_aspp_head", **single, "dilations": dilations,
                        "c1_in_index": 0, "c1_channels": 48},
      "uper": {"name": "uper_head", "in_index": (0, 1, 2, 3), "channels": width,
               "pool_scales": (1, 2, 3, 6), "dropout": 0.1},
      "fpn": {"name": "fpn_head", "in_index": (0, 1, 2, 3), "feature_strides": strides,
              "channels": width, "dropout": 0.1},
  }[decoder]


def get_config(arg=None):
  choices = parse(arg)
  recipe = choices["recipe"]
  if recipe == "cityscapes":
    c = common.segformer_cityscapes("b0")
  else:
    c = segformer_b0_synthetic_city.get_config()
  if recipe == "cpu":
    c.data.synthetic_train_size = 1600
    c.data.synthetic_eval_size = 50
    c.optim.warmup_steps = 20
    c.train.batch_size = 4
    c.train.num_steps = 400
    c.train.log_every = 50
    c.train.eval_every = c.train.checkpoint_every = 400
    c.train.num_overlays = 0
  width = int(choices["width"] or (256 if recipe == "cityscapes" else 128))
  depth, aux = int(choices["depth"]), float(choices["aux"])
  output_stride = int(choices["output_stride"])
  head = decode_head(choices["decoder"], width, output_stride)
  if LOSSES[choices["loss"]] is not None:
    head["loss"] = LOSSES[choices["loss"]]
  if choices["loss"] == "wce" and recipe == "cityscapes":
    head["loss"] = ({"name": "cross_entropy", "class_weight": "cityscapes"},)
  if choices["encoder"] == "mit_b0":
    backbone = {"name": "mit_b0", "drop_path_rate": c.model.backbone.drop_path_rate}
    if depth != 2:
      backbone["depths"] = (depth,) * 4
  else:
    backbone = common.dilated_resnet(int(choices["encoder"][len("resnet"):]), output_stride)
  c.model = common.encoder_decoder(
      backbone=backbone, decode_head=head,
      neck=({"name": "fpn", "out_channels": width, "num_outs": 4}
            if choices["decoder"] == "fpn" else None),
      auxiliary_head=[common.aux_fcn_head(in_index=2, channels=64, loss_weight=aux)] if aux else ())
  if choices["model"]:
    other = _config_module(choices["model"]).get_config()
    if other.data.num_classes != 19:
      raise ValueError(f"model={choices['model']}: its config has "
                       f"{other.data.num_classes} classes; the bed needs a 19-class model")
    c.model = other.model
  return c


def _config_module(name: str):
  import importlib
  try:
    return importlib.import_module(f"configs.{name}")
  except ModuleNotFoundError:
    raise ValueError(f"model={name!r}: there is no configs/{name}.py") from None
