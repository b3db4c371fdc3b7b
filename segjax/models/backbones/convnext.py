"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022), the backbone of its UperNet
segmentation models.

    image -- stem: conv 4x4/4 + LN ----------------------------------------> stage 1 (1/4)
    stage i > 1: LN + conv 2x2/2 (downsampling layer), then depth_i blocks   (1/8 .. 1/32)
    block: x + drop_path(gamma * Linear(GELU(Linear(LN(dwconv7x7(x))))))
    each stage's map --> out norm (LN) --> feature i

Every LayerNorm normalises channels (eps 1e-6); the 1x1 convs are linear layers on
channels-last maps, and gamma (`layer_scale_parameter`) is the per-channel layer scale.
The stem and downsampling convs are unpadded, so odd input sizes are floored, exactly as in
the references.

Parameter names are HF transformers' ConvNextBackbone module tree (`embeddings/
patch_embeddings`, `encoder/stages_1/downsampling_layer_1`, `encoder/stages_2/layers_4/dwconv`,
`hidden_states_norms/stage3`); segjax.convert.hf_convnext converts HF checkpoints by name.
`ConvNeXt.layer_id` is mmseg's layer-wise / stage-wise lr-decay rule on these names.
"""
import functools
import re
from typing import Any, List, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.models import layers
from segjax.models.backbones.swin import OutNorms
from segjax.models.registry import BACKBONES

Dtype = Any
EPS = 1e-6


class ConvNextLayer(nn.Module):
  """One ConvNeXt block (HF's ConvNextLayer). layer_scale_init_value 0 = no layer scale."""
  drop_path: float
  layer_scale_init_value: float
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    y = layers.DepthwiseConv(7, impl=self.dwconv_impl, dtype=self.dtype, name="dwconv")(x)
    y = nn.LayerNorm(epsilon=EPS, dtype=self.dtype, name="layernorm")(y)
    y = layers.Dense(4 * c, dtype=self.dtype, name="pwconv1")(y)
    y = layers.Dense(c, dtype=self.dtype, name="pwconv2")(nn.gelu(y, approximate=False))
    if self.layer_scale_init_value > 0:
      gamma = self.param("layer_scale_parameter",
                         nn.initializers.constant(self.layer_scale_init_value), (c,), jnp.float32)
      y = y * gamma.astype(y.dtype)
    return x + layers.DropPath(self.drop_path)(y, deterministic=not train)


class ConvNextStage(nn.Module):
  """Downsampling layer (LN + conv 2x2/2; absent in stage 1), then the blocks."""
  features: int
  depth: int
  drop_paths: Sequence[float]
  downsample: bool
  layer_scale_init_value: float
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    if self.downsample:
      x = nn.LayerNorm(epsilon=EPS, dtype=self.dtype, name="downsampling_layer_0")(x)
      x = layers.Conv(self.features, (2, 2), strides=2, padding="VALID", dtype=self.dtype,
                  name="downsampling_layer_1")(x)
    for j in range(self.depth):
      x = ConvNextLayer(self.drop_paths[j], self.layer_scale_init_value, self.dwconv_impl,
                        dtype=self.dtype, name=f"layers_{j}")(x, train)
    return x


class ConvNextEncoder(nn.Module):
  hidden_sizes: Sequence[int]
  depths: Sequence[int]
  drop_path_rate: float
  layer_scale_init_value: float
  dwconv_impl: str = "auto"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool) -> List[jnp.ndarray]:
    # Stochastic depth grows linearly from 0 to drop_path_rate over all blocks.
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    outs, first = [], 0
    for i, depth in enumerate(self.depths):
      x = ConvNextStage(self.hidden_sizes[i], depth, rates[first:first + depth], i > 0,
                        self.layer_scale_init_value, self.dwconv_impl, dtype=self.dtype,
                        name=f"stages_{i}")(x, train)
      outs.append(x)
      first += depth
    return outs


class ConvNextEmbeddings(nn.Module):
  """The stem: patch_size x patch_size patches (a strided conv), then LayerNorm."""
  features: int
  patch_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    x = layers.Conv(self.features, (p, p), strides=p, padding="VALID", dtype=self.dtype,
                name="patch_embeddings")(x)
    return nn.LayerNorm(epsilon=EPS, dtype=self.dtype, name="layernorm")(x)


class ConvNeXt(nn.Module):
  """ConvNeXt backbone: the four stage maps (strides 4..32), each through its out norm
  unless `out_norms` is False."""
  hidden_sizes: Sequence[int] = (96, 192, 384, 768)
  depths: Sequence[int] = (3, 3, 9, 3)
  patch_size: int = 4
  drop_path_rate: float = 0.0
  # HF's and the paper's default 1e-6; mmseg's UperNet configs start gamma at 1.0 (it is
  # overwritten by the ImageNet checkpoint either way).
  layer_scale_init_value: float = 1e-6
  out_norms: bool = True
  dwconv_impl: str = "auto"  # layers.DepthwiseConv: "auto", "shift" (CPU) or "xla"
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool = False) -> List[jnp.ndarray]:
    x = ConvNextEmbeddings(self.hidden_sizes[0], self.patch_size, dtype=self.dtype,
                           name="embeddings")(x)
    outs = ConvNextEncoder(self.hidden_sizes, self.depths, self.drop_path_rate,
                           self.layer_scale_init_value, self.dwconv_impl, dtype=self.dtype,
                           name="encoder")(x, train)
    if self.out_norms:
      outs = OutNorms(eps=EPS, dtype=self.dtype, name="hidden_states_norms")(outs)
    return outs

  def layer_id(self, path: str, num_layers: int, decay_type: str) -> int:
    """mmseg 1.2.2's lr-decay id of backbone parameter `path` (e.g.
    "encoder/stages_2/layers_4/dwconv/kernel"): get_layer_id_for_convnext ("layer_wise") or
    get_stage_id_for_convnext ("stage_wise") of
    mmseg/engine/optimizers/layer_decay_optimizer_constructor.py, where mmseg's
    `downsample_layers.0` is our stem (`embeddings`), `downsample_layers.i` our
    `stages_i/downsampling_layer_*`, `stages.i.j` our `stages_i/layers_j`, and everything
    else (the out norms) is unscaled: num_layers + 1.
    """
    stem = path.startswith("embeddings/")
    m = re.match(r"encoder/stages_(\d+)/(downsampling_layer|layers)_(\d+)/", path)
    if decay_type == "stage_wise":
      if stem or (m and m.group(2) == "downsampling_layer"):
        return 0
      return int(m.group(1)) + 1 if m else num_layers + 1
    if decay_type != "layer_wise":
      raise ValueError(f"decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}")
    if stem:
      return 0
    if not m:
      return num_layers + 1
    stage = int(m.group(1))
    if m.group(2) == "downsampling_layer":
      return {1: 2, 2: 3, 3: num_layers}[stage]
    return {0: 1, 1: 2, 2: 3 + int(m.group(3)) // 3, 3: num_layers}[stage]


# The paper's variants (Table 9 of the ConvNeXt paper; mmpretrain's and HF's archs).
CONVNEXT_VARIANTS = {
    "tiny": dict(hidden_sizes=(96, 192, 384, 768), depths=(3, 3, 9, 3)),
    "small": dict(hidden_sizes=(96, 192, 384, 768), depths=(3, 3, 27, 3)),
    "base": dict(hidden_sizes=(128, 256, 512, 1024), depths=(3, 3, 27, 3)),
}

BACKBONES.register("convnext", ConvNeXt)
for _name, _kw in CONVNEXT_VARIANTS.items():
  BACKBONES.register(f"convnext_{_name}", functools.partial(ConvNeXt, **_kw))
