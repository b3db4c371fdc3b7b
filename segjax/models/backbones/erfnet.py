"""ERFNet (Romera, Alvarez, Bergasa and Arroyo, "ERFNet: Efficient Residual Factorized ConvNet
for Real-time Semantic Segmentation", T-ITS 2018) as mmseg 1.2.2's backbone: the whole
encoder-decoder, whose 1/2-resolution 16-channel map an FCNHead classifies.

    image -- encoder_0: downsampler 3 -> 16                                                1/2
      encoder_1: downsampler 16 -> 64, encoder_2..6: 5 non-bottleneck-1D (64)              1/4
      encoder_7: downsampler 64 -> 128, encoder_8..15: non-bottleneck-1D (128) dilated
                 2, 4, 8, 16, 2, 4, 8, 16                                                  1/8
      decoder_0: upsampler 128 -> 64, decoder_1..2: non-bottleneck-1D (64)                 1/4
      decoder_3: upsampler 64 -> 16,  decoder_4..5: non-bottleneck-1D (16)                 1/2

  downsampler: [3x3/2 conv (out - in maps, biased) || 2x2/2 max pool] -BN-ReLU
  non-bottleneck-1D: x + (3x1 -ReLU- 1x3 -BN-ReLU- 3x1 -ReLU- 1x3 -BN- dropout), then ReLU;
      every conv biased; the second pair dilated (d x 1, 1 x d) in the encoder's last stage
  upsampler: 3x3/2 transposed conv (padding 1, output padding 1, biased) -BN-ReLU

Names, widths and details are mmseg's (mmseg/models/backbones/erfnet.py): `encoder_{i}` /
`decoder_{i}` (its ModuleLists), a non-bottleneck's convs and norms at their index in mmseg's
`convs_layers` list (`convs_layers_0, _2, _3, _5, _7, _8`; the ReLUs and dropout hold the other
indices), BatchNorm eps 1e-3 in every block (the blocks' own default: mmseg's ERFNet does not
pass its norm_cfg down), element-wise dropout `dropout_ratio` in the encoder's non-bottlenecks
only. For an odd side the pooled map (floor) is one row or column short of the conv's (ceil) and
is resized bilinearly to it, as mmseg does. Returns a one-element list of features (the last
decoder map), what mmseg's FCNHead reads.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES

Dtype = Any
EPS = 1e-3


class DownsamplerBlock(nn.Module):
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = layers.Conv(self.features - x.shape[-1], (3, 3), strides=2, padding=((1, 1), (1, 1)),
                       dtype=self.dtype, name="conv")(x)
    pooled = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    pooled = layers.resize_bilinear(pooled, conv.shape[1:3]).astype(conv.dtype)
    x = jnp.concatenate([conv, pooled], axis=-1)
    return nn.relu(layers.batch_norm(train, self.dtype, "bn", eps=EPS)(x))


class NonBottleneck1d(nn.Module):
  dilation: int = 1
  dropout: float = 0.0
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    y = x
    for pair, d in enumerate((1, self.dilation)):
      index = 5 * pair  # mmseg's convs_layers: conv, act, conv, bn, act|dropout per pair
      y = layers.Conv(c, (3, 1), padding=((d, d), (0, 0)), kernel_dilation=(d, 1),
                      dtype=self.dtype, name=f"convs_layers_{index}")(y)
      y = nn.relu(y)
      y = layers.Conv(c, (1, 3), padding=((0, 0), (d, d)), kernel_dilation=(1, d),
                      dtype=self.dtype, name=f"convs_layers_{index + 2}")(y)
      y = layers.batch_norm(train, self.dtype, f"convs_layers_{index + 3}", eps=EPS)(y)
      if pair == 0:
        y = nn.relu(y)
      elif self.dropout > 0:
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return nn.relu(y + x)


class UpsamplerBlock(nn.Module):
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool):
    # torch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): flax pads the
    # stride-dilated input by k - 1 - padding before and that + output_padding after.
    x = nn.ConvTranspose(self.features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                         transpose_kernel=True, dtype=self.dtype, name="conv")(x)
    return nn.relu(layers.batch_norm(train, self.dtype, "bn", eps=EPS)(x))


class ERFNet(nn.Module):
  """mmseg's ERFNet; arguments as its constructor's (the channel lists it only checks for
  length, enc_non_bottleneck_channels and dec_upsample_channels, are accepted the same way)."""
  enc_downsample_channels: Sequence[int] = (16, 64, 128)
  enc_stage_non_bottlenecks: Sequence[int] = (5, 8)
  enc_non_bottleneck_dilations: Sequence[int] = (2, 4, 8, 16)
  enc_non_bottleneck_channels: Sequence[int] = (64, 128)
  dec_upsample_channels: Sequence[int] = (64, 16)
  dec_stages_non_bottleneck: Sequence[int] = (2, 2)
  dec_non_bottleneck_channels: Sequence[int] = (64, 16)
  dropout_ratio: float = 0.1
  dtype: Optional[Dtype] = None

  def __post_init__(self):
    """mmseg's constructor asserts, as one ConfigError when the config is built."""
    down, nbs = self.enc_downsample_channels, self.enc_stage_non_bottlenecks
    if not (len(down) == len(self.dec_upsample_channels) + 1 == len(nbs) + 1
            == len(self.enc_non_bottleneck_channels) + 1
            and nbs[-1] % len(self.enc_non_bottleneck_dilations) == 0
            and len(self.dec_upsample_channels) == len(self.dec_stages_non_bottleneck)
            == len(self.dec_non_bottleneck_channels)):
      raise ConfigError(
          "model.backbone (erfnet): channel and stage lists do not match; mmseg's ERFNet needs "
          "len(enc_downsample_channels) = len(dec_upsample_channels) + 1 = "
          "len(enc_stage_non_bottlenecks) + 1 = len(enc_non_bottleneck_channels) + 1, "
          "enc_stage_non_bottlenecks[-1] a multiple of len(enc_non_bottleneck_dilations), and "
          "the three decoder lists of one length")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False) -> Tuple[jnp.ndarray]:
    down, dt = tuple(self.enc_downsample_channels), self.dtype
    # mmseg's encoder list: a downsampler per stage, each but the first followed by its
    # non-bottlenecks (the last stage's dilated, cycling through the dilations).
    encoder = [("down", down[0])]
    for stage in range(len(down) - 1):
      if stage == len(down) - 2:
        dilations = tuple(self.enc_non_bottleneck_dilations)
        repeats = self.enc_stage_non_bottlenecks[-1] // len(dilations)
      else:
        dilations, repeats = (1,), self.enc_stage_non_bottlenecks[stage]
      encoder += [("down", down[stage + 1])] + [("nb", d) for _ in range(repeats)
                                                for d in dilations]
    for i, (kind, arg) in enumerate(encoder):
      if kind == "down":
        x = DownsamplerBlock(arg, dt, name=f"encoder_{i}")(x, train)
      else:
        x = NonBottleneck1d(arg, self.dropout_ratio, dt, name=f"encoder_{i}")(x, train)
    j = 0
    for stage, width in enumerate(self.dec_non_bottleneck_channels):
      x = UpsamplerBlock(width, dt, name=f"decoder_{j}")(x, train)
      j += 1
      for _ in range(self.dec_stages_non_bottleneck[stage]):
        x = NonBottleneck1d(dtype=dt, name=f"decoder_{j}")(x, train)
        j += 1
    return (x,)


BACKBONES.register("erfnet", ERFNet)
