"""ANN's head (Zhu et al. 2019, "Asymmetric Non-local Neural Networks"; mmseg's ANNHead).

Non-local attention made cheap by asymmetry: queries are all H x W positions, but keys and
values are pyramid-pooled to 1 + 9 + 36 + 64 = 110 positions (adaptive pooling, so any input
size works). AFNB fuses the stage-3 map (keys) into the stage-4 map (queries); APNB is the
same attention of the fused map on itself:

    stage3 (low) ---+
                    +-- fusion (AFNB) -- dropout -- bottleneck -- context (APNB) -- classify
    stage4 (high) --+

    attention(q, kv) = out_project(softmax(Q K^T / sqrt(C')) V),  K, V = pool(key/value(kv))
    AFNB = bottleneck([attention(high, low), high]);  APNB = bottleneck([attention(x, x), x])
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.heads import base
from segjax.models.registry import HEADS


def pyramid_pool_flat(x: jnp.ndarray, pool_scales: Sequence[int]) -> jnp.ndarray:
  """mmseg's PPMConcat: (N, H, W, C) -> (N, sum(s*s), C), adaptive average pools flattened
  row-major and concatenated scale after scale."""
  n, _, _, c = x.shape
  return jnp.concatenate([layers.adaptive_avg_pool(x, (s, s)).reshape(n, s * s, c)
                          for s in pool_scales], axis=1)


class SelfAttentionBlock(nn.Module):
  """mmseg's ANN SelfAttentionBlock: query/key projections are 1x1 ConvBNActs, value and
  out projections plain 1x1 convs with bias; keys and values pyramid-pooled after their
  projection; similarities scaled by 1/sqrt(channels). With `share_key_query` (APNB) one
  projection, `key_project`, serves both (mmseg registers that module under both names)."""
  channels: int
  out_channels: int
  share_key_query: bool
  key_pool_scales: Sequence[int]
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, query_feats: jnp.ndarray, key_feats: jnp.ndarray, train: bool):
    n, h, w, _ = query_feats.shape

    def project(name):
      return layers.ConvBNAct(self.channels, 1, dtype=self.dtype, name=name)

    key_project = project("key_project")
    query_project = key_project if self.share_key_query else project("query_project")
    query = query_project(query_feats, train).reshape(n, h * w, self.channels)
    key = pyramid_pool_flat(key_project(key_feats, train), self.key_pool_scales)
    value = layers.Conv(self.channels, (1, 1), dtype=self.dtype, name="value_project")(key_feats)
    value = pyramid_pool_flat(value, self.key_pool_scales)
    sim = jnp.einsum("nqc,nkc->nqk", query, key) * self.channels ** -0.5
    sim = jax.nn.softmax(sim.astype(jnp.float32), axis=-1).astype(value.dtype)
    context = jnp.einsum("nqk,nkc->nqc", sim, value).reshape(n, h, w, self.channels)
    return layers.Conv(self.out_channels, (1, 1), dtype=self.dtype, name="out_project")(context)


class AFNB(nn.Module):
  """Asymmetric fusion non-local block: high-level queries attend to pooled low-level keys;
  the context, concatenated with the queries, is fused by a 1x1 conv + BN (no activation)."""
  channels: int
  out_channels: int
  query_scales: Sequence[int]
  key_pool_scales: Sequence[int]
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, low_feats, high_feats, train: bool):
    context = sum(
        SelfAttentionBlock(self.channels, self.out_channels, share_key_query=False,
                           key_pool_scales=self.key_pool_scales, dtype=self.dtype,
                           name=f"stages_{i}")(high_feats, low_feats, train)
        for i in range(len(self.query_scales)))
    return layers.ConvBNAct(self.out_channels, 1, activation=None, dtype=self.dtype,
                            name="bottleneck")(
                                jnp.concatenate([context, high_feats], axis=-1), train)


class APNB(nn.Module):
  """Asymmetric pyramid non-local block: self-attention with pooled keys (key and query
  projections shared), then [context, input] fused by a 1x1 ConvBNAct."""
  channels: int
  out_channels: int
  query_scales: Sequence[int]
  key_pool_scales: Sequence[int]
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, train: bool):
    context = sum(
        SelfAttentionBlock(self.channels, self.out_channels, share_key_query=True,
                           key_pool_scales=self.key_pool_scales, dtype=self.dtype,
                           name=f"stages_{i}")(x, x, train)
        for i in range(len(self.query_scales)))
    return layers.ConvBNAct(self.out_channels, 1, dtype=self.dtype, name="bottleneck")(
        jnp.concatenate([context, x], axis=-1), train)


class ANNHead(nn.Module):
  num_classes: int
  in_index: Sequence[int] = (2, 3)  # (low, high): the stage-3 and stage-4 maps
  channels: int = 512
  project_channels: int = 256
  # One attention stage per entry. mmseg max-pools the queries of a stage by its scale but
  # then reshapes the context to the unpooled size, which fails for any scale but 1.
  query_scales: Sequence[int] = (1,)
  key_pool_scales: Sequence[int] = (1, 3, 6, 8)
  dropout: float = 0.1
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    if any(s != 1 for s in self.query_scales):
      raise ConfigError(f"ann_head.query_scales must all be 1 (mmseg's ANNHead fails for "
                        f"others too), got {tuple(self.query_scales)}")
    low, high = base.select_inputs(features, self.in_index, "multiple_select")
    x = AFNB(channels=self.project_channels, out_channels=high.shape[-1],
             query_scales=self.query_scales, key_pool_scales=self.key_pool_scales,
             dtype=self.dtype, name="fusion")(low, high, train)
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2))(x, deterministic=not train)
    x = layers.ConvBNAct(self.channels, 3, dtype=self.dtype, name="bottleneck")(x, train)
    x = APNB(channels=self.project_channels, out_channels=self.channels,
             query_scales=self.query_scales, key_pool_scales=self.key_pool_scales,
             dtype=self.dtype, name="context")(x, train)
    return base.classify(x, self.num_classes, self.dropout, train, self.dtype)


HEADS.register("ann_head", ANNHead)
