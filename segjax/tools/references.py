"""The same work timed in reference implementations, for segjax.tools.benchmark --compare.

  hf:    HF transformers' PyTorch SegFormer (MiT encoders with the SegFormer head): an AdamW
         train step (forward with labels, loss, backward, step) and inference under
         torch.inference_mode (logits resized to the input, argmax).
  mmseg: mmsegmentation 1.2.2's EncoderDecoder with the same encoder and head: for a
         SegFormer config, slide inference (its `slide_inference`); for the model of any
         config shipped inside mmseg (--mmseg_config, e.g. PSPNet or DeepLabv3+ R50-D8), its
         train step (loss of every head, backward, the config's SGD or AdamW step) and
         whole-image inference (`encode_decode`, argmax).
  loop:  segjax's own jitted forward, called window by window from a Python loop (what
         slide inference costs without batching the windows).

Every reference gets the same random weights' shapes (not values: times do not depend on
them), the same input size and batch, and torch the machine's cores. The references live in
the test extra (`pip install -e '.[test]'`); a missing one is one clear error.
"""
import sys
import time
import types
from typing import Callable, Dict

import numpy as np

from segjax.errors import ConfigError
from segjax.models.backbones import mit


def _median_time(fn: Callable[[], object], steps: int, warmup: int) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _segformer_variant(config) -> dict:
  """The MiT variant and head width of a segjax SegFormer config, or a ConfigError."""
  backbone = dict(config.model.get("backbone", {}))
  name = backbone.get("name", "")
  head = dict(config.model.get("decode_head", {}))
  if not name.startswith("mit_") or name[4:] not in mit.MIT_VARIANTS or (
      head.get("name") != "segformer_head"):
    raise ConfigError(f"--compare=hf, and --compare=mmseg without --mmseg_config, time "
                      f"SegFormer (mit_b0..b5 + segformer_head); this config has backbone "
                      f"{name!r} and head {head.get('name')!r} (for a model mmseg ships, name "
                      f"its config with --mmseg_config)")
  return {**mit.MIT_VARIANTS[name[4:]], "channels": head.get("channels", 256)}


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConfigError(f"--compare needs torch (pip install -e '.[test]'): {e}") from e
  return torch


def hf_segformer(config, batch_size: int, steps: int, warmup: int) -> Dict[str, float]:
  """Train and inference images/s of HF's SegformerForSemanticSegmentation."""
  torch = _torch()
  import transformers  # pylint: disable=import-outside-toplevel
  v = _segformer_variant(config)
  hf_config = transformers.SegformerConfig(
      hidden_sizes=list(v["hidden_sizes"]), depths=list(v["depths"]),
      num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=v["channels"],
      num_labels=config.data.num_classes, semantic_loss_ignore_index=255)
  torch.manual_seed(0)
  model = transformers.SegformerForSemanticSegmentation(hf_config)
  h, w = config.data.crop_size
  rng = np.random.RandomState(0)
  x = torch.from_numpy(rng.randn(batch_size, 3, h, w).astype(np.float32))
  y = torch.from_numpy(rng.randint(0, config.data.num_classes, (batch_size, h, w)))
  opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)

  def train_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    model(pixel_values=x, labels=y).loss.backward()
    opt.step()

  def infer():
    model.eval()
    with torch.inference_mode():
      logits = model(pixel_values=x).logits
      return torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear",
                                             align_corners=False).argmax(1)

  train_s = _median_time(train_step, steps, warmup)
  eval_s = _median_time(infer, steps, warmup)
  return {"train_images_per_s": batch_size / train_s, "eval_images_per_s": batch_size / eval_s,
          "torch_threads": torch.get_num_threads()}


def stub_mmcv_ext():
  """Registers a stand-in for mmcv-lite's missing compiled ops (`mmcv._ext`): any use of one
  raises NotImplementedError (SegFormer and most mmseg models need none). Also used by the
  tests' mmseg reference."""
  if "mmcv._ext" in sys.modules:
    return
  ext = types.ModuleType("mmcv._ext")

  def getattr_(name):
    if name.startswith("__"):
      raise AttributeError(name)

    def missing(*_, **__):
      raise NotImplementedError(f"mmcv._ext.{name} is compiled; mmcv-lite lacks it")
    return missing
  ext.__getattr__ = getattr_
  sys.modules["mmcv._ext"] = ext


def _import_mmseg():
  """mmseg 1.2.2 on mmcv-lite, its registries populated."""
  stub_mmcv_ext()
  try:
    import mmseg.models  # pylint: disable=import-outside-toplevel
    from mmseg.utils import register_all_modules  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConfigError(f"--compare=mmseg needs mmsegmentation 1.2.2 (pip install -e "
                      f"'.[test]'): {e}") from e
  register_all_modules()
  return mmseg.models


def mmseg_model_config(config_file: str) -> Dict:
  """The `model` dict of a config shipped inside mmseg 1.2.2 (`mmseg/.mim/configs/
  <config_file>`), as every comparison builds it: SyncBN -> BN (one process), no pretrained
  weights (no downloads) and no data preprocessor (inputs come normalised). Also used by the
  tests' mmseg reference."""
  import copy  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  mmseg_models = _import_mmseg()
  from mmengine.config import Config  # pylint: disable=import-outside-toplevel
  configs = os.path.join(os.path.dirname(os.path.dirname(mmseg_models.__file__)), ".mim",
                         "configs")
  path = os.path.join(configs, config_file)
  if not os.path.isfile(path):
    raise ConfigError(f"mmseg 1.2.2 ships no config {config_file!r} ({path} does not "
                      f"exist; names are relative to {configs}, e.g. "
                      "pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py)")
  model_cfg = copy.deepcopy(Config.fromfile(path).model.to_dict())
  model_cfg.pop("data_preprocessor", None)
  model_cfg.pop("pretrained", None)

  def fix(node):
    if isinstance(node, dict):
      if node.get("type") == "SyncBN":
        node["type"] = "BN"
      if "init_cfg" in node:
        node["init_cfg"] = None
      for v in node.values():
        fix(v)
    elif isinstance(node, (list, tuple)):
      for v in node:
        fix(v)
  fix(model_cfg)
  return model_cfg


def mmseg_model(config, config_file: str, batch_size: int, steps: int, warmup: int,
                train: bool = True) -> Dict[str, float]:
  """Train and whole-image inference images/s of mmseg's model of `config_file` at the
  config's crop size and number of classes (every head's `num_classes` set to it), with the
  segjax config's optimizer (SGD with its momentum, else AdamW) and its parameter count.
  mmseg's train-mode BatchNorm needs batch >= 2 where a head pools to 1x1 (PSPNet)."""
  torch = _torch()
  mmseg_models = _import_mmseg()
  from mmengine.structures import PixelData  # pylint: disable=import-outside-toplevel
  from mmseg.structures import SegDataSample  # pylint: disable=import-outside-toplevel
  model_cfg = mmseg_model_config(config_file)
  num_classes = config.data.num_classes
  for key in ("decode_head", "auxiliary_head"):
    heads = model_cfg.get(key) or []
    for head in heads if isinstance(heads, list) else [heads]:
      head["num_classes"] = num_classes
  torch.manual_seed(0)
  model = mmseg_models.build_segmentor(model_cfg)
  h, w = config.data.crop_size
  rng = np.random.RandomState(0)
  x = torch.from_numpy(rng.randn(batch_size, 3, h, w).astype(np.float32))
  meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))
  samples = []
  for label in rng.randint(0, num_classes, (batch_size, h, w)):
    sample = SegDataSample(metainfo=meta)
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None]).long())
    samples.append(sample)
  if config.optim.get("name", "adamw") == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=config.optim.lr,
                          momentum=config.optim.momentum,
                          weight_decay=config.optim.weight_decay)
  else:
    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr,
                            weight_decay=config.optim.weight_decay)

  def train_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    losses = model.loss(x, samples)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    opt.step()

  def infer():
    model.eval()
    with torch.inference_mode():
      return model.encode_decode(x, [meta] * batch_size).argmax(1)

  out = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "torch_threads": torch.get_num_threads()}
  if train:
    out["train_images_per_s"] = batch_size / _median_time(train_step, steps, warmup)
  out["eval_images_per_s"] = batch_size / _median_time(infer, steps, warmup)
  return out


def mmseg_segformer_slide(config, image_hw, crop, stride, steps: int,
                          warmup: int) -> Dict[str, float]:
  """Seconds per image of mmseg's EncoderDecoder.slide_inference for the config's SegFormer."""
  torch = _torch()
  mmseg_models = _import_mmseg()
  from mmengine.config import ConfigDict  # pylint: disable=import-outside-toplevel
  v = _segformer_variant(config)
  hidden = v["hidden_sizes"]
  cfg = dict(
      type="EncoderDecoder",
      data_preprocessor=dict(type="SegDataPreProcessor", size=None),
      backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=hidden[0],
                    num_stages=4, num_layers=list(v["depths"]), num_heads=[1, 2, 5, 8],
                    patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3),
                    mlp_ratio=4, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0,
                    drop_path_rate=0.1),
      decode_head=dict(type="SegformerHead", in_channels=list(hidden), in_index=[0, 1, 2, 3],
                       channels=v["channels"], dropout_ratio=0.1,
                       num_classes=config.data.num_classes, norm_cfg=dict(type="BN"),
                       align_corners=False,
                       loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False)),
      test_cfg=dict(mode="slide", crop_size=tuple(crop), stride=tuple(stride)))
  model = mmseg_models.build_segmentor(cfg).eval()
  model.test_cfg = ConfigDict(cfg["test_cfg"])  # slide_inference reads it by attribute
  h, w = image_hw
  x = torch.from_numpy(np.random.RandomState(0).randn(1, 3, h, w).astype(np.float32))
  meta = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]

  def infer():
    with torch.inference_mode():
      return model.slide_inference(x, meta).argmax(1)

  return {"slide_s_per_image": _median_time(infer, steps, warmup)}


def segjax_slide(model, variables, num_classes: int, image_hw, crop, stride, steps: int,
                 warmup: int, loop: bool = True) -> Dict[str, float]:
  """Seconds per image of segjax's slide inference (all windows in one batched, jitted
  forward: evaluate.make_logits_fn) and of the same jitted model called once per window
  from a Python loop, the windows' logits pasted on the host."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from segjax import evaluate  # pylint: disable=import-outside-toplevel

  h, w = image_hw
  image = jnp.asarray(np.random.RandomState(0).randn(1, h, w, 3).astype(np.float32))
  eval_cfg = ml_collections.ConfigDict({"mode": "slide", "crop_size": tuple(crop),
                                        "stride": tuple(stride)})
  batched_fn = jax.jit(lambda v, x: jnp.argmax(
      evaluate.make_logits_fn(model, eval_cfg, num_classes)(v, x), -1))
  window_fn = jax.jit(lambda v, x: evaluate.resize_linear(
      model.apply(v, x, train=False)[0].astype(jnp.float32), x.shape[1:-1]))
  corners = evaluate.slide_windows(h, w, crop, stride)
  wh, ww = min(crop[0], h), min(crop[1], w)

  def looped():
    total = np.zeros((h, w, num_classes), np.float32)
    count = np.zeros((h, w, 1), np.float32)
    for y, x in corners:
      total[y:y + wh, x:x + ww] += np.asarray(window_fn(variables, image[:, y:y + wh,
                                                                          x:x + ww]))[0]
      count[y:y + wh, x:x + ww] += 1
    return (total / count).argmax(-1)

  batched = _median_time(lambda: jax.block_until_ready(batched_fn(variables, image)), steps,
                         warmup)
  out = {"windows": len(corners), "slide_s_per_image": batched}
  if loop:
    out["loop_slide_s_per_image"] = _median_time(looped, steps, warmup)
  return out


def write_cityscapes_frames(root: str, count: int, seed: int = 0) -> float:
  """`count` full-size (1024x2048) training frames in Cityscapes' layout under `root`, with
  labelIds maps; returns their mean PNG size in MB. Images are smooth random fields with
  noise (they compress about as well as real street photos, ~2-4 MB), labels random
  rectangles of the 19 evaluated classes' labelIds over the void id."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from segjax.data import cityscapes  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  rng = np.random.RandomState(seed)
  image_dir = os.path.join(root, "leftImg8bit", "train", "benchcity")
  label_dir = os.path.join(root, "gtFine", "train", "benchcity")
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(label_dir, exist_ok=True)
  ids = np.array(sorted(cityscapes.LABEL_TO_TRAIN))
  sizes = []
  for i in range(count):
    coarse = rng.randint(0, 256, (32, 64, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((2048, 1024), Image.BICUBIC), np.int16)
    image = np.clip(smooth + rng.randint(-8, 9, smooth.shape), 0, 255).astype(np.uint8)
    label = np.zeros((1024, 2048), np.uint8)
    for _ in range(40):
      y, x = rng.randint(0, 1024), rng.randint(0, 2048)
      label[y:y + rng.randint(20, 400), x:x + rng.randint(20, 800)] = rng.choice(ids)
    stem = f"benchcity_{i:06d}_000019"
    path = os.path.join(image_dir, f"{stem}_leftImg8bit.png")
    Image.fromarray(image).save(path)
    Image.fromarray(label).save(os.path.join(label_dir, f"{stem}_gtFine_labelIds.png"))
    sizes.append(os.path.getsize(path) / 2**20)
  return float(np.mean(sizes))


def pipeline_images_per_s(data_cfg, batch_size: int, batches: int, warmup: int) -> float:
  """Images/s the training input pipeline (read, decode, the config's augmentation, batch)
  delivers on this host, from data_cfg's dataset."""
  from segjax import data as data_lib  # pylint: disable=import-outside-toplevel
  from segjax.data import pipeline  # pylint: disable=import-outside-toplevel

  source = data_lib.build_source(data_cfg, data_cfg.get("train_split", "train"))
  it = pipeline.train_batches(source, data_cfg, seed=0, global_batch=batch_size)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch_size * batches / (time.perf_counter() - start)
