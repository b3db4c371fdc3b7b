"""Every CNN model against mmsegmentation 1.2.2: an mmseg model built from its shipped
config (tiny widths, random weights, randomised BN statistics) is saved as a model-zoo
checkpoint, converted with `segjax.convert --format=mmseg` into the matching segjax config,
and both give the same logits on an odd-sized image (mmseg's `encode_decode` vs
`Segmenter.logits`, whole-image test mode).

Adding a model is adding a row.
"""
import dataclasses
from typing import Callable, Dict, Tuple

import numpy as np
import pytest

from segjax.convert import __main__ as convert_main
from segjax.inference import Segmenter
from tests import mmseg_reference as ref
from tests.conftest import load_config


def shrink_resnet_model(mm_model: Dict, jax_model: Dict) -> None:
  """ResNet-based models: ResNet-18 at 1/8 width and every head width shrunk alike."""
  ref.shrink_resnet(mm_model["backbone"], jax_model["backbone"])
  ref.shrink_widths(mm_model)
  ref.shrink_widths(jax_model)


@dataclasses.dataclass
class Row:
  config: str  # segjax configs/<config>.py
  mmseg_config: str  # relative to mmseg's configs
  shrink: Callable[[Dict, Dict], None] = shrink_resnet_model
  hw: Tuple[int, int] = (97, 131)


CITY = "4xb2-80k_cityscapes-512x1024.py"
ROWS = [
    Row("fcn_r50_d8_city", f"fcn/fcn_r50-d8_{CITY}"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.config for r in ROWS])
def test_logits_equal_mmseg(tmp_path, row):
  config = load_config(row.config)
  jax_model = config.model.to_dict()
  model, _ = ref.mmseg_model(row.mmseg_config, lambda mm: row.shrink(mm, jax_model))
  config.model = jax_model
  ckpt = tmp_path / "mmseg.pth"
  ref.save_checkpoint(model, str(ckpt))
  convert_main.convert(str(ckpt), str(tmp_path / "jax"), config, fmt="mmseg")
  seg = Segmenter.from_workdir(str(tmp_path / "jax"))

  images = np.random.RandomState(0).randint(0, 256, (1, *row.hw, 3)).astype(np.uint8)
  normalised = ((images.astype(np.float32) - np.asarray(config.data.mean, np.float32))
                / np.asarray(config.data.std, np.float32))
  expected = ref.encode_decode(model, normalised)
  ours = seg.logits(images, resize_to_input=True)
  assert ours.shape == expected.shape == (1, *row.hw, config.data.num_classes)
  scale = np.max(np.abs(expected))
  assert scale > 0.1  # a real signal, not a dead network
  assert np.max(np.abs(ours - expected)) <= 1e-4 * scale, np.max(np.abs(ours - expected)) / scale
