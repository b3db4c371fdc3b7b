"""Convert PyTorch weights to a segjax checkpoint directory.

  python -m segjax.convert --format=FORMAT --input=PATH --output=DIR [--config=CFG]

Formats:
  hf_segformer        PATH is an HF model directory (config.json + model.safetensors or
                      pytorch_model.bin), encoder-only (nvidia/mit-b1) or a full segmentation
                      model. CFG defaults to configs/segformer_<variant>_city.py.
  mmseg               PATH is an mmsegmentation 1.x checkpoint (`{"meta", "state_dict"}`, as
                      its model zoo ships); CFG (required) is the segjax config of the same
                      model, e.g. configs/pspnet_r50_d8_city.py.
  torchvision_resnet  PATH is torchvision's ImageNet `resnet50-*.pth` (ResNet V1b);
  mmcv_resnet         or open-mmlab's `resnet50_v1c-*.pth` (V1c): an encoder-only
                      checkpoint for `--config.init_from` (CFG required; its backbone must
                      match).
  hf_backbone         PATH is an HF ImageNet backbone directory (Swin, ConvNeXt, PVT, PVTv2,
                      PoolFormer, ViT): encoder only; CFG required (see hf_backbone.py).
  hf_upernet          PATH is an HF UperNetForSemanticSegmentation directory (Swin or ConvNeXt
                      backbone): the model from its config.json, the rest from CFG (default
                      configs/upernet_<swin|convnext>_<t|s|b>_ade.py; see hf_upernet.py).
  hrformer_official   PATH is an official HRFormer checkpoint (github.com/HRNet/HRFormer:
                      ImageNet `hrt_small.pth` / `hrt_base.pth`, or a segmentation one): its
                      backbone, encoder only; CFG required (see hrformer.py).
  big_vision_vit      PATH is a big_vision / AugReg ViT `.npz` (e.g. gs://vit_models/augreg/
                      L_16-i21k-*.npz): the ViT backbone, encoder only; CFG required (see
                      big_vision.py).
  hf_maskformer       PATH is an HF MaskFormerForInstanceSegmentation directory (ResNet or
                      Swin backbone): the whole model (see hf_maskformer.py).
  torchvision_vgg     PATH is torchvision's ImageNet `vgg16-*.pth` or `vgg16_bn-*.pth`: the
                      13 convs (+ BN) into `backbone/conv1_1..conv5_3`, classifier.0 / .3
                      into the model's fc6 / fc7 where it has them; CFG required (see
                      torchvision_vgg.py).

DIR becomes a normal segjax checkpoint: `--config.init_from=DIR` loads it (an encoder-only DIR
leaves the heads fresh) and `python -m segjax.main --mode=evaluate --workdir=DIR` evaluates a
full one directly. Every tensor must land on a parameter of the same shape and, for full
models, every parameter must be covered; otherwise the mismatch is named and nothing is
written.
"""
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from segjax import checkpoint as ckpt_lib
from segjax import models
from segjax.convert import hf_backbone, hf_segformer, mmseg, torch_layout
from segjax.convert import big_vision
from segjax.convert import hf_upernet
from segjax.convert import hrformer
from segjax.convert import hf_maskformer
from segjax.convert import torchvision_vgg
from segjax.errors import CheckpointError, ConfigError, SegjaxError
from segjax.tools.config_file import REPO, load_config_file


FLAGS = flags.FLAGS
flags.DEFINE_string("format", "hf_segformer", "Source format (see the module docstring).")
flags.DEFINE_string("input", None, "HF model directory or .pth file.")
flags.DEFINE_string("output", None, "Output checkpoint directory (must not hold one yet).")
flags.DEFINE_string("config", None, "segjax config file of the converted model.")

_VARIANTS = {(32, 64, 160, 256): {(2, 2, 2, 2): "b0"},
             (64, 128, 320, 512): {(2, 2, 2, 2): "b1", (3, 4, 6, 3): "b2", (3, 4, 18, 3): "b3",
                                   (3, 8, 27, 3): "b4", (3, 6, 40, 3): "b5"}}


def _hf_segformer(input_dir: str, config_path):
  """(config, flat converted tensors, whole model?) of an HF SegFormer directory."""
  hf_config, state_dict = torch_layout.load_hf_directory(input_dir)
  overrides = hf_segformer.model_overrides(hf_config)
  bb = overrides["backbone"]
  variant = _VARIANTS.get(bb["hidden_sizes"], {}).get(bb["depths"], "b1")
  config_path = config_path or os.path.join(REPO, "configs", f"segformer_{variant}_city.py")
  config = load_config_file(config_path)
  config.model.backbone = bb
  config.model.decode_head.channels = overrides["decode_head_channels"]
  flat = hf_segformer.convert_state_dict(state_dict)
  whole = any(k.startswith("params/decode_head/") for k in flat)
  if whole:
    config.data.num_classes = int(hf_config.get("num_labels", len(hf_config.get("id2label", {}))))
  return config, flat, whole


def _needs_config(fmt: str, config):
  if config is None:
    raise ConfigError(f"--format={fmt} needs --config: the segjax config of the model")
  return load_config_file(config) if isinstance(config, str) else config


def _mmseg(input_path: str, config):
  config = _needs_config("mmseg", config)
  flat = mmseg.convert_mmseg(torch_layout.load_pth(input_path, "state_dict"), input_path)
  return config, flat, True


def _imagenet_resnet(input_path: str, config):
  config = _needs_config("torchvision_resnet/mmcv_resnet", config)
  flat = mmseg.convert_imagenet_resnet(torch_layout.load_pth(input_path, "state_dict"),
                                       input_path)
  return config, flat, False


# --format -> reader(input_path, config file/ConfigDict/None) -> (config, flat tensors, whole
# model?). One entry per source format; each reader lives with its format's module.
READERS = {
    "hf_segformer": _hf_segformer,
    "mmseg": _mmseg,
    "torchvision_resnet": _imagenet_resnet,
    "mmcv_resnet": _imagenet_resnet,
    "hf_backbone": hf_backbone.read,
    "big_vision_vit": big_vision.read,
    "hf_upernet": hf_upernet.read,
    "hrformer_official": hrformer.read,
    "hf_maskformer": hf_maskformer.read,
    "torchvision_vgg": torchvision_vgg.read,
}


def convert(input_path: str, output_dir: str, config=None, fmt: str = "hf_segformer"):
  """Converts and saves; returns (config, flat converted params).

  `config` is a config file path or a ConfigDict (the model the tensors must fill)."""
  if fmt not in READERS:
    raise ConfigError(f"--format must be one of {sorted(READERS)}, got {fmt!r}")
  config, flat, whole = READERS[fmt](input_path, config)
  config = ml_collections.ConfigDict(config.to_dict())
  model = models.build_model(config)
  h, w = config.data.crop_size
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, h, w, 3), np.float32)))
  target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
  tree = torch_layout.nest(flat)
  tree.setdefault("batch_stats", {})
  ckpt_lib.check_compatible(tree, target, input_path, allow_missing=not whole)
  if not whole:
    missing_backbone = [k for k in ckpt_lib.flatten(target)
                        if k.startswith(("params/backbone/", "batch_stats/backbone/"))
                        and k not in flat]
    if missing_backbone:
      raise CheckpointError(f"{input_path}: encoder weights incomplete, {len(missing_backbone)} "
                            f"missing, first '{missing_backbone[0]}'")
  checkpointer = ckpt_lib.Checkpointer(output_dir, async_save=False)
  if checkpointer.latest_step() is not None or checkpointer.best.latest_step() is not None:
    raise CheckpointError(f"{output_dir} already holds a checkpoint; choose an empty --output")
  checkpointer.save(0, tree, config)
  checkpointer.wait()
  checkpointer.close()
  with open(os.path.join(output_dir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  n = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.startswith("params/"))
  logging.info("converted %d tensors (%s parameters, %s) from %s to %s", len(flat), f"{n:,}",
               "full model" if whole else "encoder only", input_path, output_dir)
  return config, flat


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    print("error: --input and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    convert(FLAGS.input, FLAGS.output, FLAGS.config, FLAGS.format)
  except SegjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
