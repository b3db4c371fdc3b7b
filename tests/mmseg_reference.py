"""mmsegmentation 1.2.2 on CPU as the reference of segjax's CNN models (tests only).

mmcv-lite ships no compiled ops, so `mmcv._ext` is replaced by a stub before mmseg is
imported; every model used here runs without them (PSANet's PSAMask excepted: its test
compares against a numpy transcription of the op). Models are built from the configs that
ship inside the package, with SyncBN -> BN, pretrained init removed and the widths shrunk
the same way on both sides (`shrink`), so a test checks the real recipe's structure
(strides, dilations, pooling scales, cascades) at a size CI can afford.
"""
import copy
import os
import types
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

from segjax.tools import references

# Channel widths of the full-size configs -> tiny ones (the same map on both sides).
WIDTHS = {2048: 64, 1024: 32, 512: 16, 256: 8, 128: 8, 48: 8, 64: 8}
# mmseg config keys holding channel widths (backbone, neck, heads).
WIDTH_KEYS = ("in_channels", "channels", "out_channels", "c1_in_channels", "c1_channels",
              "key_channels", "value_channels", "project_channels", "ocr_channels",
              "query_channels")

_MMSEG = None


def import_mmseg():
  """mmseg with its registries populated (once per test session). A failed import fails
  the test under CI=true (the reference must run there) and skips it elsewhere."""
  global _MMSEG
  if _MMSEG is not None:
    return _MMSEG
  try:
    references.stub_mmcv_ext()
    import mmseg  # noqa: F401
    import torch  # noqa: F401
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
  except Exception as e:  # noqa: BLE001  (any import failure means: no reference)
    message = f"mmsegmentation 1.2.2 reference unavailable: {type(e).__name__}: {e}"
    if os.environ.get("CI") == "true":
      pytest.fail(message)
    pytest.skip(message)
  _MMSEG = types.SimpleNamespace(Config=Config, MODELS=MODELS,
                                 configs=os.path.join(os.path.dirname(mmseg.__file__), ".mim",
                                                      "configs"))
  return _MMSEG


def _walk(node, fn):
  """Applies fn(dict) to every dict in a nested config (dicts and lists)."""
  if isinstance(node, dict):
    fn(node)
    for v in node.values():
      _walk(v, fn)
  elif isinstance(node, (list, tuple)):
    for v in node:
      _walk(v, fn)


def shrink_widths(node):
  """Replaces every width in WIDTH_KEYS by its tiny counterpart (in place)."""
  def fn(d):
    for k in WIDTH_KEYS:
      if k in d:
        v = d[k]
        d[k] = [WIDTHS.get(x, x) for x in v] if isinstance(v, (list, tuple)) else WIDTHS.get(v, v)
  _walk(node, fn)


def shrink_resnet(mm_backbone: Dict, jax_backbone: Dict) -> None:
  """ResNet-50/101 -> ResNet-18 with stem 16 and base 8 (stage widths 8/16/32/64, i.e. the
  tiny images of 256/512/1024/2048) on both sides."""
  mm_backbone.update(depth=18, stem_channels=16, base_channels=8)
  jax_backbone.update(name="resnet", depth=18, deep_stem=mm_backbone["type"] == "ResNetV1c",
                      stem_channels=16, base_channels=8)


def shrink_resnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """ResNet-based models: ResNet-18 at 1/8 width and every head width shrunk alike."""
  shrink_resnet(mm_model["backbone"], jax_model["backbone"])
  shrink_widths(mm_model)
  shrink_widths(jax_model)


# HRNetV2-W18 widths -> tiny ones: branches 18/36/72/144 -> 6/12/24/48, the stage-1
# bottleneck 64 -> 16, their concatenation 270 -> 90, the OCR head's 512/256 -> 32/16.
HRNET_WIDTHS = {64: 16, 18: 6, 36: 12, 72: 24, 144: 48, 270: 90, 512: 32, 256: 16}


def shrink_hrnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """HRNetV2-W18 models (OCRNet, FCN-HR): one block per branch at a third of the width
  (modules per stage as in W18; the stem stays 64 wide, fixed in mmseg), head widths alike.
  The segjax side gets the same `extra` through the generic `hrnet` backbone."""
  def fn(d):
    for k in ("num_channels", "in_channels", "channels", "ocr_channels"):
      if k in d:
        v = d[k]
        d[k] = ([HRNET_WIDTHS.get(x, x) for x in v] if isinstance(v, (list, tuple))
                else HRNET_WIDTHS.get(v, v))
    if "num_blocks" in d:
      d["num_blocks"] = (1,) * len(d["num_blocks"])
  _walk(mm_model, fn)
  _walk(jax_model, fn)
  jax_model["backbone"] = {"name": "hrnet",
                           "extra": copy.deepcopy(mm_model["backbone"]["extra"])}


def shrink_mobilenet_model(mm_model: Dict, jax_model: Dict) -> None:
  """MobileNetV2 models: widen_factor 0.5 (layers 8/16/16/32/48/80/160 wide; at 0.25 the
  first block would gain an identity shortcut it lacks at full width), head widths as
  WIDTHS, the mmseg heads' input widths following the backbone's."""
  shrink_widths(mm_model)
  shrink_widths(jax_model)
  mm_model["backbone"]["widen_factor"] = jax_model["backbone"]["widen_factor"] = 0.5
  mm_model["decode_head"].update(in_channels=160, c1_in_channels=16)  # layers 7 and 2
  mm_model["auxiliary_head"]["in_channels"] = 48  # layer 5


def mmseg_param_count(config_file: str) -> int:
  """Trainable parameters of the full-size mmseg segmentor of `config_file` (BN buffers
  excluded, and STDCHead's constant `fusion_kernel`, an nn.Parameter with requires_grad=False
  that segjax keeps in its loss), built on torch's "meta" device: shapes only, no memory or
  initialisation time."""
  mm = import_mmseg()
  import torch
  with torch.device("meta"):
    model = mm.MODELS.build(references.mmseg_model_config(config_file))
  return sum(p.numel() for p in model.parameters() if p.requires_grad)


def mmseg_model(config_file: str, shrink: Callable[[Dict], None], seed: int = 0):
  """The mmseg segmentor of `config_file` (relative to mmseg's configs), eval mode,
  random weights and randomised BN running statistics, after `shrink(model_cfg)`."""
  mm = import_mmseg()
  import torch
  model_cfg = references.mmseg_model_config(config_file)
  shrink(model_cfg)
  torch.manual_seed(seed)
  model = mm.MODELS.build(model_cfg)
  model.eval()
  rng = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=rng) - 0.5)
        module.running_var.copy_(torch.rand(module.running_var.shape, generator=rng) + 0.5)
        module.weight.copy_(torch.rand(module.weight.shape, generator=rng) + 0.5)
        module.bias.copy_(torch.rand(module.bias.shape, generator=rng) - 0.5)
      if isinstance(module, torch.nn.PReLU):  # CGNet's slopes, all 0.25 when built
        module.weight.copy_(torch.rand(module.weight.shape, generator=rng))
    # Weights that start at zero (the mmcv Scale `gamma` of DANet and CCNet, ANN's
    # out_project) would hide their attention branch from the comparison: randomise them too.
    for name, param in model.named_parameters():
      if not name.endswith("bias") and not torch.any(param):
        param.copy_(torch.rand(param.shape, generator=rng) + 0.5)
  return model, model_cfg


def encode_decode(model, images: np.ndarray) -> np.ndarray:
  """mmseg's `encode_decode` (whole-image logits at the input size) of normalised NHWC
  float32 images, as NHWC numpy."""
  import torch
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  metas = [dict(img_shape=images.shape[1:3], ori_shape=images.shape[1:3],
                pad_shape=images.shape[1:3])] * images.shape[0]
  with torch.no_grad():
    out = model.encode_decode(x, metas)
  return out.numpy().transpose(0, 2, 3, 1)


def save_checkpoint(model, path: str) -> None:
  """The model's state dict as mmseg's model zoo ships it: {"meta", "state_dict"}."""
  import torch
  torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": model.state_dict()}, path)


# ViT models (SETR, Segmenter): ViT widths -> 32, the heads' widths alike (SETR-MLA's concat
# of 4 x 128 -> 4 x 8 = 32, num_convs=0 heads keep in_channels == channels).
VIT_WIDTHS = {1024: 32, 768: 32, 384: 32, 192: 32, 512: 32, 256: 16, 128: 8}


def shrink_vit_model(mm_model: Dict, jax_model: Dict) -> None:
  """SETR / Segmenter models: a 4-layer ViT/16 of width 32 with 2 heads whose position
  embedding is learnt at 64x64 (a 4x4 grid), so an odd input (67x93: padded to 80x96, a 5x6
  grid) exercises mmseg's corner padding and position-embedding interpolation; out_indices
  (SETR's four layers) become (0, 1, 2, 3), -1 stays; head widths via VIT_WIDTHS, 2 heads
  in Segmenter's decoder."""
  for model in (mm_model, jax_model):
    bb = model["backbone"]
    bb.update(img_size=(64, 64), embed_dims=32, num_layers=4, num_heads=2)
    if isinstance(bb.get("out_indices"), (list, tuple)):
      bb["out_indices"] = tuple(range(len(bb["out_indices"])))

  def fn(d):
    for k in ("in_channels", "channels", "out_channels", "embed_dims", "mla_channels"):
      if k in d:
        v = d[k]
        d[k] = ([VIT_WIDTHS.get(x, x) for x in v] if isinstance(v, (list, tuple))
                else VIT_WIDTHS.get(v, v))
    if "num_heads" in d:
      d["num_heads"] = 2
  _walk(mm_model, fn)
  _walk(jax_model, fn)


_mmseg_param_count_on_meta = mmseg_param_count


def mmseg_param_count(config_file: str) -> int:  # noqa: F811  (wraps the one above)
  """mmseg_param_count with torch.linspace kept on the CPU: mmseg's ViT and Segmenter head
  turn their stochastic-depth rates into floats (`.item()`) while being built, which a
  "meta" tensor cannot do. Every parameter is still created on "meta"."""
  import torch
  linspace = torch.linspace

  def cpu_linspace(*args, **kwargs):
    return linspace(*args, **{**kwargs, "device": "cpu"})
  torch.linspace = cpu_linspace
  try:
    return _mmseg_param_count_on_meta(config_file)
  finally:
    torch.linspace = linspace


def shrink_swin_model(mm_model: Dict, jax_model: Dict) -> None:
  """Swin UperNet models: Swin with embed 16, depths 2/2/2/2 (every stage has a shifted
  block), heads 1/2/2/4, the config's window; UPerHead 512 -> 16 and FCN 256 -> 8 channels,
  their input widths following the stages (16/32/64/128). The segjax side gets the same
  backbone through the generic `swin`."""
  bb = mm_model["backbone"]
  bb.update(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
  jax_model["backbone"] = {"name": "swin", "embed_dim": 16, "depths": (2, 2, 2, 2),
                           "num_heads": (1, 2, 2, 4), "window_size": bb["window_size"]}
  mm_model["decode_head"].update(in_channels=[16, 32, 64, 128], channels=16)
  mm_model["auxiliary_head"].update(in_channels=64, channels=8)
  jax_model["decode_head"]["channels"] = 16
  jax_model["auxiliary_head"][0]["channels"] = 8


def shrink_fast_scnn_model(mm_model: Dict, jax_model: Dict) -> None:
  """Fast-SCNN at half width: downsampling 16/24/32, bottlenecks 32/48/64 (PPM 16), global
  and fusion outputs 64; the decode head 64 channels, the auxiliary heads 16 (their inputs
  the 1/32 map, 64, and the 1/8 one, 32)."""
  mm_model["backbone"].update(
      downsample_dw_channels=(16, 24), global_in_channels=32, global_block_channels=(32, 48, 64),
      global_out_channels=64, higher_in_channels=32, lower_in_channels=64,
      fusion_out_channels=64)
  jax_model["backbone"].update(
      downsample_dw_channels=(16, 24), global_in_channels=32, global_block_channels=(32, 48, 64),
      global_out_channels=64, fusion_out_channels=64)
  mm_model["decode_head"].update(in_channels=64, channels=64)
  jax_model["decode_head"]["channels"] = 64
  for mm_aux, jax_aux, in_channels in zip(mm_model["auxiliary_head"],
                                          jax_model["auxiliary_head"], (64, 32)):
    mm_aux.update(in_channels=in_channels, channels=16)
    jax_aux["channels"] = 16


def shrink_icnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """ICNet on ResNet-18 with stem 16 and base 8 (layers 2 and 4: 16 and 64 channels), light
  branch 8, PSP 16, branch outputs 8/16/16, ICNeck and heads 16."""
  mm_bb, jax_bb = mm_model["backbone"], jax_model["backbone"]
  shrink_resnet(mm_bb["backbone_cfg"], jax_bb["backbone_cfg"])
  mm_bb.update(layer_channels=(16, 64))
  for bb in (mm_bb, jax_bb):
    bb.update(light_branch_middle_channels=8, psp_out_channels=16, out_channels=(8, 16, 16))
  mm_model["neck"].update(in_channels=(8, 16, 16), out_channels=16)
  jax_model["neck"]["out_channels"] = 16
  for head in [mm_model["decode_head"], *mm_model["auxiliary_head"]]:
    head.update(in_channels=16, channels=16)
  for head in [jax_model["decode_head"], *jax_model["auxiliary_head"]]:
    head["channels"] = 16


def shrink_cgnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """CGNet at half width and depth 2 + 3 blocks (each stage keeps its downsampling block and
  residual ones): channels 16/32/64, the classifier on the 128-channel map."""
  for model in (mm_model, jax_model):
    model["backbone"].update(num_channels=(16, 32, 64), num_blocks=(2, 3))
  mm_model["decode_head"].update(in_channels=128, channels=128)
  jax_model["decode_head"]["channels"] = 128


def shrink_erfnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """ERFNet + FCN: the backbone at half width or less (downsamplers 16/64/128 -> 8/16/32,
  decoder 64/16 -> 16/8; all blocks and dilations kept), the FCN head's 128 channels -> 16."""
  widths = {"enc_downsample_channels": (8, 16, 32), "enc_non_bottleneck_channels": (16, 32),
            "dec_upsample_channels": (16, 8), "dec_non_bottleneck_channels": (16, 8)}
  mm_model["backbone"].update(widths)
  jax_model["backbone"].update(widths)
  mm_model["decode_head"].update(in_channels=8, channels=16)
  jax_model["decode_head"]["channels"] = 16


def shrink_bisenetv1_model(mm_model: Dict, jax_model: Dict) -> None:
  """BiSeNet V1: its ResNet-18 (V1b) with stem 16 and base 8 (stages 8/16/32/64), the context
  path 16 wide (context_channels 16/32/64), the spatial path 8/8/8/16 and the FFM 32 (so the
  FFM's input, 16 + 16, is context_channels[1] as mmseg requires); decode head 32 channels,
  auxiliary heads 8."""
  widths = {"context_channels": (16, 32, 64), "spatial_channels": (8, 8, 8, 16),
            "out_channels": 32}
  mm_model["backbone"]["backbone_cfg"].update(stem_channels=16, base_channels=8)
  mm_model["backbone"].update(widths)
  jax_model["backbone"].update(widths, backbone_cfg={
      "name": "resnet", "depth": 18, "deep_stem": False, "stem_channels": 16,
      "base_channels": 8})
  mm_model["decode_head"].update(in_channels=32, channels=32)
  jax_model["decode_head"]["channels"] = 32
  for mm_head, jax_head in zip(mm_model["auxiliary_head"], jax_model["auxiliary_head"]):
    mm_head.update(in_channels=16, channels=8)
    jax_head["channels"] = 8


def shrink_bisenetv2_model(mm_model: Dict, jax_model: Dict) -> None:
  """BiSeNet V2: detail branch 8/8/16, semantic branch 4/8/12/16 (expansion 6 kept, so the
  grouped expansion convs stay grouped), aggregation 16; decode head 32 channels, the four
  auxiliary heads 4/8/16/32 on the 4/8/12/16-channel stage maps."""
  widths = {"detail_channels": (8, 8, 16), "semantic_channels": (4, 8, 12, 16),
            "bga_channels": 16}
  mm_model["backbone"].update(widths)
  jax_model["backbone"].update(widths)
  mm_model["decode_head"].update(in_channels=16, channels=32)
  jax_model["decode_head"]["channels"] = 32
  for mm_head, jax_head, cin, channels in zip(mm_model["auxiliary_head"],
                                              jax_model["auxiliary_head"], (4, 8, 12, 16),
                                              (4, 8, 16, 32)):
    mm_head.update(in_channels=cin, channels=channels)
    jax_head["channels"] = channels


def shrink_stdc_model(mm_model: Dict, jax_model: Dict) -> None:
  """STDC: STDCNet channels 8/16/32/64/128 (STDC modules of 4 convs, so every conv keeps at
  least 4 channels), context path 16 wide, FFM 48 -> 32 (its attention 8); decode head 32
  channels, auxiliary FCN heads 8, the detail head 8."""
  channels = (8, 16, 32, 64, 128)
  mm_bb, jax_bb = mm_model["backbone"], jax_model["backbone"]
  mm_bb["backbone_cfg"]["channels"] = jax_bb["backbone_cfg"]["channels"] = channels
  mm_bb.update(last_in_channels=(128, 64), out_channels=16,
               ffm_cfg=dict(in_channels=32 + 16, out_channels=32, scale_factor=4))
  jax_bb.update(out_channels=16, ffm_channels=32)
  mm_model["decode_head"].update(in_channels=32, channels=32)
  jax_model["decode_head"]["channels"] = 32
  for mm_head, jax_head, cin in zip(mm_model["auxiliary_head"], jax_model["auxiliary_head"],
                                    (16, 16, 32)):
    mm_head.update(in_channels=cin, channels=8)
    jax_head["channels"] = 8


def shrink_ddrnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """DDRNet at a quarter of the slim width: c = 8 (branches 16/32/64/128, the 1/8 output 32
  channels), DAPPM 16, DDRHead 16 (its input width 4c following the backbone)."""
  for model in (mm_model, jax_model):
    model["backbone"].update(channels=8, ppm_channels=16)
    model["decode_head"].update(channels=16)
  mm_model["decode_head"]["in_channels"] = 32


def shrink_pidnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """PIDNet-S at a quarter width: c = 8 (P 16, I 32/64/128, D 8/16/32 channels), PAPPM 12
  (its grouped conv 4 x 12), PIDHead 16 (its input 4c = 32, the D head 8)."""
  for model in (mm_model, jax_model):
    model["backbone"].update(channels=8, ppm_channels=12)
    model["decode_head"].update(channels=16)
  mm_model["decode_head"]["in_channels"] = 32
