"""The fully connected CRF of Krähenbühl & Koltun (NIPS 2011), DeepLab v1/v2's post-processing.

"Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials": every pixel pair
(i, j) is an edge with a Potts penalty weighted by two Gaussian kernels,

    k(i, j) = bi_w  * exp(-|p_i - p_j|^2 / 2 bi_xy_std^2 - |I_i - I_j|^2 / 2 bi_rgb_std^2)
            + pos_w * exp(-|p_i - p_j|^2 / 2 pos_xy_std^2)

(p: pixel position, I: RGB colour 0..255), and mean-field inference runs `num_iterations`
updates  Q <- softmax(-U + sum_m w_m K_m Q)  from Q = softmax(-U), where U = -log p is the
model's softmax (pydensecrf's `unary_from_softmax`, probabilities clipped at 1e-5).

Each K_m Q is a high-dimensional Gaussian filter of the label distributions, approximated with
the permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) exactly as the reference
code does (Krähenbühl's densecrf 2013, which pydensecrf wraps): features scaled by their
stds are lifted onto the d-dimensional permutohedral lattice, each pixel splats its values
onto the d+1 vertices of its simplex with barycentric weights, the lattice is blurred with
[1/2, 1, 1/2] along each of the d+1 lattice directions in turn, and pixels read back
(slice) with the same weights times 1 / (1 + 2^-d). Both kernels use the reference defaults
`DIAG_KERNEL, NORMALIZE_SYMMETRIC` of pydensecrf's DenseCRF2D.addPairwise*: the filter is
D^-1/2 K D^-1/2 with D = K 1, and, as in the reference, the filter includes each pixel's own
term (the 2011 paper subtracted it; the 2013 code it wraps and DeepLab's use do not).

The lattice is built once per image (`Lattice`) and reused by every iteration. In place of
the reference's hash table it uses static shapes only, so it compiles under jit: each lattice
point is packed into one or two int32 words that sort like the point (`_key_layout`, field
ranges bounded statically from the features' ranges); sorting the N * (d+1) simplex corners
merges equal ones into vertices (numbered in key order), and each vertex's two blur
neighbours along each of the d+1 directions (the reference's blur_neighbors) are found by a
binary search of their keys among the vertices. A blur pass is then one fused gather,
v + (v[next] + v[prev]) / 2, and the slice a fused gather too; only the splat scatters.
The number of vertices is known only at run time: the neighbour search and the mean-field
loop run in the smallest of a few static vertex capacities that holds them (lax.switch,
`CAPACITY_FRACTIONS`). The smoothness kernel depends on the image size only: it is built
once per size in numpy (`numpy_lattice`, same numbering) and closed over as constants.

Accuracy (tests/test_crf.py; experiments/perf/crf_speed.py): against pydensecrf2 1.1 on a
500x375 VOC photo with DeepLab v1's parameters the labels agree on 100% of the pixels and
the marginals within 2.3e-5; with DeepLab v2's (bilateral 67/3, pos_xy_std 1) labels agree
on 100%, marginals within 5e-5 to 4.4e-3 (XLA folds constant products and divides by
multiplying with the reciprocal: one-ulp differences in lattice coordinates, which can move a
pixel on a simplex boundary). The approximation itself is the reference's: the normalised
lattice filter differs from the exact normalised Gaussian filter by a relative L2 error of
~6% (DeepLab v2's appearance kernel on a 40x60 crop of that photo).

Defaults are DeepLab-CRF-LargeFOV's (DeepLab v1, ICLR 2015): 10 iterations, bi_w = 4,
bi_xy_std = 121, bi_rgb_std = 5, pos_w = 3, pos_xy_std = 3, as DeepLab v1 reimplementations
set them (github.com/wangleihitcs/DeepLab-V1-PyTorch main.py: "121, 140 / 5, 5 / 4, 5" for
DeepLab-CRF-LargeFOV / DeepLab-CRF). DeepLab v2 cross-validated other values per model, e.g.
ResNet-101 on VOC: pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3
(kazuto1011/deeplab-pytorch configs/voc12.yaml); VGG-16: pos 2/2, bilateral 4/65/3 (as
quoted in ports' comments; the DeepLab papers' own text was not at hand to check).
"""
import dataclasses
import functools
from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from segjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CRFParams:
  """Mean-field iterations and the two kernels' weights and standard deviations (pixels for
  *_xy_std, 0..255 intensity levels for bi_rgb_std). Defaults: DeepLab-CRF-LargeFOV."""
  num_iterations: int = 10
  bi_w: float = 4.0
  bi_xy_std: float = 121.0
  bi_rgb_std: float = 5.0
  pos_w: float = 3.0
  pos_xy_std: float = 3.0


def params_from_config(crf_cfg) -> Optional[CRFParams]:
  """config.eval.crf -> CRFParams, or None when the CRF is off.

  Off: absent, None, or `enabled` False (the placeholder configs/common.py keeps so that
  `--config.eval.crf.enabled=True` and the other keys can be set from the command line).
  Keys it lacks take DeepLab's defaults; an unknown key is a ConfigError naming it.
  """
  if crf_cfg is None:
    return None
  values = dict(crf_cfg.to_dict() if hasattr(crf_cfg, "to_dict") else crf_cfg)
  if not values.pop("enabled", True):
    return None
  names = {f.name for f in dataclasses.fields(CRFParams)}
  for key in values:
    if key not in names:
      raise ConfigError(f"eval.crf.{key} is not a CRF setting; known: enabled, "
                        f"{', '.join(sorted(names))}")
  params = CRFParams(**values)
  if int(params.num_iterations) != params.num_iterations or params.num_iterations < 0:
    raise ConfigError(f"eval.crf.num_iterations must be a non-negative integer, got "
                      f"{params.num_iterations!r}")
  for key in ("bi_xy_std", "bi_rgb_std", "pos_xy_std"):
    if not getattr(params, key) > 0:
      raise ConfigError(f"eval.crf.{key} must be positive, got {getattr(params, key)!r}")
  return params


# ---------------------------------------------------------------------------------------------
# The permutohedral lattice (Adams et al. 2010; the reference's permutohedral.cpp)
# ---------------------------------------------------------------------------------------------

class Lattice(NamedTuple):
  """The permutohedral lattice of one image's features, reused by every filtering.

  Vertices are numbered 0..capacity-1 (unused numbers hold nothing); number `capacity` is an
  extra, always-zero vertex that stands for "no neighbour" (the reference's index -1), so a
  blur pass is one fused gather: v + (v[next] + v[prev]) / 2.
  """
  splat: jax.Array  # (N, d+1) int32: the vertex of each corner of each pixel's simplex
  weights: jax.Array  # (N, d+1) float32 barycentric weights of those corners
  next: jax.Array  # (d+1, capacity+1) int32: each vertex's neighbour +1 along direction j
  prev: jax.Array  # (d+1, capacity+1) int32: ... and -1


def _scales(d: int):
  """The diagonal of the elevation matrix E times the filter's inverse std (Adams et al.
  p. 5-6), in float32 as the reference computes them."""
  inv_std = np.float32(np.sqrt(2.0 / 3.0) * (d + 1))
  return [np.float32(1.0 / np.sqrt((i + 2) * (i + 1)) * np.float64(inv_std)) for i in range(d)]


def _simplex(features, xp=jnp):
  """(N, d) float32 features -> the enclosing simplex: (N, d+1, d+1) int32 lattice coordinates
  of its corners (coordinates sum to 0) and (N, d+1) barycentric weights.

  Step by step the reference's Permutohedral::init (its SSE build, as compiled on x86):
  elevation onto the plane sum(y) = 0, rounding to the nearest remainder-0 point (ties to
  even), the rank of each coordinate's remainder, the barycentric weights, and the corners
  rem0 + canonical[r][rank]. xp: jax.numpy, or numpy for lattices built ahead of time.
  """
  n, d = features.shape
  scale = _scales(d)
  elevated = [None] * (d + 1)
  total = xp.zeros((n,), np.float32)
  for j in range(d, 0, -1):
    cf = features[:, j - 1] * scale[j - 1]
    elevated[j] = total - np.float32(j) * cf
    total = total + cf
  elevated[0] = total
  elevated = xp.stack(elevated, axis=1)  # (N, d+1)
  down = xp.round(elevated * np.float32(1.0 / (d + 1)))
  rem0 = down * np.float32(d + 1)
  excess = xp.sum(down, axis=1, keepdims=True).astype(np.int32)
  rest = elevated - rem0
  # rank[i]: how many coordinates j have a larger remainder (ties: the later index ranks lower).
  i_idx, j_idx = np.arange(d + 1)[:, None], np.arange(d + 1)[None, :]
  larger = rest[:, :, None] < rest[:, None, :]
  not_smaller = rest[:, :, None] <= rest[:, None, :]
  rank = xp.sum(xp.where(j_idx > i_idx, larger, xp.where(j_idx < i_idx, not_smaller, False)),
                 axis=2).astype(np.int32) + excess
  wrap = xp.where(rank < 0, d + 1, 0) - xp.where(rank > d, d + 1, 0)
  rank = rank + wrap
  rem0 = rem0.astype(np.int32) + wrap
  rest = (elevated - rem0.astype(np.float32)) * np.float32(1.0 / (d + 1))
  # barycentric[d - rank_i] += rest_i, barycentric[d - rank_i + 1] -= rest_i, then wrap d+1 -> 0.
  pos = (d - rank)[:, :, None] == np.arange(d + 2)[None, None, :]
  neg = (d - rank + 1)[:, :, None] == np.arange(d + 2)[None, None, :]
  bary = xp.sum(xp.where(pos, rest[:, :, None], 0.0) - xp.where(neg, rest[:, :, None], 0.0),
                 axis=1)
  weights = xp.concatenate([bary[:, :1] + (1.0 + bary[:, d + 1:]), bary[:, 1:d + 1]], axis=1)
  # canonical[r][k] = r if k <= d - r else r - (d + 1)
  r = np.arange(d + 1)[None, :, None]
  canonical = xp.where(rank[:, None, :] <= d - r, r, r - (d + 1))
  corners = rem0[:, None, :] + canonical  # (N, d+1 corners, d+1 coordinates)
  return corners.astype(np.int32), weights


def _key_layout(upper: Sequence[float]):
  """How lattice points are packed into int32 words that sort like the points.

  A point (y_0..y_d, sum 0, all coordinates = r mod d+1) is the fields q_k = (y_k - r)/(d+1),
  k < d, and r. Each field's range follows from the features' static bounds [0, upper_k]
  (plus one step for the blur neighbours); fields fill words up to 2^31 - 1 codes, leaving
  INT32_MAX to mark empty vertex slots. Returns [[(field, low, span), ...] per word].
  """
  d = len(upper)
  scale = [float(x) for x in _scales(d)]
  top = [float(u) * (1 + 1e-6) + 1e-6 for u in upper]
  fields = []
  for k in range(d):  # elevated_k = sum_{i >= k} f_i s_i - k f_{k-1} s_{k-1} (k = 0: no term)
    hi = sum(top[i] * scale[i] for i in range(k, d))
    lo = -k * top[k - 1] * scale[k - 1] if k else 0.0
    slack = (d + 1) / 2 + (d + 1) + d  # rounding to remainder 0, wrap-around, canonical corner
    q_lo = int(np.floor((lo - slack - d) / (d + 1))) - 1
    q_hi = int(np.ceil((hi + slack) / (d + 1))) + 1
    fields.append((k, q_lo, q_hi - q_lo + 1))
  fields.append((d, 0, d + 1))  # r
  words, room = [[]], 2 ** 31 - 1
  for field in fields:
    if field[2] > 2 ** 31 - 1:
      raise ValueError(f"lattice coordinates span {field[2]} values: features too large")
    if field[2] > room:
      words.append([])
      room = 2 ** 31 - 1
    words[-1].append(field)
    room //= field[2]
  return words


def _encode(coords, layout, xp=jnp) -> Tuple:
  """(M, d+1) int32 lattice points -> the int32 words of `_key_layout`."""
  d1 = coords.shape[1]
  r = xp.mod(coords[:, 0], d1)
  values = [(coords[:, k] - r) // d1 for k in range(d1 - 1)] + [r]
  words = []
  for word in layout:
    code = xp.zeros_like(r)
    for field, low, span in word:
      code = code * span + (values[field] - low)
    words.append(code)
  return tuple(words)


def _decode(words, layout, d1: int, xp=jnp):
  """The inverse of `_encode` (garbage for empty slots, which nothing reads)."""
  values = [None] * d1
  for word, code in zip(layout, words):
    for field, low, span in reversed(word):
      values[field] = xp.mod(code, span) + low
      code = code // span
  r = values[-1]
  head = [q * d1 + r for q in values[:-1]]
  return xp.stack(head + [-sum(head)], axis=1)


# Lattice directions: row j is the step (d+1) e_j - 1 of the reference's blur neighbour n1.
def _steps(d1: int) -> np.ndarray:
  return (d1 * np.eye(d1) - 1).astype(np.int32)


def _search(table, query) -> jax.Array:
  """Index of each query key in the sorted, duplicate-free multi-word `table` (a binary
  search on all queries at once), or len(table) where it is absent."""
  size = table[0].shape[0]
  lo = jnp.zeros(query[0].shape, jnp.int32)
  hi = jnp.full(query[0].shape, size, jnp.int32)

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    at = [t[jnp.minimum(mid, size - 1)] for t in table]
    less, equal = jnp.zeros(lo.shape, bool), jnp.ones(lo.shape, bool)
    for a, q in zip(at, query):
      less, equal = less | (equal & (a < q)), equal & (a == q)
    go_right = (lo < hi) & less
    return jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~less, mid, hi)

  lo, _ = jax.lax.fori_loop(0, int(np.ceil(np.log2(size + 1))), halve, (lo, hi))
  at = jnp.minimum(lo, size - 1)
  found = lo < size
  for t, q in zip(table, query):
    found = found & (t[at] == q)
  return jnp.where(found, lo, size)


class Corners(NamedTuple):
  """Every pixel's simplex corners merged into lattice vertices: the part of the lattice
  built at the size of the input, S = N * (d+1) corners (`finish` builds the rest at the
  size of the vertex count)."""
  splat: jax.Array  # (N, d+1) int32 vertex of each corner; vertices numbered in key order
  weights: jax.Array  # (N, d+1) float32 barycentric weights
  vertex: jax.Array  # (S,) int32 vertex of each corner, corners in key order
  keys: Tuple[jax.Array, ...]  # int32 words of the corners' keys, (S,) each, sorted
  count: jax.Array  # () int32 number of distinct vertices


def corners(features: jax.Array, upper: Sequence[float]) -> Corners:
  """Sorting the N * (d+1) corners by key puts equal corners side by side: one vertex per
  distinct key, as the reference's hash table. `upper`: static bounds of the features
  (which are >= 0), for the key layout."""
  n, d = features.shape
  coords, weights = _simplex(features)
  s = n * (d + 1)
  words = _encode(coords.reshape(s, d + 1), _key_layout(upper))
  iota = jnp.arange(s, dtype=jnp.int32)
  *keys, order = jax.lax.sort(words + (iota,), num_keys=len(words), is_stable=False)
  same = jnp.ones(s - 1, bool)
  for k in keys:
    same = same & (k[1:] == k[:-1])
  vertex = jnp.cumsum(jnp.concatenate([jnp.ones(1, jnp.int32), (~same).astype(jnp.int32)])) - 1
  splat = jnp.zeros(s, jnp.int32).at[order].set(vertex).reshape(n, d + 1)
  return Corners(splat, weights, vertex, tuple(keys), vertex[-1] + 1)


def finish(c: Corners, upper: Sequence[float], capacity: int) -> Lattice:
  """The lattice with room for `capacity` >= c.count vertices: each vertex's neighbours
  y -/+ ((d+1) e_j - 1) along the d+1 directions (the reference's blur_neighbors), found
  by binary search among the vertex keys."""
  layout = _key_layout(upper)
  d1 = c.splat.shape[1]
  empty = jnp.iinfo(jnp.int32).max
  table = tuple(jnp.full(capacity, empty, jnp.int32).at[c.vertex].set(k, mode="drop")
                for k in c.keys)
  coords = _decode(table, layout, d1)  # (capacity, d+1)
  steps = _steps(d1)[:, None, :]
  queries = jnp.concatenate([coords[None] + steps, coords[None] - steps])
  found = _search(table, _encode(queries.reshape(-1, d1), layout))
  valid = jnp.arange(capacity) < c.count
  found = jnp.where(jnp.tile(valid, 2 * d1), found, capacity).reshape(2, d1, capacity)
  pad = jnp.full((2, d1, 1), capacity, jnp.int32)
  nexts, prevs = jnp.concatenate([found, pad], axis=2)
  return Lattice(c.splat, c.weights, nexts, prevs)


def build_lattice(features: jax.Array, upper: Sequence[float],
                  capacity: Optional[int] = None) -> Lattice:
  """The lattice of (N, d) float32 features (divided by their stds; in [0, upper]), with
  room for `capacity` vertices (default N * (d+1), the most there can be)."""
  n, d = features.shape
  return finish(corners(features, upper), upper, capacity or n * (d + 1))


def lattice_filter(lattice: Lattice, values: jax.Array) -> jax.Array:
  """(N, C) values -> (N, C) permutohedral Gaussian filter (the reference's
  Permutohedral::compute: splat, blur along directions 0..d, slice times 1/(1+2^-d))."""
  n, d1 = lattice.weights.shape
  c = values.shape[1]
  contrib = (lattice.weights[:, :, None] * values[:, None, :]).reshape(n * d1, c)
  grid = jax.ops.segment_sum(contrib, lattice.splat.reshape(n * d1),
                             num_segments=lattice.next.shape[1])
  # A loop, not d+1 inlined passes: XLA would fuse consecutive passes into one gather loop
  # that recomputes the earlier passes at every neighbour (3^k work; measured 20x slower).
  grid, _ = jax.lax.scan(lambda g, nb: (g + 0.5 * (g[nb[0]] + g[nb[1]]), None), grid,
                         (lattice.next, lattice.prev))
  weights = lattice.weights * np.float32(1.0 / (1.0 + 2.0 ** (1 - d1)))
  return sum(weights[:, r:r + 1] * grid[lattice.splat[:, r]] for r in range(d1))


class Kernel(NamedTuple):
  """A Gaussian kernel normalised as the reference's default NORMALIZE_SYMMETRIC:
  K' v = norm * K (norm * v) with norm = 1 / sqrt(K 1 + 1e-20) (its DenseKernel)."""
  lattice: Lattice
  norm: jax.Array  # (N, 1)


def make_kernel(lattice: Lattice) -> Kernel:
  ones = jnp.ones((lattice.weights.shape[0], 1), jnp.float32)
  return Kernel(lattice, jax.lax.rsqrt(lattice_filter(lattice, ones) + 1e-20))


def apply_kernel(kernel: Kernel, q: jax.Array) -> jax.Array:
  return kernel.norm * lattice_filter(kernel.lattice, kernel.norm * q)


def positions(h: int, w: int) -> jax.Array:
  """(H * W, 2) float32 (x, y) of the pixels in row-major order (DenseCRF2D's features)."""
  y, x = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                      indexing="ij")
  return jnp.stack([x.reshape(-1), y.reshape(-1)], axis=1)


def numpy_lattice(features: np.ndarray, upper: Sequence[float]) -> Lattice:
  """build_lattice in numpy, exactly as many vertex slots as vertices, for a lattice known
  ahead of time (the smoothness kernel's: positions only). np.unique replaces the sort and
  np.searchsorted the binary search; the vertices are numbered alike (key order)."""
  n, d = features.shape
  layout = _key_layout(upper)
  if len(layout) > 2:
    raise ValueError("numpy_lattice packs keys into int64: at most two words")
  coords, weights = _simplex(np.asarray(features, np.float32), np)

  def key(points):
    words = _encode(points, layout, np)
    return words[0].astype(np.int64) << 31 | words[1] if len(words) == 2 else words[0]

  table, vertex = np.unique(key(coords.reshape(-1, d + 1)), return_inverse=True)
  count = len(table)
  words = (table >> 31, table & (2 ** 31 - 1)) if len(layout) == 2 else (table,)
  points = _decode(words, layout, d + 1, np)
  steps = _steps(d + 1)[:, None, :]
  queries = key(np.concatenate([points[None] + steps, points[None] - steps]).reshape(-1, d + 1))
  at = np.minimum(np.searchsorted(table, queries), count - 1)
  found = np.where(table[at] == queries, at, count).reshape(2, d + 1, count)
  nexts, prevs = np.concatenate([found, np.full((2, d + 1, 1), count)], axis=2).astype(np.int32)
  return Lattice(vertex.reshape(n, d + 1).astype(np.int32), weights, nexts, prevs)


@functools.lru_cache(maxsize=8)
def spatial_kernel(h: int, w: int, xy_std: float) -> Kernel:
  """The smoothness kernel, which depends on the image size only: built once per size and
  std in numpy (no compilation), with exactly as many vertex slots as it has vertices (4% of
  the N * 3 corners for pos_xy_std = 3), and closed over as constants."""
  y, x = np.mgrid[:h, :w].astype(np.float32)
  xy = np.stack([x.reshape(-1), y.reshape(-1)], axis=1) / np.float32(xy_std)
  lattice = numpy_lattice(xy, ((w - 1) / xy_std, (h - 1) / xy_std))
  # norm = 1 / sqrt(K 1): splat, blur, slice of ones (lattice_filter in numpy)
  n, d1 = lattice.weights.shape
  grid = np.bincount(lattice.splat.reshape(-1), lattice.weights.reshape(-1),
                     minlength=lattice.next.shape[1]).astype(np.float32)
  for j in range(d1):
    grid = grid + np.float32(0.5) * (grid[lattice.next[j]] + grid[lattice.prev[j]])
  alpha = np.float32(1.0 / (1.0 + 2.0 ** (1 - d1)))
  ones = np.sum(lattice.weights * alpha * grid[lattice.splat], axis=1, dtype=np.float32)
  return Kernel(lattice, (1.0 / np.sqrt(ones + np.float32(1e-20)))[:, None].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Mean-field inference
# ---------------------------------------------------------------------------------------------


# Vertex slots of the appearance kernel, as fractions of its N * 6 corners: the smallest that
# holds the image's vertices is the branch that runs (lax.switch), so the neighbour search and
# the blur passes cost what the image's colours need. Measured on 500x375 VOC photos: 9-13%
# of the corners with DeepLab v1's stds (121/5), 24-28% with v2's (67/3); uniform noise 78%.
# Each branch compiles the whole mean-field loop: two keep compilation short.
CAPACITY_FRACTIONS = (1 / 4, 1)
# Up to this many corners (a 100x100 image) one full-size branch runs in milliseconds anyway,
# and compiles in half the time of two.
SMALL_LATTICE = 60_000


def appearance_features(image: jax.Array, params: CRFParams):
  """(N, 5) float32 (x, y) / bi_xy_std, RGB / bi_rgb_std of an (H, W, 3) 0..255 image, and
  their static upper bounds."""
  h, w = image.shape[:2]
  rgb = image.reshape(-1, 3).astype(jnp.float32)
  xy_std, rgb_std = float(params.bi_xy_std), float(params.bi_rgb_std)
  upper = ((w - 1) / xy_std, (h - 1) / xy_std) + (255.0 / rgb_std,) * 3
  return jnp.concatenate([positions(h, w) / np.float32(xy_std),
                          rgb / np.float32(rgb_std)], axis=1), upper


def dense_crf(probs: jax.Array, image: jax.Array, params: CRFParams = CRFParams()) -> jax.Array:
  """Mean-field marginals Q (H, W, L) of one image.

  probs: (H, W, L) softmax probabilities of the model; image: (H, W, 3) RGB in 0..255 at the
  same size (uint8 or float; a float image is rounded to the 256 levels DeepLab's CRF saw).
  Under vmap the lax.switch below would run every branch: map over images instead.
  """
  h, w, num_labels = probs.shape
  if image.dtype != jnp.uint8:
    image = jnp.clip(jnp.round(image), 0, 255)
  smooth = spatial_kernel(h, w, float(params.pos_xy_std))
  feats, upper = appearance_features(image, params)
  appearance = corners(feats, upper)
  unary = -jnp.log(jnp.clip(probs.reshape(h * w, num_labels).astype(jnp.float32), 1e-5, 1.0))
  s = appearance.vertex.shape[0]
  capacities = sorted({max(int(np.ceil(s * f)), 1) for f in CAPACITY_FRACTIONS})
  if s <= SMALL_LATTICE:
    capacities = [s]

  def inference(capacity):
    def run(appearance, unary):
      bilateral = make_kernel(finish(appearance, upper, capacity))

      def step(q, _):
        energy = (-unary + np.float32(params.pos_w) * apply_kernel(smooth, q)
                  + np.float32(params.bi_w) * apply_kernel(bilateral, q))
        return jax.nn.softmax(energy, axis=-1), None

      q, _ = jax.lax.scan(step, jax.nn.softmax(-unary, axis=-1), None,
                          length=int(params.num_iterations))
      return q
    return run

  branch = jnp.sum(appearance.count > jnp.asarray(capacities[:-1], jnp.int32))
  q = jax.lax.switch(branch, [inference(c) for c in capacities], appearance, unary)
  return q.reshape(h, w, num_labels)


def refine_logits(logits: jax.Array, images: jax.Array, params: CRFParams) -> jax.Array:
  """A batch of logits (B, H, W, L) -> CRF marginals (B, H, W, L), one image at a time
  (lax.map: a 500x375 image splats 1.1M simplex corners of L values; a batch at once would
  hold B times that). images: (B, H, W, 3) 0..255 at the logits' size."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return jax.lax.map(lambda pair: dense_crf(pair[0], pair[1], params), (probs, images))
