"""PSANet's head (Zhao et al. 2018, "Point-wise Spatial Attention"; mmseg's PSAHead).

Every position predicts, with 1x1 convs, an attention mask of mask_size (97 x 97) centred
on itself over the (shrunk) feature map. `psa_mask` re-indexes those centred masks into one
(HW x HW) attention matrix: in the collect branch a position gathers from its neighbours,
in the distribute branch it hands its feature out to them. Bi-directional PSANet runs both:

    for branch in (collect: reduce, attention), (distribute: reduce_p, attention_p):
      f = shrink(reduce(x));  A = softmax(psa_mask(attention(f)));  out[branch] = A @ f
    logits = classify(bottleneck([x, resize(proj([out[collect], out[distribute]]))]))

`shrink` halves the map (mmseg: corners aligned when both sides are odd, 13x17 -> 7x9), so
at 1/8 of a 512x1024 crop the matrix is (32*64)^2 floats (16 MiB); whole-image testing at
1024x2048 makes it 8192^2 (256 MiB per image and branch), besides the (64, 128, 97*97) masks.

mmseg's PSAMask is a compiled CUDA/C++ op; `psa_mask` is the same remap as a zero pad and
two strided gathers, tested against a NumPy transcription of the kernel (tests/test_psanet.py).
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS

PSA_TYPES = ("collect", "distribute", "bi-direction")


def _window(y: jnp.ndarray, centre_axis: int, mask_axis: int, length: int) -> jnp.ndarray:
  """out[.., q, .., p, ..] = y[.., q, .., p - q + half, ..] for p in [0, length), 0 where
  that index falls outside the mask (q on `centre_axis`, the mask on `mask_axis` > it)."""
  m = y.shape[mask_axis]
  half = (m - 1) // 2
  lo, hi = max(0, length - 1 - half), max(0, half + length - m)  # enough zeros either side
  pad = [(0, 0)] * y.ndim
  pad[mask_axis] = (lo, hi)
  y = jnp.pad(y, pad)

  def take(y_q, q):  # y without the centre axis, so the mask axis moved down by one
    return jax.lax.dynamic_slice_in_dim(y_q, half - q + lo, length, axis=mask_axis - 1)

  return jax.vmap(take, in_axes=(centre_axis, 0), out_axes=centre_axis)(
      y, jnp.arange(y.shape[centre_axis]))


def psa_mask(y: jnp.ndarray, mask_size: Sequence[int], psa_type: str) -> jnp.ndarray:
  """mmcv's PSAMask forward in NHWC: (N, H, W, hm*wm) -> (N, H, W, H*W).

  Channel (i, j) of position q = (h, w) is its mask's weight for the position
  p = (h + i - (hm-1)//2, w + j - (wm-1)//2). "collect": out[n, q, p] = that weight (row q
  of the matrix gathers into q); "distribute": out[n, p, q] = that weight (the transpose:
  q sends to p). Positions of the map outside q's mask get 0, as in the kernel's zeroed
  buffer, so they still take part in the softmax that follows.
  """
  n, h, w, c = y.shape
  hm, wm = int(mask_size[0]), int(mask_size[1])
  if c != hm * wm:
    raise ValueError(f"psa_mask: {c} channels but mask_size {hm}x{wm}")
  out = y.reshape(n, h, w, hm, wm)
  out = _window(out, centre_axis=1, mask_axis=3, length=h)  # (n, h, w, h, wm)
  out = _window(out, centre_axis=2, mask_axis=4, length=w)  # (n, h, w, h, w)
  out = out.reshape(n, h * w, h * w)
  if psa_type == "distribute":
    out = out.transpose(0, 2, 1)
  elif psa_type != "collect":
    raise ValueError(f"psa_mask type must be 'collect' or 'distribute', got {psa_type!r}")
  return out.reshape(n, h, w, h * w)


class PSAHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  input_transform: Optional[str] = None
  channels: int = 512
  mask_size: Tuple[int, int] = (97, 97)  # mmseg: (97, 97) for 512x1024 Cityscapes crops
  psa_type: str = "bi-direction"
  shrink_factor: int = 2
  normalization_factor: Optional[float] = 1.0  # None: mask_h * mask_w
  psa_softmax: bool = True
  dropout: float = 0.1
  # mmseg's compact=True (the conv predicts the HW x HW map directly) is not implemented.
  compact: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    if self.psa_type not in PSA_TYPES:
      raise ConfigError(f"psa_head.psa_type must be one of {PSA_TYPES}, got {self.psa_type!r}")
    if self.compact:
      raise ConfigError("psa_head.compact=True is not implemented (mmseg's configs use False)")
    hm, wm = self.mask_size
    norm = self.normalization_factor
    norm = float(hm * wm) if norm is None else float(norm)
    x = identity = base.select_inputs(features, self.in_index, self.input_transform)

    def conv(features, kernel_size, name):
      return layers.ConvBNAct(features, kernel_size, dtype=self.dtype, name=name)

    # Shrink: mmseg's rule, corners aligned only when both sides are odd (e.g. 13 -> 7).
    h, w = x.shape[1:3]
    f = self.shrink_factor
    align_corners = False
    if f != 1:
      if h % f and w % f:
        size, align_corners = ((h - 1) // f + 1, (w - 1) // f + 1), True
      else:
        size = (h // f, w // f)
    resize = layers.resize_align_corners if align_corners else layers.resize_bilinear

    def branch(suffix, kind):
      """reduce -> shrink -> per-position masks -> attention matrix -> aggregate."""
      feat = conv(self.channels, 1, f"reduce{suffix}")(x, train)
      if f != 1:
        feat = resize(feat, size)
      n, fh, fw, c = feat.shape
      y = conv(self.channels, 1, f"attention{suffix}_0")(feat, train)
      y = layers.Conv(hm * wm, (1, 1), use_bias=False, dtype=self.dtype,
                  name=f"attention{suffix}_1")(y)
      y = psa_mask(y, (hm, wm), kind).reshape(n, fh * fw, fh * fw)
      if self.psa_softmax:
        y = jax.nn.softmax(y.astype(jnp.float32), axis=-1).astype(feat.dtype)
      out = jnp.einsum("nqp,npc->nqc", y, feat.reshape(n, fh * fw, c)) * (1.0 / norm)
      return out.reshape(n, fh, fw, c)

    if self.psa_type == "bi-direction":
      out = jnp.concatenate([branch("", "collect"), branch("_p", "distribute")], axis=-1)
    else:
      out = branch("", self.psa_type)
    # mmseg's proj is a 1x1 conv with padding 1: the map grows by a ring of BN(0) pixels
    # before being resized back to the input; kept as is so its weights work unchanged.
    out = jnp.pad(out, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = conv(identity.shape[-1], 1, "proj")(out, train)
    out = resize(out, identity.shape[1:3])
    out = conv(self.channels, 3, "bottleneck")(jnp.concatenate([identity, out], axis=-1), train)
    return base.classify(out, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("psa_head", PSAHead)
