"""PSANet: segjax's `psa_mask` and the whole model against mmcv's compiled PSAMask op.

mmcv-lite ships no compiled ops, so the reference is `psamask_forward` below, a loop-for-loop
NumPy transcription of mmcv's psamask_collect_forward / psamask_distribute_forward kernels
(mmcv/ops/csrc/common/cuda/psamask_cuda_kernel.cuh; the CPU version is the same loops). The
model test patches it into mmcv in place of the missing op, then compares logits as
test_mmseg_parity does.
"""
import importlib

import numpy as np
import pytest

from segjax.convert import __main__ as convert_main
from segjax.inference import Segmenter
from segjax.models.heads.psa_head import psa_mask
from tests import mmseg_reference as ref
from tests.conftest import load_config

COLLECT, DISTRIBUTE = 0, 1  # mmcv's psa_type enum
MMSEG_CONFIG = "psanet/psanet_r50-d8_4xb2-80k_cityscapes-512x1024.py"


def psamask_forward(mask: np.ndarray, psa_type: int, h_mask: int, w_mask: int) -> np.ndarray:
  """(N, h_mask*w_mask, H, W) per-position masks -> (N, H*W, H, W), as the kernels write
  into their zeroed buffer: mask entry (hidx, widx) of position (h, w) concerns the position
  (hidx + h - half_h, widx + w - half_w)."""
  n, _, h_feature, w_feature = mask.shape
  half_h, half_w = (h_mask - 1) // 2, (w_mask - 1) // 2
  buffer = np.zeros((n, h_feature * w_feature, h_feature, w_feature), mask.dtype)
  for h in range(h_feature):
    for w in range(w_feature):
      # effective mask region: [hstart, hend) x [wstart, wend), mask-indexed
      hstart, hend = max(0, half_h - h), min(h_mask, h_feature + half_h - h)
      wstart, wend = max(0, half_w - w), min(w_mask, w_feature + half_w - w)
      for hidx in range(hstart, hend):
        for widx in range(wstart, wend):
          value = mask[:, hidx * w_mask + widx, h, w]
          ph, pw = hidx + h - half_h, widx + w - half_w
          if psa_type == COLLECT:
            buffer[:, ph * w_feature + pw, h, w] = value
          else:
            buffer[:, h * w_feature + w, ph, pw] = value
  return buffer


@pytest.mark.parametrize("psa_type", [COLLECT, DISTRIBUTE])
@pytest.mark.parametrize("feature,mask", [((5, 7), (3, 5)), ((5, 7), (9, 13)), ((4, 6), (7, 4)),
                                          ((7, 9), (97, 97)), ((3, 8), (1, 1))])
def test_psa_mask_equals_kernel(psa_type, feature, mask):
  """Masks smaller and larger than the map, even sizes, the real 97x97."""
  rng = np.random.RandomState(0)
  y = rng.randn(2, mask[0] * mask[1], *feature).astype(np.float32)
  expected = psamask_forward(y, psa_type, *mask)
  ours = np.asarray(psa_mask(y.transpose(0, 2, 3, 1), mask,
                             "collect" if psa_type == COLLECT else "distribute"))
  np.testing.assert_array_equal(ours, expected.transpose(0, 2, 3, 1))


def _fill_psamask(input, output, psa_type, num_, h_feature, w_feature, h_mask, w_mask,
                  half_h_mask, half_w_mask):
  """mmcv's `ext_module.psamask_forward` signature, computed by the transcription."""
  import torch
  assert (half_h_mask, half_w_mask) == ((h_mask - 1) // 2, (w_mask - 1) // 2)
  assert tuple(input.shape) == (num_, h_mask * w_mask, h_feature, w_feature)
  output.copy_(torch.from_numpy(psamask_forward(input.numpy(), psa_type, h_mask, w_mask)))


# (psa type, image size): a 97x131 image gives a 13x17 map, both sides odd, which mmseg shrinks
# to 7x9 with align_corners=True; 13x16 and 16x20 take the floor / align_corners=False path.
CASES = [("bi-direction", (97, 131)), ("collect", (97, 128)), ("distribute", (128, 160))]


@pytest.mark.parametrize("psa_type,hw", CASES, ids=[c[0] for c in CASES])
def test_logits_equal_mmseg(tmp_path, monkeypatch, psa_type, hw):
  config = load_config("psanet_r50_d8_city")
  jax_model = config.model.to_dict()
  jax_model["decode_head"]["psa_type"] = psa_type

  def shrink(mm):
    mm["decode_head"]["psa_type"] = psa_type
    ref.shrink_resnet_model(mm, jax_model)

  model, _ = ref.mmseg_model(MMSEG_CONFIG, shrink)
  mmcv_psa_mask = importlib.import_module("mmcv.ops.psa_mask")  # after ref stubbed mmcv._ext
  monkeypatch.setattr(mmcv_psa_mask.ext_module, "psamask_forward", _fill_psamask)
  config.model = jax_model
  config.eval.scale = tuple(hw)  # the model sees the image as encode_decode does
  ckpt = tmp_path / "mmseg.pth"
  ref.save_checkpoint(model, str(ckpt))
  convert_main.convert(str(ckpt), str(tmp_path / "jax"), config, fmt="mmseg")
  seg = Segmenter.from_workdir(str(tmp_path / "jax"))

  images = np.random.RandomState(0).randint(0, 256, (1, *hw, 3)).astype(np.uint8)
  normalised = ((images.astype(np.float32) - np.asarray(config.data.mean, np.float32))
                / np.asarray(config.data.std, np.float32))
  expected = ref.encode_decode(model, normalised)
  ours = seg.logits(images, resize_to_input=True)
  assert ours.shape == expected.shape == (1, *hw, config.data.num_classes)
  scale = np.max(np.abs(expected))
  assert scale > 0.1
  assert np.max(np.abs(ours - expected)) <= 1e-4 * scale, np.max(np.abs(ours - expected)) / scale
