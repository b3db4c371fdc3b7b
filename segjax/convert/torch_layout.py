"""The layout rules from PyTorch tensors to flax variables, shared by every source format.

A PyTorch module tree maps onto the flax tree by name (segjax names its submodules like the
reference); what differs is the leaf name and the array layout:

  conv weight   (out, in/groups, kh, kw) -> "kernel" (kh, kw, in/groups, out)
  linear weight (out, in)                -> "kernel" (in, out)
  norm weight   (C,)                     -> "scale"
  bias                                   -> "bias"
  running_mean / running_var             -> the "batch_stats" collection's "mean" / "var"
  num_batches_tracked                    -> dropped (flax BatchNorm has no counter)
"""
import json
import os
import re
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from segjax.errors import CheckpointError

STATS = {"running_mean": "mean", "running_var": "var"}


def to_flax(kind: str, leaf: str, x: np.ndarray) -> Tuple[str, str, np.ndarray]:
  """(collection, flax leaf name, array in flax layout) of PyTorch tensor `leaf` of a
  `kind` ("conv", "dense", "norm") module."""
  if leaf in STATS:
    return "batch_stats", STATS[leaf], x
  if leaf == "bias":
    return "params", "bias", x
  if leaf != "weight":
    raise ValueError(f"unknown PyTorch parameter name {leaf!r}")
  if kind == "conv":
    return "params", "kernel", np.transpose(x, (2, 3, 1, 0))
  if kind == "dense":
    return "params", "kernel", x.T
  return "params", "scale", x


def kind_of(leaf: str, x: np.ndarray) -> str:
  """The module kind of a "weight" guessed from its rank (4: conv, 2: linear, 1: norm)."""
  return {4: "conv", 2: "dense", 1: "norm"}.get(x.ndim, "unknown") if leaf == "weight" else ""


def module_path(torch_module: str) -> str:
  """PyTorch module path -> flax path: dots become "/", and a numeric component (an index
  into an nn.Sequential or nn.ModuleList) joins its parent with "_", the way flax names the
  entries of a list attribute: "layer1.0.conv1" -> "layer1_0/conv1"."""
  out = []
  for part in torch_module.split("."):
    if part.isdigit() and out:
      out[-1] += f"_{part}"
    else:
      out.append(part)
  return "/".join(out)


def convert_by_name(state_dict: Dict[str, np.ndarray], source: str,
                    renames: Sequence[Tuple[str, str]] = (),
                    dropped: Sequence[str] = (r".*\.num_batches_tracked",)
                    ) -> Dict[str, np.ndarray]:
  """{"params/..." or "batch_stats/...": array} from a state dict whose module tree mirrors
  segjax's. `renames` are (regex, replacement) applied in order to each key first; keys
  matching a `dropped` regex are skipped. Unconvertible tensors are listed and refused."""
  out, bad = {}, []
  for key, value in state_dict.items():
    if any(re.fullmatch(p, key) for p in dropped):
      continue
    name = key
    for pattern, repl in renames:
      name = re.sub(pattern, repl, name)
    module, _, leaf = name.rpartition(".")
    x = np.asarray(value, np.float32)
    try:
      collection, flax_leaf, array = to_flax(kind_of(leaf, x), leaf, x)
    except ValueError:
      bad.append(key)
      continue
    out[f"{collection}/{module_path(module)}/{flax_leaf}"] = array
  if bad:
    raise CheckpointError(f"{source}: {len(bad)} tensor(s) of unknown kind: "
                          f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}")
  return out


def nest(flat: Dict[str, np.ndarray]) -> Dict:
  """{"a/b/c": x} -> {"a": {"b": {"c": x}}}."""
  tree: Dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def load_pth(path: str, key: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The state dict of a PyTorch `.pth` file as float32 numpy arrays.

  Accepts a bare state dict or a dict holding it under `key` ("state_dict" for mmseg /
  mmcv checkpoints, which also carry "meta"). Needs only the CPU build of torch; objects
  other than tensors are refused (weights_only), so an untrusted file cannot run code.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    import torch
  except ImportError:
    raise CheckpointError(f"{path}: reading .pth files needs torch (pip install "
                          "torch==2.13.0, the CPU build is enough)") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle, zip or version errors: one line naming the file
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None
  if key is not None and isinstance(obj, dict) and key in obj:
    obj = obj[key]
  if not isinstance(obj, dict) or not all(hasattr(v, "numpy") for v in obj.values()):
    raise CheckpointError(f"{path}: expected a state dict of tensors"
                          f"{f' (or one under {key!r})' if key else ''}")
  return {k: v.detach().float().numpy() for k, v in obj.items()}


def load_hf_directory(path: str) -> Tuple[Dict, Dict[str, np.ndarray]]:
  """(config.json dict, state dict of numpy arrays) of an HF model directory."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{path}: no config.json; expected an HF model directory")
  with open(cfg_path) as f:
    hf_config = json.load(f)
  st = os.path.join(path, "model.safetensors")
  bin_path = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(st):
    from safetensors.numpy import load_file
    return hf_config, load_file(st)
  if os.path.isfile(bin_path):
    try:
      import torch
    except ImportError:
      raise CheckpointError(f"{bin_path}: reading .bin files needs torch "
                            "(pip install torch==2.13.0), or convert it to safetensors") from None
    sd = torch.load(bin_path, map_location="cpu", weights_only=True)
    return hf_config, {k: v.float().numpy() for k, v in sd.items()}
  raise CheckpointError(f"{path}: neither model.safetensors nor pytorch_model.bin found")


def hf_whole_model_reader(default_config: Callable, apply_hf_config: Callable,
                          convert_state_dict: Callable) -> Callable:
  """The segjax.convert `READERS` entry of an HF directory holding a whole segmentation model
  (hf_upernet, hf_maskformer): the model from HF's config.json (`apply_hf_config(config,
  hf_config, source)`), the recipe from --config or else `default_config(hf_config, source)`,
  and `convert_state_dict(state_dict, hf_config, input_path)`. Returns (config, tensors, True).
  """
  def read(input_path: str, config):
    from segjax.tools.config_file import load_config_file
    hf_config, state_dict = load_hf_directory(input_path)
    source = os.path.join(input_path, "config.json")
    if config is None:
      config = default_config(hf_config, source)
    if isinstance(config, str):
      config = load_config_file(config)
    config = apply_hf_config(config, hf_config, source)
    return config, convert_state_dict(state_dict, hf_config, input_path), True
  return read
