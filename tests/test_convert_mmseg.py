"""segjax.convert's .pth formats: ImageNet ResNets (torchvision V1b, open-mmlab V1c) into an
encoder-only checkpoint with features equal to mmseg's backbone, and refusals of checkpoints
that do not fit the config. Whole-model mmseg parity is tests/test_mmseg_parity.py."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from segjax.convert import __main__ as convert_main
from segjax.convert import torch_layout
from segjax.errors import CheckpointError
from segjax.models.registry import BACKBONES
from tests import mmseg_reference as ref
from tests.conftest import REPO, load_config


def tiny_fcn_config(deep_stem: bool):
  config = load_config("fcn_r50_d8_city")
  model = config.model.to_dict()
  mm_backbone = {"type": "ResNetV1c" if deep_stem else "ResNet"}
  ref.shrink_resnet(mm_backbone, model["backbone"])
  ref.shrink_widths(model)
  config.model = model
  return config


@pytest.mark.parametrize("fmt,deep_stem", [("torchvision_resnet", False), ("mmcv_resnet", True)])
def test_imagenet_resnet_features_equal_mmseg_backbone(tmp_path, fmt, deep_stem):
  import torch
  ref.import_mmseg()
  from mmseg.models.backbones import ResNet, ResNetV1c
  config = tiny_fcn_config(deep_stem)
  bb = config.model.backbone
  torch.manual_seed(0)
  net = (ResNetV1c if deep_stem else ResNet)(
      depth=18, stem_channels=16, base_channels=8, strides=tuple(bb.strides),
      dilations=tuple(bb.dilations), contract_dilation=True)
  net.eval()  # mmseg's ResNet.train() returns None
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
  state = dict(net.state_dict())
  state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 64), torch.zeros(1000)  # ImageNet
  path = tmp_path / "resnet.pth"
  torch.save(state if fmt == "torchvision_resnet" else {"meta": {}, "state_dict": state}, path)

  _, flat = convert_main.convert(str(path), str(tmp_path / "jax"), config, fmt=fmt)
  tree = torch_layout.nest(flat)
  variables = {"params": tree["params"]["backbone"], "batch_stats": tree["batch_stats"]["backbone"]}
  backbone = BACKBONES.build(config.model.backbone, "model.backbone")
  x = np.random.RandomState(0).randn(1, 97, 131, 3).astype(np.float32)
  ours = backbone.apply(variables, x, train=False)
  with torch.no_grad():
    theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  assert len(ours) == len(theirs) == 4
  for a, b in zip(ours, theirs):
    b = b.numpy().transpose(0, 2, 3, 1)
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-4 * np.abs(b).max())


@pytest.fixture(scope="module")
def fcn_checkpoint(tmp_path_factory):
  """(mmseg model, its model-zoo style .pth, the matching tiny segjax model config)."""
  config = load_config("fcn_r50_d8_city")
  jax_model = config.model.to_dict()
  model, _ = ref.mmseg_model("fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py",
                             lambda mm: ref.shrink_resnet_model(mm, jax_model))
  import torch
  with torch.no_grad():  # mmseg's classifier init (std 0.01) predicts one class everywhere
    torch.manual_seed(2)
    model.decode_head.conv_seg.weight.normal_()
  path = tmp_path_factory.mktemp("mmseg") / "fcn.pth"
  ref.save_checkpoint(model, str(path))
  return model, path, jax_model


def test_checkpoint_of_another_model_is_refused_and_nothing_written(tmp_path, fcn_checkpoint):
  """An mmseg FCN checkpoint against another FCN: one error naming the first parameter that
  does not fit, and no checkpoint directory."""
  _, path, jax_model = fcn_checkpoint
  other = load_config("fcn_r50_d8_city")
  other.model = dict(jax_model)
  other.model["decode_head"] = dict(jax_model["decode_head"], concat_input=False)
  with pytest.raises(CheckpointError, match=r"fcn.pth: checkpoint has 5 parameter\(s\) the "
                     r"model lacks, first 'batch_stats/decode_head/conv_cat/bn/mean'"):
    convert_main.convert(str(path), str(tmp_path / "out"), other, fmt="mmseg")
  assert not (tmp_path / "out").exists()
  # A tensor of another shape (19 -> 18 classes) is named with both shapes.
  other.model = jax_model
  other.data.num_classes = 18
  with pytest.raises(CheckpointError, match=r"'params/auxiliary_head_0/conv_seg/bias' has "
                     r"shape \(19,\) in the checkpoint but \(18,\)"):
    convert_main.convert(str(path), str(tmp_path / "out"), other, fmt="mmseg")
  # Not a checkpoint at all: one line from the command.
  (tmp_path / "junk.pth").write_bytes(b"not a zip")
  out = subprocess.run([sys.executable, "-m", "segjax.convert", "--format=mmseg",
                        f"--input={tmp_path / 'junk.pth'}", f"--output={tmp_path / 'out'}",
                        f"--config={REPO}/configs/fcn_r50_d8_city.py"],
                       capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 2
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "junk.pth: not a readable PyTorch checkpoint" in errors[0], out.stderr
  assert not (tmp_path / "out").exists()


def test_converted_checkpoint_evaluates_like_mmseg(tmp_path, fcn_checkpoint):
  """`--mode=evaluate` on the converted directory (the README's command) gives the mIoU of
  mmseg's own predictions on a small Cityscapes in the official layout."""
  from segjax.data import cityscapes
  from tests.test_data import write_cityscapes
  model, path, jax_model = fcn_checkpoint
  config = load_config("fcn_r50_d8_city")
  config.model = jax_model
  convert_main.convert(str(path), str(tmp_path / "ckpt"), config, fmt="mmseg")
  write_cityscapes(tmp_path / "city", hw=(40, 56))
  out = subprocess.run(
      [sys.executable, "-m", "segjax.main", f"--config=configs/saved.py:{tmp_path / 'ckpt'}",
       f"--workdir={tmp_path / 'ckpt'}", "--mode=evaluate",
       f"--config.data.root={tmp_path / 'city'}", "--config.eval.scale=(40,56)",
       "--config.eval.batch_size=8"], capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  ours = json.load(open(tmp_path / "ckpt" / "eval_step0.json"))["metrics"]

  source = cityscapes.Cityscapes(str(tmp_path / "city"), "val")
  confusion = np.zeros((19, 19), np.int64)
  mean, std = np.asarray(config.data.mean, np.float32), np.asarray(config.data.std, np.float32)
  for i in range(len(source)):
    image, label = source.load(i)
    logits = ref.encode_decode(model, ((image.astype(np.float32) - mean) / std)[None])
    pred, label = logits[0].argmax(-1).ravel(), label.ravel()
    keep = label != 255
    np.add.at(confusion, (label[keep], pred[keep]), 1)
  union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
  seen = union > 0  # classes in neither labels nor predictions are left out, as in mmseg
  expected = np.mean(np.diag(confusion)[seen] / union[seen])
  assert np.sum(confusion.sum(0) > 0) > 1  # predictions are not one constant class
  assert ours["mIoU"] == pytest.approx(expected, abs=1e-6)
