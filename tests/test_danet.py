"""DANet's three supervised outputs against mmseg's DAHead.

test_mmseg_parity compares only the predicted logits (pam_cam); training also uses the pam
and cam outputs, which segjax returns as the first two auxiliary outputs, so each is checked
here at the head's resolution.
"""
import jax
import numpy as np

from segjax import models
from segjax.convert import __main__ as convert_main
from segjax.convert import torch_layout
from tests import mmseg_reference as ref
from tests.conftest import load_config


def test_pam_cam_pam_cam_equal_mmseg(tmp_path):
  import torch
  config = load_config("danet_r50_d8_city")
  jax_model = config.model.to_dict()
  model, _ = ref.mmseg_model("danet/danet_r50-d8_4xb2-80k_cityscapes-512x1024.py",
                             lambda mm: ref.shrink_resnet_model(mm, jax_model))
  config.model = jax_model
  ckpt = tmp_path / "mmseg.pth"
  ref.save_checkpoint(model, str(ckpt))
  config, flat = convert_main.convert(str(ckpt), str(tmp_path / "jax"), config, fmt="mmseg")
  ours_model = models.build_model(config)
  assert ours_model.aux_loss_weights == (1.0, 1.0, 0.4)  # pam, cam, then the FCN aux head

  x = np.random.RandomState(0).randn(1, 97, 131, 3).astype(np.float32)
  with torch.no_grad():
    feats = model.extract_feat(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    expected = [t.numpy().transpose(0, 2, 3, 1) for t in model.decode_head.forward(feats)]
  logits, aux = jax.jit(lambda v, x: ours_model.apply(v, x, train=False))(
      torch_layout.nest(flat), x)
  for name, ours, theirs in zip(("pam_cam", "pam", "cam"), (logits, aux[0], aux[1]), expected):
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape == (1, 13, 17, 19), name
    scale = np.max(np.abs(theirs))
    assert scale > 0.1, name
    assert np.max(np.abs(ours - theirs)) <= 1e-4 * scale, (name, np.max(np.abs(ours - theirs)))
