"""MaskFormer (Cheng, Schwing and Kirillov, "Per-Pixel Classification is Not All You Need for
Semantic Segmentation", NeurIPS 2021): segmentation as mask classification.

    image -- backbone --> 1/4 1/8 1/16 1/32 maps
      pixel decoder (FPN, GroupNorm) on all four --> per-pixel embeddings E (1/4, C_mask)
      transformer decoder: Q learned queries attend to the 1/32 map (+ sine positions),
        L post-norm DETR layers --> Q segment embeddings after every layer
      per segment: class logits over K + 1 (the last = "no object"), mask embedding m_q
      mask logits = <m_q, E(pixel)>              (Q masks at 1/4)
      semantic map = sum_q softmax(class_q)[:K] * sigmoid(mask_q)   (what evaluation arg-maxes)

Training (`MaskFormer.training_loss`, the trainer calls it instead of a per-pixel loss): the
ground truth of an image is one binary mask per class present in its label map. After every
decoder layer the Q predictions are matched one-to-one to those segments by the Hungarian
algorithm on the cost  -p(class) * 1 + 20 * focal + 1 * dice  (masks compared at the
prediction's 1/4 resolution, labels nearest-downsampled), then supervised with cross-entropy
over K + 1 classes (no-object weight 0.1) for every query, and sigmoid focal (weight 20) and
dice (weight 1) losses on the matched masks upsampled to the labels. The same loss as HF
transformers' MaskFormerLoss / mmdet's MaskFormerHead, which tests/test_maskformer.py checks.
The earlier layers' predictions are made from their outputs through the decoder's final
LayerNorm, as in the paper's code and mmdet. (HF's own `use_auxiliary_loss=True` path, with
its default DETR config, instead feeds each layer's un-normed *input*, the first being all
zeros, to the heads; segjax does not copy that, and the test feeds HF's criterion the
paper's predictions.)

The matching runs inside the jitted step: `linear_sum_assignment` is scipy's algorithm (Crouse's
shortest augmenting path, the same visiting order and tie-breaking) written with lax loops, so
it is deterministic, needs no host round trip, and works with the batch sharded over any
devices and hosts.

Names follow HF's MaskFormerForInstanceSegmentation (`pixel_level_module/decoder/fpn/stem_0`,
`transformer_module/decoder/layers_0/self_attn/q_proj`, `class_predictor`,
`mask_embedder/layers_0`), except that HF's `pixel_level_module.encoder` is segjax's usual
top-level `backbone`, so ImageNet encoder checkpoints (`--config.init_from`), `lr_mults`
regexes and layer-decay rules see it as in every other model.
"""
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from segjax.data.base import IGNORE_INDEX
from segjax.errors import ConfigError
from segjax.models import layers
from segjax.models.registry import BACKBONES, MODELS

Dtype = Any


# ------------------------------------------------------------------------------------------
# Pixel decoder: an FPN with GroupNorm (HF's MaskFormerPixelDecoder, mmdet's PixelDecoder).


def _conv_gn(parent_name: str, features: int, kernel: int, relu: bool, dtype):
  """Conv (no bias) -> GroupNorm(32) [-> ReLU] as HF's Sequential of two modules, named
  `<parent_name>_0` (conv) and `<parent_name>_1` (norm)."""
  def apply(x):
    p = kernel // 2
    x = layers.Conv(features, (kernel, kernel), padding=((p, p), (p, p)), use_bias=False,
                dtype=dtype, name=f"{parent_name}_0")(x)
    x = nn.GroupNorm(num_groups=32, epsilon=1e-5, dtype=dtype, name=f"{parent_name}_1")(x)
    return nn.relu(x) if relu else x
  return apply


class FPNLayer(nn.Module):
  """One top-down step: lateral 1x1 conv + GN on the finer map, the coarser result
  nearest-upsampled and added, then 3x3 conv + GN + ReLU (HF's MaskFormerFPNLayer)."""
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, down, left):
    left = _conv_gn("proj", self.features, 1, False, self.dtype)(left)
    down = layers.resize_nearest(down, left.shape[1:3]) + left
    return _conv_gn("block", self.features, 3, True, self.dtype)(down)


class FPN(nn.Module):
  features: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
    out = _conv_gn("stem", self.features, 3, True, self.dtype)(features[-1])
    for i, left in enumerate(reversed(features[:-1])):
      out = FPNLayer(self.features, dtype=self.dtype, name=f"layers_{i}")(out, left)
    return out  # the finest (1/4) map


class PixelDecoder(nn.Module):
  """FPN over the backbone maps, then a 3x3 conv to the per-pixel mask embeddings."""
  fpn_feature_size: int
  mask_feature_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
    x = FPN(self.fpn_feature_size, dtype=self.dtype, name="fpn")(features)
    return layers.Conv(self.mask_feature_size, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                   name="mask_projection")(x)


class PixelLevelModule(nn.Module):
  """HF's pixel_level_module minus its encoder (segjax's top-level `backbone`)."""
  fpn_feature_size: int
  mask_feature_size: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
    return PixelDecoder(self.fpn_feature_size, self.mask_feature_size, dtype=self.dtype,
                        name="decoder")(features)


# ------------------------------------------------------------------------------------------
# Transformer decoder (DETR's, post-norm).


def sine_position_embedding(height: int, width: int, num_pos_feats: int,
                            temperature: float = 10000.0) -> np.ndarray:
  """(H*W, 2 * num_pos_feats) float32: DETR's normalised sine embedding of an unpadded map,
  [sin/cos of y, sin/cos of x] with sin and cos interleaved (HF's
  MaskFormerSinePositionEmbedding(normalize=True), mmdet's SinePositionalEncoding)."""
  f32 = np.float32
  scale, eps = f32(2 * np.pi), f32(1e-6)
  y = np.arange(1, height + 1, dtype=f32)[:, None] * np.ones((1, width), f32)
  x = np.ones((height, 1), f32) * np.arange(1, width + 1, dtype=f32)[None, :]
  y = y / (f32(height) + eps) * scale
  x = x / (f32(width) + eps) * scale
  dim_t = np.arange(num_pos_feats, dtype=f32)
  dim_t = f32(temperature) ** (f32(2) * np.floor(dim_t / 2) / f32(num_pos_feats))

  def embed(pos):
    pos = pos[:, :, None] / dim_t.astype(f32)
    return np.stack((np.sin(pos[:, :, 0::2]), np.cos(pos[:, :, 1::2])),
                    axis=3).reshape(height, width, -1)
  return np.concatenate([embed(y), embed(x)], axis=-1).reshape(height * width, -1).astype(f32)


class DetrAttention(nn.Module):
  """Multi-head attention with separate q/k/v projections (HF's DetrAttention); positions
  are added to queries and keys by the caller."""
  num_heads: int
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, queries, keys, values):
    b, nq, d = queries.shape
    heads = self.num_heads
    if d % heads:
      raise ConfigError(f"maskformer hidden_size {d} is not a multiple of "
                        f"decoder_attention_heads {heads}")
    dense = functools.partial(layers.Dense, d, dtype=self.dtype)
    q = dense(name="q_proj")(queries).reshape(b, nq, heads, d // heads)
    k = dense(name="k_proj")(keys).reshape(b, keys.shape[1], heads, d // heads)
    v = dense(name="v_proj")(values).reshape(b, values.shape[1], heads, d // heads)
    out = layers.dot_product_attention(q, k, v)
    return dense(name="out_proj")(out.reshape(b, nq, d))


class DetrDecoderLayer(nn.Module):
  """Self-attention among the queries, cross-attention to the image, FFN; each a residual
  followed by LayerNorm (post-norm). Dropout after each branch (`dropout`) and after the
  FFN's activation (`activation_dropout`), as HF's DetrDecoderLayer."""
  num_heads: int
  ffn_dim: int
  dropout: float = 0.1
  activation_dropout: float = 0.0
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, memory, query_pos, pos, train: bool):
    norm = functools.partial(nn.LayerNorm, epsilon=1e-5, dtype=self.dtype)
    drop = lambda y, rate: nn.Dropout(rate)(y, deterministic=not train)  # noqa: E731
    q = x + query_pos
    y = DetrAttention(self.num_heads, dtype=self.dtype, name="self_attn")(q, q, x)
    x = norm(name="self_attn_layer_norm")(x + drop(y, self.dropout))
    y = DetrAttention(self.num_heads, dtype=self.dtype, name="encoder_attn")(
        x + query_pos, memory + pos, memory)
    x = norm(name="encoder_attn_layer_norm")(x + drop(y, self.dropout))
    y = nn.relu(layers.Dense(self.ffn_dim, dtype=self.dtype, name="fc1")(x))
    y = layers.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(drop(y, self.activation_dropout))
    return norm(name="final_layer_norm")(x + drop(y, self.dropout))


class DetrDecoder(nn.Module):
  """The layers and their shared final LayerNorm. Returns (L, B, Q, D): the normed output of
  every layer (the paper's and mmdet's `return_intermediate`); the last is HF's
  `transformer_decoder_last_hidden_state`."""
  num_layers: int
  num_heads: int
  ffn_dim: int
  dropout: float = 0.1
  activation_dropout: float = 0.0
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, memory, query_pos, pos, train: bool):
    final_norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="layernorm")
    outs = []
    for i in range(self.num_layers):
      x = DetrDecoderLayer(self.num_heads, self.ffn_dim, self.dropout, self.activation_dropout,
                           dtype=self.dtype, name=f"layers_{i}")(x, memory, query_pos, pos,
                                                                 train)
      outs.append(final_norm(x))
    return jnp.stack(outs)


class TransformerModule(nn.Module):
  """Learned queries decoded against the (projected) 1/32 map (HF's
  MaskFormerTransformerModule): queries start at zero with the learned embeddings as their
  positions; the image tokens carry the sine positions."""
  num_queries: int
  hidden_size: int
  num_layers: int
  num_heads: int
  ffn_dim: int
  dropout: float = 0.1
  activation_dropout: float = 0.0
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, image_features, train: bool):
    b, h, w, c = image_features.shape
    d = self.hidden_size
    if c != d:  # HF: a projection only when the widths differ
      image_features = layers.Conv(d, (1, 1), dtype=self.dtype,
                               name="input_projection")(image_features)
    memory = image_features.reshape(b, h * w, d)
    pos = jnp.asarray(sine_position_embedding(h, w, d // 2), memory.dtype)[None]
    query_pos = nn.Embed(self.num_queries, d, embedding_init=nn.initializers.normal(1.0),
                         name="queries_embedder")(jnp.arange(self.num_queries))
    query_pos = jnp.broadcast_to(query_pos.astype(memory.dtype), (b, self.num_queries, d))
    return DetrDecoder(self.num_layers, self.num_heads, self.ffn_dim, self.dropout,
                       self.activation_dropout, dtype=self.dtype, name="decoder")(
                           jnp.zeros_like(query_pos), memory, query_pos, pos, train)


class MLP(nn.Module):
  """Linear-ReLU-Linear-ReLU-Linear (HF's MaskformerMLPPredictionHead, `layers_i`)."""
  hidden: int
  out: int
  num_layers: int = 3
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = layers.Dense(self.out if last else self.hidden, dtype=self.dtype,
                       name=f"layers_{i}")(x)
      x = x if last else nn.relu(x)
    return x


# ------------------------------------------------------------------------------------------
# The model.


class MaskFormer(nn.Module):
  """backbone -> pixel decoder + transformer decoder -> (semantic map at 1/4, aux).

  `aux` holds the predictions of every decoder layer, which training_loss supervises:
  {"class_queries_logits": (L, B, Q, K + 1), "masks_queries_logits": (L, B, h, w, Q)}
  (the last layer's are HF's outputs, masks channel-last). Evaluation reads only the
  semantic map; the per-layer heads then cost nothing under jit (dead code).
  """
  backbone: nn.Module
  num_classes: int
  num_queries: int = 100
  hidden_size: int = 256  # the transformer decoder's width (HF decoder_config.d_model)
  decoder_layers: int = 6
  decoder_attention_heads: int = 8
  decoder_ffn_dim: int = 2048
  dropout: float = 0.1
  activation_dropout: float = 0.0
  fpn_feature_size: int = 256
  mask_feature_size: int = 256
  # Criterion (HF's MaskFormerConfig names): loss weights, which are also the matching costs
  # of the mask terms (the class cost weight is 1), and the no-object class weight.
  cross_entropy_weight: float = 1.0
  mask_weight: float = 20.0
  dice_weight: float = 1.0
  no_object_weight: float = 0.1
  # Supervise every decoder layer (the paper's deep supervision); False: the last only.
  deep_supervision: bool = True
  aux_loss_weights: Tuple[float, ...] = ()  # no per-pixel auxiliary outputs
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False
               ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
    features = self.backbone(images, train=train)
    if len(features) != 4:
      raise ConfigError(f"maskformer needs a backbone with four maps (1/4 .. 1/32), got "
                        f"{len(features)}")
    pixel_embeddings = PixelLevelModule(self.fpn_feature_size, self.mask_feature_size,
                                        dtype=self.dtype, name="pixel_level_module")(features)
    queries = TransformerModule(self.num_queries, self.hidden_size, self.decoder_layers,
                                self.decoder_attention_heads, self.decoder_ffn_dim,
                                self.dropout, self.activation_dropout, dtype=self.dtype,
                                name="transformer_module")(features[-1], train)
    class_logits = layers.Dense(self.num_classes + 1, dtype=self.dtype,
                                name="class_predictor")(queries)
    mask_embeddings = MLP(self.hidden_size, self.mask_feature_size, dtype=self.dtype,
                          name="mask_embedder")(queries)
    mask_logits = jnp.einsum("lbqc,bhwc->lbhwq", mask_embeddings,
                             pixel_embeddings.astype(mask_embeddings.dtype))
    semantic = semantic_inference(class_logits[-1], mask_logits[-1])
    return semantic, {"class_queries_logits": class_logits, "masks_queries_logits": mask_logits}

  def training_loss(self, logits, aux, labels) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
    """The MaskFormer criterion (see the module docstring) on `aux`; `logits` unused.

    Returns (loss, parts): the weighted cross-entropy, focal and dice terms of the last layer
    and the sum over the earlier layers ("loss_aux")."""
    del logits
    per_layer = maskformer_loss(
        aux["class_queries_logits"], aux["masks_queries_logits"], labels, self.num_classes,
        self.cross_entropy_weight, self.mask_weight, self.dice_weight, self.no_object_weight,
        layers_supervised=None if self.deep_supervision else 1)
    totals = per_layer["loss_cross_entropy"] + per_layer["loss_mask"] + per_layer["loss_dice"]
    parts = {k: v[-1] for k, v in per_layer.items()}
    parts["loss_aux"] = jnp.sum(totals[:-1])
    return jnp.sum(totals), parts


def semantic_inference(class_logits: jnp.ndarray, mask_logits: jnp.ndarray) -> jnp.ndarray:
  """(B, h, w, K): sum over queries of p(class) * p(pixel in mask), the paper's semantic
  inference (HF's post_process_semantic_segmentation before its resize and argmax)."""
  probs = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., :-1]
  return jnp.einsum("bqk,bhwq->bhwk", probs, jax.nn.sigmoid(mask_logits.astype(jnp.float32)))


# ------------------------------------------------------------------------------------------
# Hungarian matching in JAX: scipy.optimize.linear_sum_assignment's algorithm.


def linear_sum_assignment(cost: jnp.ndarray, num_rows, num_cols) -> jnp.ndarray:
  """col4row (R,) int32 of the minimum-cost assignment of rows [0, num_rows) to distinct
  columns of [0, num_cols), num_rows <= num_cols; -1 for rows >= num_rows.

  `cost` is (R, C) with the problem in its top-left corner; num_rows / num_cols may be traced
  (so one static shape serves every image), and the function vmaps. It is scipy's
  rectangular_lsap.cpp step for step (Crouse 2016, shortest augmenting paths with
  Jonker-Volgenant's dual updates): the same order of the `remaining` columns (filled in
  reverse, swap-removed), the same choice among equally short paths (the first in that
  order, or the last one ending at a free column), the same dual updates in the same
  floating-point order. So equal costs give scipy's assignment, ties included; in float32
  rather than scipy's float64, only near-ties (relative differences ~1e-7) may resolve
  differently.
  """
  num_r, num_c = cost.shape
  cost = cost.astype(jnp.float32)
  inf = jnp.float32(jnp.inf)
  cols = jnp.arange(num_c)
  rows = jnp.arange(num_r)
  valid_col = cols < num_cols

  def shortest_path(cur_row, u, v, row4col):
    """Crouse's augmenting_path: (sink, min_val, shortest path costs, path, SR, SC)."""
    def cond(s):
      return s[-1] < 0

    def body(s):
      i, min_val, spc, path, sr, sc, remaining, num_remaining, _ = s
      sr = sr.at[i].set(True)
      r = min_val + cost[i] - u[i] - v
      better = (~sc) & valid_col & (r < spc)
      path = jnp.where(better, i, path)
      spc = jnp.where(better, r, spc)
      # Scan `remaining` in order: keep the first minimum, or a later tie at a free column.
      live = cols < num_remaining  # positions in `remaining`
      vals = spc[remaining]
      lowest = jnp.min(jnp.where(live, vals, inf))
      tied = live & (vals == lowest)
      tied_free = tied & (row4col[remaining] == -1)
      first = jnp.argmax(tied)
      last_free = num_c - 1 - jnp.argmax(tied_free[::-1])
      index = jnp.where(jnp.any(tied_free), last_free, first)
      j = remaining[index]
      free = row4col[j] == -1
      sink = jnp.where(free, j, -1)
      i = jnp.where(free, i, row4col[j])
      sc = sc.at[j].set(True)
      remaining = remaining.at[index].set(remaining[num_remaining - 1])
      return i, lowest, spc, path, sr, sc, remaining, num_remaining - 1, sink

    init = (cur_row, jnp.float32(0), jnp.full((num_c,), inf), jnp.full((num_c,), -1),
            jnp.zeros((num_r,), bool), jnp.zeros((num_c,), bool),
            jnp.where(valid_col, num_cols - 1 - cols, 0).astype(jnp.int32),
            jnp.asarray(num_cols, jnp.int32), jnp.int32(-1))
    _, min_val, spc, path, sr, sc, _, _, sink = jax.lax.while_loop(cond, body, init)
    return sink, min_val, spc, path, sr, sc

  def add_row(cur_row, state):
    u, v, col4row, row4col = state
    sink, min_val, spc, path, sr, sc = shortest_path(cur_row, u, v, row4col)
    # Dual updates (scipy: u[curRow] first, then the other rows of the tree, then columns).
    u = u.at[cur_row].add(min_val)
    u = jnp.where(sr & (rows != cur_row), u + (min_val - spc[jnp.maximum(col4row, 0)]), u)
    v = jnp.where(sc, v - (min_val - spc), v)

    def aug_cond(s):
      return ~s[-1]

    def aug_body(s):  # walk the path back from the sink, flipping its edges
      j, col4row, row4col, _ = s
      i = path[j]
      row4col = row4col.at[j].set(i)
      j_next = col4row[i]
      col4row = col4row.at[i].set(j)
      return j_next, col4row, row4col, i == cur_row

    _, col4row, row4col, _ = jax.lax.while_loop(
        aug_cond, aug_body, (sink, col4row, row4col, jnp.asarray(False)))
    return u, v, col4row, row4col

  state = (jnp.zeros((num_r,), jnp.float32), jnp.zeros((num_c,), jnp.float32),
           jnp.full((num_r,), -1, jnp.int32), jnp.full((num_c,), -1, jnp.int32))
  _, _, col4row, _ = jax.lax.fori_loop(0, num_rows, add_row, state)
  return col4row


def match_queries(cost: jnp.ndarray, present: jnp.ndarray) -> jnp.ndarray:
  """(Q,) int32: the class each query is matched to, or K (no object).

  cost: (Q, K) matching cost of every query against every class's mask; present: (K,) bool,
  the classes in the image. The targets are the present classes in ascending order, and the
  problem is what HF passes to scipy, `linear_sum_assignment(cost[:, present])`, solved the
  way scipy solves it: transposed (targets as rows) when there are fewer targets than queries.
  """
  q, k = cost.shape
  n = max(q, k)
  order = jnp.argsort(~present, stable=True)  # present classes first, ascending
  num_targets = jnp.sum(present).astype(jnp.int32)
  targets_cost = cost[:, order]  # (Q, K), the first num_targets columns real
  transpose = num_targets < q  # scipy transposes a tall matrix only
  square = jnp.where(transpose, jnp.pad(targets_cost.T, ((0, n - k), (0, n - q))),
                     jnp.pad(targets_cost, ((0, n - q), (0, n - k))))
  col4row = linear_sum_assignment(square, jnp.where(transpose, num_targets, q),
                                  jnp.where(transpose, q, num_targets))
  slots = jnp.arange(n)
  # Transposed: row t (a target) -> query col4row[t]. Otherwise row q -> target col4row[q].
  by_target = jnp.full((q,), k, jnp.int32).at[
      jnp.where(slots < num_targets, col4row, q)].set(order[jnp.minimum(slots, k - 1)],
                                                     mode="drop")
  by_query = jnp.where(col4row[:q] >= 0, order[jnp.clip(col4row[:q], 0, k - 1)], k)
  return jnp.where(transpose, by_target, by_query).astype(jnp.int32)


# ------------------------------------------------------------------------------------------
# The criterion.


def _bce_with_logits(x, positive: bool):
  """torch's BCEWithLogits against an all-1 (positive) or all-0 target, elementwise."""
  return jax.nn.softplus(-x) if positive else jax.nn.softplus(x)


def _focal_terms(x, alpha: float = 0.25):
  """Focal loss (gamma 2) of logits `x` against target 1 and against target 0."""
  p = jax.nn.sigmoid(x)
  pos = alpha * (1 - p) ** 2 * _bce_with_logits(x, True)
  neg = (1 - alpha) * p ** 2 * _bce_with_logits(x, False)
  return pos, neg


def matching_cost(class_logits, mask_logits, labels_small, num_classes: int,
                  mask_weight: float, dice_weight: float, class_weight: float = 1.0):
  """(Q, K) cost of one image (HF's MaskFormerHungarianMatcher): class_logits (Q, K+1),
  mask_logits (h, w, Q), labels_small (h, w) nearest-downsampled labels."""
  hp = jax.lax.Precision.HIGHEST
  x = mask_logits.reshape(-1, mask_logits.shape[-1]).T  # (Q, hw)
  hw = x.shape[1]
  onehot = (labels_small.reshape(-1)[:, None] == jnp.arange(num_classes)).astype(jnp.float32)
  cost_class = -jax.nn.softmax(class_logits, axis=-1)[:, :num_classes]
  pos, neg = _focal_terms(x)
  cost_mask = (jnp.matmul(pos, onehot, precision=hp) +
               jnp.matmul(neg, 1 - onehot, precision=hp)) / hw
  p = jax.nn.sigmoid(x)
  numerator = 2 * jnp.matmul(p, onehot, precision=hp)
  denominator = jnp.sum(p, -1)[:, None] + jnp.sum(onehot, 0)[None, :]
  cost_dice = 1 - (numerator + 1) / (denominator + 1)
  return mask_weight * cost_mask + class_weight * cost_class + dice_weight * cost_dice


def maskformer_loss(class_logits, mask_logits, labels, num_classes: int,
                    cross_entropy_weight: float = 1.0, mask_weight: float = 20.0,
                    dice_weight: float = 1.0, no_object_weight: float = 0.1,
                    layers_supervised: Optional[int] = None) -> Dict[str, jnp.ndarray]:
  """Weighted loss terms per decoder layer: {"loss_cross_entropy", "loss_mask", "loss_dice"}
  each (L,) for the last `layers_supervised` layers (None: all).

  class_logits (L, B, Q, K+1), mask_logits (L, B, h, w, Q), labels (B, H, W) with
  IGNORE_INDEX pixels in no mask (negatives everywhere, like HF's targets built from the
  label map). Each layer is matched on its own, as HF and mmdet do. Reductions run over the
  whole global batch: CE is a class-weighted mean over all queries of all images, the mask
  terms are summed over matched segments and divided by the number of segments in the batch
  (HF's num_masks, at least 1), so the loss does not depend on the device count.
  """
  if layers_supervised is not None:
    class_logits, mask_logits = class_logits[-layers_supervised:], mask_logits[-layers_supervised:]
  class_logits = class_logits.astype(jnp.float32)
  mask_logits = mask_logits.astype(jnp.float32)
  k = num_classes
  b, height, width = labels.shape
  h, w = mask_logits.shape[2:4]
  labels = labels.astype(jnp.int32)
  labels = jnp.where((labels >= 0) & (labels < k), labels, IGNORE_INDEX)
  # The targets: one segment per class present at full resolution.
  counts = jax.vmap(lambda l: jnp.zeros((k,), jnp.int32).at[
      jnp.where(l == IGNORE_INDEX, k, l).reshape(-1)].add(1, mode="drop"))(labels)
  present = counts > 0  # (B, K)
  num_masks = jnp.maximum(jnp.sum(present).astype(jnp.float32), 1.0)
  labels_small = layers.resize_nearest(labels[..., None], (h, w))[..., 0]

  cost = jax.vmap(jax.vmap(
      functools.partial(matching_cost, num_classes=k, mask_weight=mask_weight,
                        dice_weight=dice_weight)))(
                            jax.lax.stop_gradient(class_logits),
                            jax.lax.stop_gradient(mask_logits),
                            jnp.broadcast_to(labels_small, (class_logits.shape[0],) +
                                             labels_small.shape))
  targets = jax.vmap(jax.vmap(match_queries), in_axes=(0, None))(cost, present)  # (L, B, Q)

  class_weights = jnp.ones((k + 1,), jnp.float32).at[k].set(no_object_weight)
  w_t = class_weights[targets]
  nll = -jnp.take_along_axis(jax.nn.log_softmax(class_logits, axis=-1), targets[..., None],
                             axis=-1)[..., 0]
  loss_ce = jnp.sum(w_t * nll, axis=(1, 2)) / jnp.sum(w_t, axis=(1, 2))

  @jax.checkpoint  # recompute the full-resolution masks in the backward pass, layer by layer
  def mask_losses(masks, tgt):
    """Focal and dice sums over the matched queries of one layer: masks (B, h, w, Q)."""
    up = layers.resize_bilinear(masks, (height, width))  # (B, H, W, Q)
    matched = (tgt < k).astype(jnp.float32)  # (B, Q)
    y = (labels[..., None] == tgt[:, None, None, :]).astype(jnp.float32)
    pos, neg = _focal_terms(up)
    p = jax.nn.sigmoid(up)
    focal = jnp.mean(pos * y + neg * (1 - y), axis=(1, 2))  # (B, Q)
    numerator = 2 * jnp.sum(p * y, axis=(1, 2))
    denominator = jnp.sum(p, axis=(1, 2)) + jnp.sum(y, axis=(1, 2))
    dice = 1 - (numerator + 1) / (denominator + 1)
    return jnp.sum(focal * matched), jnp.sum(dice * matched)

  focal, dice = [], []
  for layer in range(class_logits.shape[0]):
    f, d = mask_losses(mask_logits[layer], targets[layer])
    focal.append(f)
    dice.append(d)
  return {"loss_cross_entropy": cross_entropy_weight * loss_ce,
          "loss_mask": mask_weight * jnp.stack(focal) / num_masks,
          "loss_dice": dice_weight * jnp.stack(dice) / num_masks}


# ------------------------------------------------------------------------------------------
# Registry.


def build_maskformer(num_classes: int, backbone, dtype: Any = None, decode_head=None,
                     neck=None, auxiliary_head=(), **kwargs) -> MaskFormer:
  """config.model = {"name": "maskformer", "backbone": {...}, **MaskFormer fields}.

  MaskFormer brings its own heads; `decode_head`, `neck` and `auxiliary_head` (the keys of an
  encoder_decoder config, which the registry walk of tests/test_models.py passes) are not
  used, and a warning says so.
  """
  unused = [name for name, value in (("decode_head", decode_head), ("neck", neck),
                                     ("auxiliary_head", auxiliary_head)) if value]
  if unused:
    logging.warning("model.%s: not used by maskformer (its pixel decoder and transformer "
                    "decoder are its heads); ignored", ", model.".join(unused))
  fields = {f for f in MaskFormer.__dataclass_fields__ if f not in ("parent", "name")}
  bad = sorted(set(kwargs) - fields - {"backbone", "num_classes", "dtype"})
  if bad:
    raise ConfigError(f"model: unknown maskformer argument(s) {bad}; known: "
                      f"{sorted(fields - {'backbone', 'num_classes', 'dtype'})}")
  if "aux_loss_weights" in kwargs:
    raise ConfigError("model.aux_loss_weights: maskformer has no per-pixel auxiliary outputs")
  return MaskFormer(backbone=BACKBONES.build(backbone, "model.backbone", dtype=dtype),
                    num_classes=num_classes, dtype=dtype, **kwargs)


MODELS.register("maskformer", build_maskformer)
