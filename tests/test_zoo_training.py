"""Model zoo II end to end: every Transformer / mask-classification recipe trains one step and
evaluates from its own config file, the way `python -m segjax.main --config=configs/X.py`
runs it (train.train_and_evaluate), with the model shrunk to test widths and the synthetic
data of configs/test.py; a converted HF checkpoint evaluates with `--mode=evaluate`.

The parity of each model with its reference lives in the family's test file
(test_vit.py, test_swin_convnext.py, test_pvt_poolformer.py, test_hrformer.py,
test_maskformer.py, test_mmseg_parity.py); here the recipes' optimizers, losses, auxiliary
heads, evaluation modes and checkpoints run together.
"""
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from tests.conftest import REPO, check_one_step_run, load_config, one_step_run, require

# Each family's smallest backbone: the config's own keys that are not widths or depths (image
# size of the position embedding, out_indices, cls token, final norm, drop path) are kept.
# Depthwise convs use XLA's grouped conv: the default shifted multiply-adds (faster to run on
# CPU, tested against it in test_models.py) take several times longer to compile.
TINY_BACKBONES = {
    "vit": {"name": "vit", "img_size": (32, 32), "embed_dims": 32, "num_layers": 4,
            "num_heads": 2},
    "swin": {"name": "swin", "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4)},
    "convnext": {"name": "convnext", "hidden_sizes": (8, 16, 24, 32), "depths": (1, 1, 1, 1),
                 "dwconv_impl": "xla"},
    "pvt": {"name": "pvt", "hidden_sizes": (8, 16, 24, 32), "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 2, 2), "image_size": 32},
    "pvt_v2": {"name": "pvt_v2", "hidden_sizes": (8, 16, 24, 32), "depths": (1, 1, 1, 1),
               "num_heads": (1, 1, 2, 2), "dwconv_impl": "xla"},
    "poolformer": {"name": "poolformer", "hidden_sizes": (8, 16, 24, 32),
                   "depths": (1, 1, 1, 1)},
    "hrformer": {"name": "hrformer", "extra": None, "dwconv_impl": "xla"},  # extra: below
    "resnet": {"name": "resnet", "depth": 18, "deep_stem": False, "stem_channels": 8,
               "base_channels": 8},
    "vgg": {"name": "vgg", "widths": (8, 8, 8, 16, 16)},
}
# Head / decoder widths and sizes -> test values (the keys every head family uses).
TINY_HEAD_KEYS = {"channels": 16, "ocr_channels": 8, "mla_channels": 8, "out_channels": 16,
                  "embed_dims": 16, "num_heads": 2, "hidden_size": 32, "fpn_feature_size": 32,
                  "mask_feature_size": 16, "decoder_ffn_dim": 32, "decoder_layers": 2,
                  "decoder_attention_heads": 2, "num_queries": 5, "min_kept": 256}

# ocr_hrformer_s_city and maskformer_{r50,swin_t}_ade run the same check from their family's
# test file (test_hrformer.py, test_maskformer.py), which spreads the work over the suite's
# two xdist workers (each takes whole files).
CONFIGS = ["setr_naive_vitl_city", "setr_pup_vitl_city", "setr_mla_vitl_city",
           "segmenter_vitt_linear_ade", "segmenter_vits_mask_ade", "upernet_swin_t_ade",
           "upernet_convnext_t_ade", "fpn_pvt_t_ade", "fpn_pvtv2_b0_ade",
           "fpn_poolformer_s12_ade"]


def _family(backbone_name: str) -> str:
  for family in ("pvt_v2", "pvt", "vit", "swin", "convnext", "poolformer", "hrformer",
                 "resnet", "vgg"):
    if backbone_name.startswith(family):
      return family
  raise KeyError(backbone_name)


def _shrink(value):
  """TINY_HEAD_KEYS applied through nested dicts / lists of a model config."""
  if isinstance(value, dict):
    return {k: (TINY_HEAD_KEYS[k] if k in TINY_HEAD_KEYS and isinstance(v, int)
                else _shrink(v)) for k, v in value.items()
            if k != "class_weight"}  # Cityscapes' 19 weights; the test data has 5 classes
  if isinstance(value, (list, tuple)):
    return type(value)(_shrink(v) for v in value)
  return value


def tiny_run_config(name: str) -> ml_collections.ConfigDict:
  """configs/<name>.py with a test-sized model and configs/test.py's data, one train step,
  evaluation and a checkpoint at step 1. The recipe's optimizer (SGD / AdamW, head lr
  multipliers, layer-wise decay, frozen parameters), losses and evaluation mode stay."""
  from segjax.models.backbones import hrformer
  config = load_config(name)
  model = config.model.to_dict()
  backbone = model["backbone"]
  family = _family(backbone["name"])
  tiny = dict(TINY_BACKBONES[family])
  if family == "hrformer":
    tiny["extra"] = hrformer.hrformer_extra((8, 16, 24, 32), (1, 2, 3, 4), num_modules=(1, 1, 1),
                                            num_blocks=1, stage1_blocks=1, stage1_channels=8)
  if family == "vit" and isinstance(backbone.get("out_indices"), (list, tuple)):
    tiny["out_indices"] = (0, 1, 2, 3)  # SETR's four layers of the 4-layer ViT
  keep = ("out_indices", "with_cls_token", "final_norm", "interpolate_mode", "layer_norm_eps",
          "drop_path_rate", "norm_eval", "layer_scale_init_value",
          "pools", "dilations", "ceil_mode", "norm")  # VGG's stage layout (DeepLab, dilation)
  model = _shrink({k: v for k, v in model.items() if k != "backbone"})
  model["backbone"] = {**{k: backbone[k] for k in keep if k in backbone}, **tiny}
  config = one_step_run(config, model)
  if config.optim.layer_decay_rate != 1.0:  # ConvNeXt: stage-wise over the tiny depths
    config.optim.layer_decay_num_layers = 6
  return config


def check_recipe_trains_one_step_and_evaluates(name: str, workdir: pathlib.Path) -> None:
  """configs/<name>.py shrunk by tiny_run_config: one step, evaluation, checkpoint."""
  check_one_step_run(tiny_run_config(name), workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_recipe_trains_one_step_and_evaluates(name, tmp_path):
  check_recipe_trains_one_step_and_evaluates(name, tmp_path)


def test_converted_hf_upernet_evaluates_like_hf_from_the_command_line(tmp_path):
  """segjax.convert --format=hf_upernet, then `segjax.main --mode=evaluate` on the converted
  directory (its saved config; the synthetic data by overrides), as the README's commands:
  the mIoU equals the one of HF's own predictions on the same images."""
  torch = require("torch")
  transformers = require("transformers")
  from segjax.data.synthetic import Synthetic
  backbone = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                                     window_size=7,
                                     out_features=["stage1", "stage2", "stage3", "stage4"])
  torch.manual_seed(0)
  hf = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
      backbone_config=backbone, hidden_size=16, auxiliary_channels=8, num_labels=5)).eval()
  hf.save_pretrained(tmp_path / "hf")
  ckpt = tmp_path / "ckpt"
  convert = subprocess.run(
      [sys.executable, "-m", "segjax.convert", "--format=hf_upernet",
       f"--input={tmp_path / 'hf'}", f"--output={ckpt}"], capture_output=True, text=True,
      cwd=REPO)
  assert convert.returncode == 0, convert.stderr[-3000:]
  out = subprocess.run(
      [sys.executable, "-m", "segjax.main", f"--config=configs/saved.py:{ckpt}",
       f"--workdir={ckpt}", "--mode=evaluate", "--config.data.name=synthetic",
       "--config.data.synthetic_eval_size=4", "--config.data.synthetic_image_size=(48, 48)",
       "--config.data.base_size=(48, 48)", "--config.eval.mode=whole",
       "--config.eval.batch_size=4"], capture_output=True, text=True, cwd=REPO,
      env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert out.returncode == 0, out.stderr[-3000:]
  config = json.load(open(ckpt / "config.json"))
  metrics = json.load(open(ckpt / "eval_step0.json"))["metrics"]
  assert metrics["num_images"] == 4

  source = Synthetic("val", 4, (48, 48))
  mean, std = np.float32(config["data"]["mean"]), np.float32(config["data"]["std"])
  confusion = np.zeros((5, 5), np.int64)
  for i in range(4):
    image, label = source.load(i)
    x = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
    with torch.no_grad():
      pred = hf(pixel_values=torch.from_numpy(x)).logits[0].argmax(0).numpy()
    keep = label != 255
    np.add.at(confusion, (label[keep], pred[keep]), 1)
  union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
  present = union > 0
  miou = float(np.mean(np.diag(confusion)[present] / union[present]))
  assert metrics["mIoU"] == pytest.approx(miou, abs=1e-6)
