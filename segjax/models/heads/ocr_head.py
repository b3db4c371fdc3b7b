"""OCR head (Yuan et al. 2020, "Object-Contextual Representations"; mmseg's OCRHead), the
second stage of OCRNet's cascade.

The first stage's coarse logits are soft object regions: each class's softmax over the
image weights the pixel features into one object representation per class (spatial
gather). Every pixel then attends to those K object representations (object attention), and
its own feature concatenated with that object context is fused (`bottleneck`) and
classified.

mmseg's `scale` option (a sharper region softmax and max-pooled queries) is left out: every
mmseg config keeps scale 1, and with scale > 1 its forward fails (a resize without a size).

Names follow mmseg's (`bottleneck`, `object_context_block/key_project_0`,
`.../value_project`, `.../out_project`, `.../bottleneck`), so checkpoints convert by name.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


def spatial_gather(feats: jnp.ndarray, probs: jnp.ndarray) -> jnp.ndarray:
  """(B, K, C) object representations: per class k, the features averaged with weights
  softmax over all pixels of the class's logits (mmseg's SpatialGatherModule, scale 1).

  feats: (B, H, W, C); probs: (B, H, W, K) logits of the previous stage."""
  b, _, _, c = feats.shape
  weights = jax.nn.softmax(probs.reshape(b, -1, probs.shape[-1]), axis=1)
  return jnp.einsum("bnk,bnc->bkc", weights, feats.reshape(b, -1, c))


class ObjectAttentionBlock(nn.Module):
  """Pixels (queries) attend to object representations (keys and values); mmseg's
  SelfAttentionBlock as OCR configures it: two 1x1 ConvBNActs for query and key, one for
  value and out, scaled dot product, then `bottleneck` on [context, pixel features]."""
  ocr_channels: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, feats: jnp.ndarray, objects: jnp.ndarray, train: bool):
    """feats: (B, H, W, C) pixels; objects: (B, K, C). Returns (B, H, W, C)."""
    b, h, w, c = feats.shape

    def project(x, name, num_convs=1, features=self.ocr_channels):
      for i in range(num_convs):
        x = layers.ConvBNAct(features, 1, dtype=self.dtype,
                             name=f"{name}_{i}" if num_convs > 1 else name)(x, train)
      return x

    objects = objects[:, :, None, :]  # a K x 1 image, as mmseg's (B, C, K, 1) tensor
    query = project(feats, "query_project", 2).reshape(b, h * w, -1)
    key = project(objects, "key_project", 2).reshape(b, -1, self.ocr_channels)
    value = project(objects, "value_project").reshape(b, -1, self.ocr_channels)
    sim = jax.nn.softmax(jnp.einsum("bnd,bkd->bnk", query, key) * self.ocr_channels ** -0.5,
                         axis=-1)
    context = jnp.einsum("bnk,bkd->bnd", sim, value).reshape(b, h, w, self.ocr_channels)
    context = project(context, "out_project", features=c)
    return layers.ConvBNAct(c, 1, dtype=self.dtype, name="bottleneck")(
        jnp.concatenate([context, feats], axis=-1), train)


class OCRHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1  # OCRNet-HRNet: (0, 1, 2, 3) with "resize_concat"
  input_transform: Optional[str] = None
  channels: int = 512
  ocr_channels: int = 256
  dropout: float = 0.1  # mmseg's default; its OCRNet configs turn it off
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], prev_logits: jnp.ndarray,
               train: bool = False):
    x = base.select_inputs(features, self.in_index, self.input_transform)
    feats = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
    # Both stages read maps of one stride in every mmseg config; should the earlier one
    # predict at another, its regions are resized to these features (mmseg would fail).
    objects = spatial_gather(feats, layers.resize_to(prev_logits, feats))
    x = ObjectAttentionBlock(self.ocr_channels, dtype=self.dtype,
                             name="object_context_block")(feats, objects, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("ocr_head", OCRHead)
