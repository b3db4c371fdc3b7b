"""Segmenter's mask transformer decoder (Strudel et al., "Segmenter: Transformer for Semantic
Segmentation", ICCV 2021), as mmseg's SegmenterMaskTransformerHead, and the `segmenter`
model that carries it.

    ViT patch tokens (1/16) -> Linear `dec_proj` -> [tokens | K learnt class embeddings `cls_emb`]
      -> num_layers ViT blocks `layers_i` -> LayerNorm `decoder_norm`
      -> patches: Linear `patch_proj`, classes: Linear `classes_proj` (no biases), both
         L2-normalised -> masks = patches . classes^T (cosine similarities, one per class)
      -> LayerNorm over the K classes `mask_norm` -> (B, H/16, W/16, K) logits

The blocks are the backbone's (segjax.models.backbones.vit.TransformerEncoderLayer), with
mmseg's head defaults: LayerNorm eps 1e-5 (torch's default; the backbone uses 1e-6) and
stochastic depth up to 0.1. The linear decoder of the paper is `fcn_head` with num_convs=0
(mmseg's segmenter_vit-s_fcn config).

`segmenter` (MODELS) is EncoderDecoder with its logits bilinearly resized to the input size
inside the model, which is what mmseg's encode_decode and its losses do anyway (one resize
from the 1/16 masks to the image): the trainer and evaluation then find logits already at
the label/image size and their own resize is a no-op, so the result is mmseg's exactly and
the logits are never at the 1/16 patch grid the rest of segjax does not expect (>= 1/8).
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from segjax.models import layers, segmentor
from segjax.models.backbones.vit import TransformerEncoderLayer
from segjax.models.heads import base
from segjax.models.registry import HEADS, MODELS


def _l2_normalise(x: jnp.ndarray) -> jnp.ndarray:
  """torch's F.normalize(x, dim=-1): x / max(||x||, 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SegmenterMaskTransformerHead(nn.Module):
  num_classes: int
  in_index: base.Index = -1
  num_layers: int = 2
  num_heads: int = 12
  embed_dims: int = 768
  mlp_ratio: float = 4
  drop_rate: float = 0.0
  drop_path_rate: float = 0.1
  qkv_bias: bool = True
  layer_norm_eps: float = 1e-5
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    x = base.select_inputs(features, self.in_index)
    b, h, w, c = x.shape
    k, d = self.num_classes, self.embed_dims
    x = layers.Dense(d, dtype=self.dtype, name="dec_proj")(x.reshape(b, h * w, c))
    cls_emb = self.param("cls_emb", nn.initializers.truncated_normal(0.02), (1, k, d),
                         jnp.float32)
    x = jnp.concatenate([x, jnp.broadcast_to(cls_emb, (b, k, d)).astype(x.dtype)], axis=1)
    rates = np.linspace(0.0, self.drop_path_rate, self.num_layers).tolist()
    for i in range(self.num_layers):
      x = TransformerEncoderLayer(self.num_heads, self.mlp_ratio, self.drop_rate, rates[i],
                                  self.qkv_bias, self.layer_norm_eps, dtype=self.dtype,
                                  name=f"layers_{i}")(x, train)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="decoder_norm")(x)
    patches = layers.Dense(d, use_bias=False, dtype=self.dtype, name="patch_proj")(x[:, :-k])
    classes = layers.Dense(d, use_bias=False, dtype=self.dtype, name="classes_proj")(x[:, -k:])
    masks = jnp.einsum("bpd,bkd->bpk", _l2_normalise(patches), _l2_normalise(classes))
    masks = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="mask_norm")(masks)
    return masks.reshape(b, h, w, k)


class EncoderDecoderAtInputSize(segmentor.EncoderDecoder):
  """EncoderDecoder whose main logits are resized to the input (see the module docstring).
  Same fields and parameter names as EncoderDecoder."""

  def __call__(self, images: jnp.ndarray, train: bool = False):
    logits, aux = super().__call__(images, train=train)
    return layers.resize_bilinear(logits, images.shape[1:3]), aux


def build_segmenter(num_classes: int, backbone, decode_head, neck=None, auxiliary_head=(),
                    dtype: Any = None) -> EncoderDecoderAtInputSize:
  """`encoder_decoder`'s config (segjax.models.segmentor.build_encoder_decoder)."""
  model = segmentor.build_encoder_decoder(num_classes, backbone, decode_head, neck,
                                          auxiliary_head, dtype)
  return EncoderDecoderAtInputSize(
      backbone=model.backbone, decode_head=model.decode_head, neck=model.neck,
      auxiliary_head=model.auxiliary_head, aux_loss_weights=model.aux_loss_weights,
      output_losses=model.output_losses)


HEADS.register("segmenter_mask_head", SegmenterMaskTransformerHead)
MODELS.register("segmenter", build_segmenter)
