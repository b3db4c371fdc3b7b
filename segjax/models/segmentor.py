"""EncoderDecoder: backbone -> optional neck -> decode head (+ auxiliary heads).

The common shape of most segmentation models (mmseg's EncoderDecoder). Models that do not
split this way (U-Net, SegNet) register a whole module in MODELS instead; both return
`(logits, aux_logits)` so losses, training and evaluation never look inside.
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.registry import BACKBONES, HEADS, MODELS, NECKS


class EncoderDecoder(nn.Module):
  backbone: nn.Module
  decode_head: nn.Module
  neck: Optional[nn.Module] = None
  aux_heads: Sequence[nn.Module] = ()

  def __call__(self, images: jnp.ndarray, train: bool = False
               ) -> Tuple[jnp.ndarray, Tuple[jnp.ndarray, ...]]:
    """images: normalised NHWC floats. Returns logits at the head's resolution (1/4 for
    SegFormer) and a tuple of auxiliary logits; callers resize them to the labels."""
    features = self.backbone(images, train=train)
    if self.neck is not None:
      features = self.neck(features, train=train)
    logits = self.decode_head(features, train=train)
    aux = tuple(head(features, train=train) for head in self.aux_heads)
    return logits, aux


def build_encoder_decoder(num_classes: int, backbone, decode_head, neck=None, aux_heads=(),
                          dtype: Any = None) -> EncoderDecoder:
  """Builds each part from its config (a mapping with "name"); see configs/common.py."""
  aux = []
  for i, head_cfg in enumerate(aux_heads):
    head_cfg = {k: v for k, v in dict(head_cfg).items() if k != "loss_weight"}
    aux.append(HEADS.build(head_cfg, f"model.aux_heads[{i}]", num_classes=num_classes,
                           dtype=dtype))
  return EncoderDecoder(
      backbone=BACKBONES.build(backbone, "model.backbone", dtype=dtype),
      decode_head=HEADS.build(decode_head, "model.decode_head", num_classes=num_classes,
                              dtype=dtype),
      neck=NECKS.build(neck, "model.neck", dtype=dtype) if neck else None,
      aux_heads=tuple(aux))


MODELS.register("encoder_decoder", build_encoder_decoder)
