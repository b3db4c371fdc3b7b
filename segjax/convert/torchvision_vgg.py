"""torchvision's ImageNet VGG-16 (`vgg16-397923af.pth`, `vgg16_bn-6c64b313.pth`) -> segjax.

torchvision's VGG is `features`, an nn.Sequential of Conv2d(3x3) [BatchNorm2d] ReLU ... with
a MaxPool2d closing each stage, then `classifier`: Linear(512*7*7 -> 4096), ReLU, Dropout,
Linear(4096 -> 4096), ReLU, Dropout, Linear(4096 -> 1000). Its thirteen convs sit at fixed
positions of `features`:

    vgg16     0  2 | 5  7 | 10 12 14 | 17 19 21 | 24 26 28
    vgg16_bn  0  3 | 7 10 | 14 17 20 | 24 27 30 | 34 37 40   (BatchNorm2d at each + 1)

so the conversion is positional: the k-th conv becomes `params/backbone/conv{s}_{j}/conv`
(Caffe's names, segjax's VGG backbone and SegNet / DeconvNet encoders alike) and its BN
`.../bn` with running statistics in `batch_stats`. vgg16_bn's convs carry a bias that the BN
makes redundant (segjax's conv-BN has none): it is folded into the running mean (mean - b),
which leaves the output unchanged in training (batch statistics absorb it) and evaluation.

classifier.0 and classifier.3 initialise the model's `fc6` and `fc7` (VGG's fully connected
layers as convolutions; wherever the model has them, e.g. `decode_head/fc6`): classifier.0's
25088 inputs are torch's flatten of a (512, 7, 7) map, so it becomes a (7, 7, 512, 4096)
kernel. A model whose fc6 is DeepLab-LargeFOV's (3, 3, 512, 1024) gets it subsampled the way
DeepLab describes (taps 0, 3, 6 of each axis; every 4th output channel, and fc7 every 4th
input and output channel). classifier.6 (the 1000 ImageNet classes) is dropped. A tensor at
any other position, or one of the expected ones missing, is refused by name.
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from segjax import checkpoint as ckpt_lib
from segjax.convert import torch_layout
from segjax.errors import CheckpointError, ConfigError

VGG16_DEPTHS = (2, 2, 3, 3, 3)
CLASSIFIER = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": None}


def feature_positions(bn: bool, depths: Sequence[int] = VGG16_DEPTHS
                      ) -> Tuple[Tuple[int, str], ...]:
  """(index in `features`, Caffe name) of each conv, as torchvision's make_layers builds it."""
  out, i = [], 0
  for s, n in enumerate(depths):
    for j in range(n):
      out.append((i, f"conv{s + 1}_{j + 1}"))
      i += 3 if bn else 2  # conv, [bn,] relu
    i += 1  # the stage's max pool
  return tuple(out)


def convert_features(state_dict: Dict[str, np.ndarray], source: str,
                     prefix: str = "backbone") -> Dict[str, np.ndarray]:
  """The `features.*` tensors of a torchvision VGG-16 (plain or _bn, found from the tensors)
  as flat segjax variables under `params/{prefix}/` and `batch_stats/{prefix}/`."""
  bn = "features.1.running_mean" in state_dict
  out, expected = {}, set()
  for index, name in feature_positions(bn):
    conv = f"features.{index}"
    expected |= {f"{conv}.weight", f"{conv}.bias"}
    for key in (f"{conv}.weight", f"{conv}.bias"):
      if key not in state_dict:
        raise CheckpointError(f"{source}: torchvision {'vgg16_bn' if bn else 'vgg16'} tensor "
                              f"'{key}' ({name}) is missing")
    weight = np.asarray(state_dict[f"{conv}.weight"], np.float32)
    bias = np.asarray(state_dict[f"{conv}.bias"], np.float32)
    if weight.ndim != 4:
      raise CheckpointError(f"{source}: '{conv}.weight' should be a conv weight (4-D) for "
                            f"{name}, got shape {weight.shape}")
    out[f"params/{prefix}/{name}/conv/kernel"] = np.transpose(weight, (2, 3, 1, 0))
    if not bn:
      out[f"params/{prefix}/{name}/conv/bias"] = bias
      continue
    norm = f"features.{index + 1}"
    keys = {f"{norm}.{leaf}" for leaf in ("weight", "bias", "running_mean", "running_var")}
    expected |= keys | {f"{norm}.num_batches_tracked"}
    missing = sorted(keys - set(state_dict))
    if missing:
      raise CheckpointError(f"{source}: torchvision vgg16_bn tensor '{missing[0]}' ({name}'s "
                            "BatchNorm) is missing")
    get = lambda leaf: np.asarray(state_dict[f"{norm}.{leaf}"], np.float32)  # noqa: E731
    out[f"params/{prefix}/{name}/bn/scale"] = get("weight")
    out[f"params/{prefix}/{name}/bn/bias"] = get("bias")
    out[f"batch_stats/{prefix}/{name}/bn/mean"] = get("running_mean") - bias
    out[f"batch_stats/{prefix}/{name}/bn/var"] = get("running_var")
  unknown = sorted(k for k in state_dict
                   if k.startswith("features.") and k not in expected)
  if unknown:
    raise CheckpointError(f"{source}: {len(unknown)} tensor(s) where torchvision's "
                          f"{'vgg16_bn' if bn else 'vgg16'} has none, first '{unknown[0]}'")
  return out


def _fit_fc(kernel: np.ndarray, bias: np.ndarray, target: Tuple[int, ...], name: str,
            source: str) -> Tuple[np.ndarray, np.ndarray]:
  """VGG's (k, k, in, out) fc kernel as the model's: as is, or subsampled (DeepLab)."""
  if tuple(kernel.shape) == tuple(target):
    return kernel, bias
  k, _, c_in, c_out = target
  taps = kernel.shape[0]
  in_step = kernel.shape[2] // c_in if c_in else 0
  out_step = kernel.shape[3] // c_out if c_out else 0
  fits = (taps == 1 == k or (k > 1 and (taps - 1) % (k - 1) == 0)) and in_step >= 1 and \
      out_step >= 1 and c_in * in_step == kernel.shape[2] and c_out * out_step == kernel.shape[3]
  if not fits:
    raise CheckpointError(f"{source}: VGG's {name} {kernel.shape} does not fit the model's "
                          f"{name} {tuple(target)} (as is, or subsampled like DeepLab's)")
  tap_step = (taps - 1) // (k - 1) if k > 1 else 1
  return (kernel[::tap_step, ::tap_step, ::in_step, ::out_step][:k, :k],
          bias[::out_step])


def convert_classifier(state_dict: Dict[str, np.ndarray], source: str,
                       fc_targets: Dict[str, Tuple[str, Tuple[int, ...]]]
                       ) -> Dict[str, np.ndarray]:
  """classifier.0 / .3 as the model's fc6 / fc7: `fc_targets` maps "fc6"/"fc7" to the model's
  (kernel path without the leaf, kernel shape); a model without them takes neither."""
  unknown = sorted(k for k in state_dict if k.startswith("classifier.")
                   and k.rsplit(".", 1)[0] not in CLASSIFIER)
  if unknown:
    raise CheckpointError(f"{source}: tensor '{unknown[0]}' is not in torchvision's VGG "
                          "classifier (classifier.0, .3, .6)")
  out = {}
  for module, name in CLASSIFIER.items():
    if name is None or name not in fc_targets:
      continue
    keys = (f"{module}.weight", f"{module}.bias")
    if any(k not in state_dict for k in keys):
      raise CheckpointError(f"{source}: the model has {name} but '{module}.weight' / "
                            "'.bias' is missing")
    weight = np.asarray(state_dict[keys[0]], np.float32)
    bias = np.asarray(state_dict[keys[1]], np.float32)
    if name == "fc6":  # Linear over torch's flatten of (C, 7, 7): C-major, then rows, cols
      c_in = weight.shape[1] // 49
      if weight.ndim != 2 or weight.shape[1] != c_in * 49:
        raise CheckpointError(f"{source}: classifier.0.weight {weight.shape} is not a 7x7 "
                              "map's fully connected layer")
      kernel = weight.reshape(weight.shape[0], c_in, 7, 7).transpose(2, 3, 1, 0)
    else:
      kernel = weight.T[None, None]
    path, shape = fc_targets[name]
    kernel, bias = _fit_fc(kernel, bias, shape, name, source)
    out[f"{path}/kernel"] = kernel
    out[f"{path}/bias"] = bias
  return out


def fc_targets(config) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
  """{"fc6" / "fc7": (flat path of the layer, its kernel shape)} of config's model."""
  from segjax import models
  model = models.build_model(config)
  h, w = config.data.crop_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             np.zeros((1, h, w, 3), np.float32)))
  found = {}
  for key, leaf in ckpt_lib.flatten({"params": shapes["params"]}).items():
    match = re.fullmatch(r"(params/(?:.*/)?(fc6|fc7))/kernel", key)
    if match:
      if match.group(2) in found:
        raise ConfigError(f"the model has several {match.group(2)} layers "
                          f"({found[match.group(2)][0]}, {match.group(1)}); which one VGG's "
                          "fills is ambiguous")
      found[match.group(2)] = (match.group(1), tuple(leaf.shape))
  return found


def convert_torchvision_vgg(state_dict: Dict[str, np.ndarray], source: str,
                            targets: Optional[Dict] = None) -> Dict[str, np.ndarray]:
  """The whole torchvision VGG-16 state dict: features into the backbone, the classifier into
  `targets` (see fc_targets; None or {}: the backbone only, the classifier is checked and
  dropped)."""
  unknown = sorted(k for k in state_dict if not k.startswith(("features.", "classifier.")))
  if unknown:
    raise CheckpointError(f"{source}: tensor '{unknown[0]}' is not torchvision VGG's "
                          "(features.*, classifier.*)")
  return {**convert_features(state_dict, source),
          **convert_classifier(state_dict, source, targets or {})}


def read(input_path: str, config) -> Tuple:
  """The `READERS` entry of segjax.convert: (config, tensors, whole model? False)."""
  from segjax.tools.config_file import load_config_file
  if config is None:
    raise ConfigError("--format=torchvision_vgg needs --config: the segjax config whose VGG-16 "
                      "(and fc6 / fc7) the ImageNet weights initialise")
  if isinstance(config, str):
    config = load_config_file(config)
  state_dict = torch_layout.load_pth(input_path, "state_dict")
  return config, convert_torchvision_vgg(state_dict, input_path, fc_targets(config)), False
