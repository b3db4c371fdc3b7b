"""Procedural street scenes with Cityscapes' 19 classes: a dataset on which methods differ.

The shapes of synthetic.py are learnt in minutes, so ablations on them say little. These
scenes have what makes Cityscapes hard, at a size a CPU trains on: large regions (road,
building, sky, vegetation), thin structures a few pixels wide (poles, signs, fences,
bicycle frames), small objects (people, riders), classes thousands of times rarer than road
(train, motorcycle), occlusion, texture, haze, shadows and per-image lighting.

Each example is a pure function of (seed, split, index), drawn with numpy alone. A pinhole
camera at height `cam_h` looks down a straight road: a world point (X lateral, v height,
Z depth, metres) lands at x = x_v + f X / Z, y = y_h + f (cam_h - v) / Z. Every object is a
few vertical planes (`_Scene.plane_z`, facing the camera: signs, people, car backs;
`_Scene.plane_x`, along the road: facades, car sides, fences) whose pixels are mapped back
to metres on the plane, so windows, wheels and paving keep their perspective. Planes are
painted back to front (buildings, then walls/fences/hedges, then everything else by depth),
and each paint writes the image and the mask through the same boolean, so the mask is
exactly what is visible. Lighting, haze and noise change colours only, never the mask.

Speed (~25-35 ms per 256x512 image on one core) comes from numpy habits measured here: the
canvas is planar (3, H, W), as ops broadcasting over a last axis of 3 ran 5x slower; masked
writes are arithmetic blends with a 0/1 weight, 3-5x faster than masked or boolean-indexed
copies; periodic patterns use x - floor(x), as float `%` was 40x slower; and the noise
textures are cropped from a cached atlas instead of drawn per image.

The class ids, names and palette are Cityscapes' trainIds (segjax/data/cityscapes.py).
"""
import dataclasses
import functools
from typing import Callable, Tuple, Union

import numpy as np

from segjax.data import base, synthetic
from segjax.data.cityscapes import CLASS_NAMES, PALETTE
from segjax.data.registry import DATASETS

DEFAULT_IMAGE_SIZE = (256, 512)  # (h, w): Cityscapes' 1:2 frame at 1/4 of its side
_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
# Each class's share of the pixels of the first 200 training scenes (seed 0, 256x512):
# class_frequencies(200), rounded to 4 digits (tests/test_synthetic_city.py recomputes it).
CLASS_FREQUENCIES = (
    0.4055, 0.08088, 0.2622, 0.005133, 0.00342, 0.003747, 0.0003736, 0.001215, 0.09146,
    0.02237, 0.08494, 0.004024, 0.0002413, 0.02791, 0.003481, 0.002078, 0.00057, 7.843e-05,
    0.0003524)
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = (
    _ID[n] for n in ("road", "sidewalk", "building", "wall", "fence", "pole"))
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON = (
    _ID[n] for n in ("traffic light", "traffic sign", "vegetation", "terrain", "sky", "person"))
RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = (
    _ID[n] for n in ("rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"))

_FACADES = np.array([(150, 140, 125), (160, 85, 65), (120, 120, 125), (200, 195, 185),
                     (110, 85, 70), (185, 165, 130), (95, 105, 115), (150, 160, 140),
                     (175, 150, 140)], np.float32)
_PAINTS = np.array([(20, 20, 22), (225, 225, 222), (165, 168, 172), (90, 92, 96),
                    (150, 20, 20), (25, 45, 110), (30, 70, 45), (200, 170, 40),
                    (120, 80, 50), (70, 20, 30)], np.float32)  # cars and trucks
_FLEET = np.array([(230, 200, 40), (220, 220, 215), (40, 90, 170), (200, 40, 40)],
                  np.float32)  # buses and trams
_CLOTHES = np.array([(25, 25, 30), (40, 50, 90), (150, 30, 35), (200, 200, 195),
                     (90, 90, 95), (60, 80, 50), (170, 140, 100), (30, 90, 150),
                     (220, 170, 40), (110, 60, 110)], np.float32)
_SKIN = np.array([(225, 185, 160), (190, 140, 105), (140, 95, 65), (90, 60, 45)], np.float32)
_GLASS = np.array((45, 55, 70), np.float32)
_TYRE = np.array((22, 22, 24), np.float32)


def _rgb(colour) -> np.ndarray:
  """float32 colour(s): numpy's float64 would promote every per-pixel product."""
  return np.asarray(colour, np.float32)


def _value_noise(rng, h: int, w: int, cell_y: float, cell_x: float) -> np.ndarray:
  """Smooth noise (h, w) float32, std ~0.5: a random grid bilinearly upsampled."""
  grid = rng.normal(0.0, 0.5, (int(h / cell_y) + 2, int(w / cell_x) + 2)).astype(np.float32)
  y = (np.arange(h, dtype=np.float32) + 0.5) / cell_y
  x = (np.arange(w, dtype=np.float32) + 0.5) / cell_x
  y0, x0 = y.astype(np.int32), x.astype(np.int32)
  ty, tx = (y - y0)[:, None], (x - x0)[None, :]
  rows = grid[y0] * (1 - ty) + grid[y0 + 1] * ty
  # Row-major float32: the column gathers leave a column-major float64 result, which made
  # every window of the texture a strided, promoting operand.
  return np.ascontiguousarray(rows[:, x0] * (1 - tx) + rows[:, x0 + 1] * tx, np.float32)


@functools.lru_cache(maxsize=8)
def _noise_atlas(kind: str, h: int, w: int) -> np.ndarray:
  """A (2h, 2w) noise texture that images of size (h, w) crop at random offsets: drawing
  fresh noise per image cost more than painting all the objects. A fixed seed, so every
  call in any thread gives the same texture and examples stay pure functions of their
  (seed, split, index)."""
  cell_y, cell_x = {"coarse": (h / 12, h / 12), "fine": (2.0, 2.0),
                    "clouds": (h / 6, w / 5)}[kind]
  atlas = _value_noise(np.random.default_rng(0), 2 * h, 2 * w, cell_y, cell_x)
  atlas.setflags(write=False)
  return atlas


def _noise_crop(rng, kind: str, h: int, w: int) -> np.ndarray:
  """An (h, w) crop of the atlas at a random offset, mirrored and negated at random."""
  atlas = _noise_atlas(kind, h, w)
  y, x = rng.integers(0, h + 1), rng.integers(0, w + 1)
  crop = atlas[y:y + h, x:x + w][:, ::int(rng.choice((-1, 1)))]
  return crop * np.float32(rng.choice((-1.0, 1.0)))


def _frac(x):
  """x - floor(x): the phase within a period (float `%` is ~40x slower in numpy)."""
  return x - np.floor(x)


def _segment(u, v, p, q, half_width):
  """Points within half_width of the segment p-q (a limb, a bicycle tube)."""
  du, dv = q[0] - p[0], q[1] - p[1]
  t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
  return (u - p[0] - t * du) ** 2 + (v - p[1] - t * dv) ** 2 <= half_width ** 2


def _disc(u, v, cu, cv, r):
  return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def _layers(*conditions) -> np.ndarray:
  """uint8 material index per pixel: k for the last of `conditions` (k = 1, 2, ...) that
  holds, 0 where none does; later conditions paint over earlier ones."""
  index = np.uint8(0)
  for k, cond in enumerate(conditions, 1):
    index = np.maximum(index, cond * np.uint8(k))
  return index


@dataclasses.dataclass
class Look:
  """The colours `draw` gives a plane: `colours` (3,) for one material, or (k, 3) picked
  per pixel by `index` (e.g. from `_layers`), times `light` (a brightness texture)."""
  colours: np.ndarray
  index: Union[np.ndarray, None] = None
  light: Union[np.ndarray, float] = 1.0


@dataclasses.dataclass
class _Camera:
  f: float  # focal length, pixels
  cam_h: float  # camera height above the road, metres
  y_h: float  # horizon row
  x_v: float  # vanishing point column

  def x(self, lateral, z):
    return self.x_v + self.f * lateral / z

  def y(self, height, z):
    return self.y_h + self.f * (self.cam_h - height) / z


Draw = Callable[..., Tuple[np.ndarray, Look]]


class _Scene:
  """One image being painted: camera, street layout, canvas and the painting primitives."""

  def __init__(self, rng: np.random.Generator, image_size):
    self.rng = rng
    self.h, self.w = h, w = tuple(int(s) for s in image_size)
    self.cam = _Camera(f=w * rng.uniform(0.45, 0.62), cam_h=rng.uniform(1.3, 1.8),
                       y_h=h * rng.uniform(0.33, 0.48), x_v=w * rng.uniform(0.38, 0.62))
    self.horizon_row = min(max(int(np.ceil(self.cam.y_h - 0.5)), 0), h)  # first ground row
    self.image = np.zeros((3, h, w), np.float32)  # planar: see the module docstring
    self.mask = np.zeros((h, w), np.uint8)
    self.coarse = _noise_crop(rng, "coarse", h, w)
    self.fine = _noise_crop(rng, "fine", h, w)
    self.haze_colour = _rgb(rng.uniform(185, 225) * np.array([0.95, 0.98, 1.03]))
    self.haze_dist = rng.uniform(120.0, 400.0)
    self.sun = rng.uniform(0.55, 1.0)  # 1 = hard sunlight, low = overcast
    self.sun_side = float(rng.choice((-1.0, 1.0)))
    self.lit, self.unlit = 1.0, 1.0 - 0.45 * self.sun
    self.z_far = rng.uniform(140.0, 260.0)
    # Street layout: road centre (camera offset), lanes, per side verge/sidewalk/beyond.
    self.lanes = int(rng.integers(2, 5))
    self.lane_w = rng.uniform(2.8, 3.6)
    self.road_half = self.lanes * self.lane_w / 2
    self.centre = rng.uniform(-0.35, 0.35) * self.road_half
    self.verge = {s: rng.uniform(0.8, 2.5) if rng.random() < 0.3 else 0.0 for s in (-1, 1)}
    self.walk = {s: rng.uniform(1.8, 5.0) for s in (-1, 1)}
    self.outer = {s: TERRAIN if rng.random() < 0.45 else SIDEWALK for s in (-1, 1)}
    self.tram = rng.random() < 0.12
    self.tram_axis = rng.uniform(-0.5, 0.5) * self.road_half

  # -- painting -----------------------------------------------------------------------------

  def _window(self, x0, x1, y0, y1):
    xa, xb = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, self.w)
    ya, yb = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, self.h)
    return None if xa >= xb or ya >= yb else (ya, yb, xa, xb)

  def tex(self, win, coarse: float, fine: float) -> np.ndarray:
    """(wh, ww) brightness of the window from the image's shared noise fields: texture is
    continuous across objects and costs no per-object noise."""
    ya, yb, xa, xb = win
    return 1.0 + coarse * self.coarse[ya:yb, xa:xb] + fine * self.fine[ya:yb, xa:xb]

  def _haze(self, z):
    """How much of the haze colour replaces a colour seen through `z` metres of air."""
    return 1.0 - np.exp(-np.asarray(z, np.float32) / np.float32(self.haze_dist))

  def _paint(self, win, inside, look: Look, cls, haze, shade):
    """Writes image and mask through the same `inside` (wh, ww), as blends with a 0/1
    weight; `haze` is a scalar or a (1, ww) row, `shade` the face's brightness."""
    ya, yb, xa, xb = win
    if not inside.any():
      return
    weight = inside.astype(np.float32)
    scale = (np.float32(shade) * (1 - haze)) * look.light * weight
    if look.index is None:
      colour = look.colours[:, None, None]
    else:
      colour = np.take(look.colours.T, look.index, axis=1)
    region = self.image[:, ya:yb, xa:xb]  # all three planes in each op: fewer calls
    region *= 1 - weight
    region += colour * scale + self.haze_colour[:, None, None] * (haze * weight)
    mask = self.mask[ya:yb, xa:xb]
    mask += (np.uint8(cls) - mask) * inside.view(np.uint8)  # uint8 wraps: exact

  def plane_z(self, z, lateral, u_range, v_range, draw: Draw, cls, shade=1.0):
    """A plane facing the camera at depth z, its origin at `lateral`, ground level.

    `draw(u, v, px, win)` gets u (1, ww) metres right of the origin, v (wh, 1) metres above
    the ground, px the metres per pixel there, and returns (inside (wh, ww), Look)."""
    if z < 0.5:
      return
    cam, s = self.cam, self.cam.f / z
    win = self._window(cam.x(lateral + u_range[0], z), cam.x(lateral + u_range[1], z),
                       cam.y(v_range[1], z), cam.y(v_range[0], z))
    if win is None:
      return
    ya, yb, xa, xb = win
    u = ((np.arange(xa, xb, dtype=np.float32) + 0.5 - cam.x_v) / s - lateral)[None, :]
    v = (cam.cam_h - (np.arange(ya, yb, dtype=np.float32) + 0.5 - cam.y_h) / s)[:, None]
    inside, look = draw(u, v, 1.0 / s, win)
    bounds = ((u >= u_range[0]) & (u <= u_range[1])) & ((v >= v_range[0]) & (v <= v_range[1]))
    self._paint(win, inside & bounds, look, cls, self._haze(z), shade)

  def plane_x(self, lateral, z_range, v_range, draw: Draw, cls, shade=1.0):
    """A plane along the road at `lateral`, from depth z_range[0] to z_range[1].

    `draw(u, v, px, win)` gets u (1, ww) the depth in metres, v (wh, ww) the height. Drawn
    in pieces whose depths differ by at most 1.6x: the plane is a trapezoid in the image,
    and a piece's bounding box wastes little around it."""
    cam = self.cam
    z0, z_end = max(z_range[0], 0.5), z_range[1]
    if abs(lateral) < 0.05:
      return  # seen edge-on
    while z0 < z_end:
      z1 = min(z0 * 1.6, z_end)
      xs = (cam.x(lateral, z0), cam.x(lateral, z1))
      ys = [cam.y(v, z) for v in v_range for z in (z0, z1)]
      win = self._window(min(xs), max(xs), min(ys), max(ys))
      if win is not None:
        ya, yb, xa, xb = win
        dx = np.arange(xa, xb, dtype=np.float32) + 0.5 - cam.x_v
        with np.errstate(divide="ignore"):
          z = np.where(dx * lateral > 0, cam.f * lateral / dx, -1.0).astype(np.float32)[None]
        v = cam.cam_h - (np.arange(ya, yb, dtype=np.float32)[:, None] + 0.5 - cam.y_h) * (
            z / cam.f)
        inside, look = draw(z, v, z / cam.f, win)
        inside = inside & ((z >= z0) & (z <= z1)) & ((v >= v_range[0]) & (v <= v_range[1]))
        self._paint(win, inside, look, cls, self._haze(z), shade)
      z0 = z1

  def side_shade(self, side):
    """Brightness of a face along the road on side `side` (its normal points to -side)."""
    return self.lit if -side == self.sun_side else self.unlit

  # -- sky, skyline, ground -----------------------------------------------------------------

  def sky(self):
    """A vertical gradient (clear or overcast) with clouds above the horizon; the ground
    covers every row below it."""
    rng, r0 = self.rng, self.horizon_row
    if rng.random() < 0.3:  # overcast
      top = rng.uniform(140, 175) * np.array([0.97, 0.99, 1.03])
      bottom = top + rng.uniform(25, 45)
    else:
      top = np.array([rng.uniform(45, 95), rng.uniform(100, 145), rng.uniform(175, 225)])
      bottom = np.array([rng.uniform(170, 200), rng.uniform(190, 215), rng.uniform(215, 240)])
    self.mask[:] = SKY
    if r0 == 0:
      return
    t = ((np.arange(r0, dtype=np.float32) + 0.5) / r0) ** np.float32(rng.uniform(0.5, 1.2))
    clouds = _noise_crop(rng, "clouds", self.h, self.w)[:r0] + 0.6 * self.coarse[:r0]
    cover = np.clip((clouds - rng.uniform(-0.1, 0.6)) * 3.0, 0, 1)
    white = np.float32(rng.uniform(200, 245))
    for c in range(3):
      gradient = (np.float32(top[c]) + np.float32(bottom[c] - top[c]) * t)[:, None]
      self.image[c, :r0] = gradient + (white - gradient) * cover

  def skyline(self):
    """Distant blocks and tree lines at z_far, so the road does not end in sky."""
    rng, z = self.rng, self.z_far
    span = 1.4 * z * max(self.cam.x_v, self.w - self.cam.x_v) / self.cam.f
    x = -span
    while x < span:
      width = rng.uniform(8, 40)
      if rng.random() < 0.55:
        height, colour = rng.uniform(6, 35), _FACADES[rng.integers(len(_FACADES))]
        self.plane_z(z, x, (0, width), (-1, height),
                     lambda u, v, px, win, c=colour: (np.ones((v.size, u.size), bool),
                                                      Look(c, light=self.tex(win, 0.08, 0.05))),
                     BUILDING)
      else:
        height = rng.uniform(5, 18)
        self.plane_z(z, x, (0, width), (-1, height),
                     lambda u, v, px, win, hh=height: (
                         v <= hh * (1 + 0.4 * self.coarse[win[0]:win[1], win[2]:win[3]]),
                         Look(_rgb((60, 90, 45)), light=self.tex(win, 0.1, 0.3))),
                     VEGETATION)
      x += width

  def ground(self):
    """Road (lanes, markings, tram rails, crossing), kerb, sidewalks and the terrain or
    paving beyond, coloured per pixel from its ground-plane coordinates."""
    rng, cam, h, w, r0 = self.rng, self.cam, self.h, self.w, self.horizon_row
    z = (cam.f * cam.cam_h / (np.arange(r0, h, dtype=np.float32) + 0.5 - cam.y_h))[:, None]
    d = (np.arange(w, dtype=np.float32)[None, :] + 0.5 - cam.x_v) * z / cam.f - self.centre
    self._ground = (r0, z, d)
    if r0 >= h:
      return
    a = np.abs(d)
    right = d > 0
    walk_in = self.road_half + np.where(right, self.verge[1], self.verge[-1])
    walk_out = walk_in + np.where(right, self.walk[1], self.walk[-1])
    cls = np.where(right, np.uint8(self.outer[1]), np.uint8(self.outer[-1]))
    cls[a < walk_out] = SIDEWALK
    cls[a < walk_in] = TERRAIN
    kerb = a < self.road_half + 0.2
    cls[kerb] = SIDEWALK
    cls[a < self.road_half] = ROAD
    kerb &= cls == SIDEWALK
    # Per-class base colour and texture strength, then per-pixel brightness.
    base = np.zeros((3, len(CLASS_NAMES)), np.float32)
    base[:, ROAD] = rng.uniform(65, 110) * np.array([1, 1, 1.03]) * rng.uniform(0.95, 1.05, 3)
    base[:, SIDEWALK] = rng.uniform(120, 175) * rng.uniform(0.92, 1.08, 3)
    base[:, TERRAIN] = (rng.uniform(70, 130), rng.uniform(110, 150), rng.uniform(45, 80))
    amp = np.zeros((2, len(CLASS_NAMES)), np.float32)
    amp[:, [ROAD, SIDEWALK, TERRAIN]] = ((0.08, 0.12, 0.2), (0.08, 0.1, 0.3))
    light = 1.0 + np.take(amp[0], cls) * self.coarse[r0:] + np.take(amp[1], cls) * self.fine[r0:]
    # Paving joints in the rows where a tile is at least 4 pixels tall; a lighter kerb.
    tile = rng.uniform(0.4, 0.8)
    near = slice(int(np.searchsorted(-z[:, 0], -np.sqrt(cam.f * cam.cam_h * tile / 4))), None)
    zn, dn = z[near], d[near]
    joints = (cls[near] == SIDEWALK) & (
        (_frac(dn / tile) < np.maximum(0.03, zn / cam.f) / tile)
        | (_frac(zn / tile) < np.maximum(0.03, zn * zn / (cam.f * cam.cam_h)) / tile))
    light[near] *= 1 - 0.2 * joints
    light *= 1 + 0.15 * kerb
    # Lane markings (still road): dashed between lanes, solid at the edges.
    line = rng.uniform(0.06, 0.1)  # half width
    marks = np.abs(a - (self.road_half - 0.35)) < line
    for k in range(1, self.lanes):
      dashed = _frac(z / 9.0) < 1 / 3 if rng.random() < 0.8 else np.ones_like(z, bool)
      marks |= (np.abs(d - (-self.road_half + k * self.lane_w)) < line) & dashed
    if rng.random() < 0.25:  # zebra crossing, 4 m deep
      z0 = rng.uniform(8, 30)
      rows = slice(*np.searchsorted(-z[:, 0], (-z0 - 4, -z0)))
      marks[rows] |= (_frac(d[rows]) < 0.5) & (a[rows] < self.road_half - 0.5)
    marks &= cls == ROAD
    light *= 1 + rng.uniform(1.0, 2.0) * marks  # white paint on asphalt
    if self.tram:  # rails: dark steel lines
      light *= 1 - 0.45 * ((np.abs(np.abs(d - self.tram_axis) - 0.72) < 0.05) &
                           (a < self.road_half))
    haze = self._haze(z)
    light *= 1 - haze
    for c in range(3):
      self.image[c, r0:] = np.take(base[c], cls) * light + self.haze_colour[c] * haze
    self.mask[r0:] = cls

  def shade_ground(self, region, factor, z_range=(0.0, np.inf), lateral=None):
    """Darkens the ground (only ground-class pixels) where region(z (n, 1), d (n, ww))
    holds, between depths z_range and, if given, world laterals `lateral` (lo, hi): a
    shadow changes colours, never labels."""
    r0, z, d = self._ground
    rows = np.nonzero((z[:, 0] >= z_range[0]) & (z[:, 0] <= z_range[1]))[0]
    if not rows.size:
      return
    a, b = rows[0], rows[-1] + 1
    xa, xb = 0, self.w
    if lateral is not None:  # the widest columns are at the nearest row
      xs = [self.cam.x(x, float(z[b - 1, 0])) for x in lateral]
      xa, xb = max(int(min(xs)), 0), min(int(max(xs)) + 2, self.w)
      if xa >= xb:
        return
    mask = self.mask[r0 + a:r0 + b, xa:xb]
    hit = region(z[a:b], d[a:b, xa:xb]) & ((mask <= SIDEWALK) | (mask == TERRAIN))
    self.image[:, r0 + a:r0 + b, xa:xb] *= 1 - np.float32(1 - factor) * hit

  # -- buildings, walls, fences and vegetation ---------------------------------------------

  def building(self, side, setback, z0, z1, height, depth):
    """A block: its facade along the road (windows, maybe shop fronts) and its end wall."""
    rng = self.rng
    lateral = self.centre + side * setback
    colours = np.stack([_FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.8, 1.15, 3),
                        _GLASS * rng.uniform(0.7, 1.5)]).astype(np.float32)
    floor, bay = rng.uniform(2.9, 3.6), rng.uniform(2.2, 3.8)
    win_w, win_h = rng.uniform(0.35, 0.65), rng.uniform(0.4, 0.6)
    shop = rng.random() < 0.6
    offset = rng.uniform(0, bay)

    def facade(u, v, px, win):
      fu = np.abs(_frac((u + offset) / bay) - 0.5)
      windows = ((np.abs(_frac(v * (1 / floor)) - 0.55) < win_h / 2) & (v > floor)) & (
          (fu < win_w / 2) & (bay * win_w / px > 1.5))  # no window under ~2 pixels
      if shop:
        windows |= ((v > 0.4) & (v < floor - 0.6)) & (fu < 0.4)
      ya, yb, xa, xb = win
      fine, coarse = self.fine[ya:yb, xa:xb], self.coarse[ya:yb, xa:xb]
      # Glass reflects the sky in broad patches; walls are plaster, darker under the cornice.
      glass = windows.astype(np.float32)
      light = 1.0 + coarse * (0.1 + 0.7 * glass) + fine * (0.06 + 0.04 * glass)
      light *= 1 - 0.3 * ((v > height - 0.5) & ~windows)
      return np.ones(windows.shape, bool), Look(colours, windows.view(np.uint8), light)

    self.plane_x(lateral, (z0, z1), (0, height), facade, BUILDING, self.side_shade(side))
    end = lambda u, v, px, win: facade(u * side + z0, v, px, win)
    self.plane_z(z0, lateral, (0, depth) if side > 0 else (-depth, 0), (0, height), end,
                 BUILDING, 0.8)

  def wall_fence_or_hedge(self, side, lateral_off, z0, z1):
    """Something along the back of the sidewalk: a wall, a fence (see-through: only its
    posts, rails and bars are fence) or a hedge."""
    rng = self.rng
    lateral = self.centre + side * lateral_off
    kind = rng.choice(("wall", "fence", "hedge"), p=(0.35, 0.4, 0.25))
    if kind == "wall":
      height = rng.uniform(0.8, 2.8)
      colour = _rgb(rng.uniform(120, 180) * rng.uniform(0.9, 1.1, 3))
      self.plane_x(lateral, (z0, z1), (0, height),
                   lambda u, v, px, win: (np.ones(v.shape, bool),
                                          Look(colour, light=self.tex(win, 0.15, 0.08))),
                   WALL, self.side_shade(side))
      self.plane_z(z0, lateral, (0, 0.3) if side > 0 else (-0.3, 0), (0, height),
                   lambda u, v, px, win: (np.ones((v.size, u.size), bool), Look(colour)), WALL,
                   0.85)
    elif kind == "fence":
      height, post, spacing = rng.uniform(0.9, 2.0), rng.uniform(1.8, 3.0), rng.uniform(0.1, 0.2)
      colour = _rgb(((70, 75, 70), (120, 120, 115), (45, 70, 50), (120, 95, 70))[rng.integers(4)])

      def fence(u, v, px, win):
        posts = _frac(u / post) * post < np.maximum(0.08, 1.1 * px)
        rails = (np.abs(v - height + 0.05) < np.maximum(0.05, 0.6 * px)) | (np.abs(v - 0.2) < 0.04)
        # Bars where they are 3+ pixels apart; nearer, a solid screen (no aliasing).
        bars = (_frac(u / spacing) * spacing < np.maximum(0.03, 0.6 * px)) | (spacing / px <= 3)
        return (posts | bars) | rails, Look(colour, light=self.tex(win, 0.1, 0.1))

      self.plane_x(lateral, (z0, z1), (0, height), fence, FENCE, self.side_shade(side))
    else:
      height = rng.uniform(0.6, 1.6)
      green = _rgb([rng.uniform(35, 70), rng.uniform(70, 110), rng.uniform(25, 50)])

      def hedge(u, v, px, win):
        ya, yb, xa, xb = win
        top = height * (1 + 0.15 * self.fine[ya:yb, xa:xb] + 0.1 * self.coarse[ya:yb, xa:xb])
        return v <= top, Look(green, light=self.tex(win, 0.15, 0.45))

      self.plane_x(lateral, (z0, z1), (0, height * 1.3), hedge, VEGETATION, self.side_shade(side))

  def tree(self, lateral, z):
    """A trunk and a leafy canopy with a ragged edge, lit from above (all vegetation)."""
    rng = self.rng
    trunk_h, r = rng.uniform(1.8, 4.0), rng.uniform(1.2, 3.2)
    ry = r * rng.uniform(0.9, 1.4)
    cv = trunk_h + ry * 0.8
    bark = _rgb([rng.uniform(60, 90), rng.uniform(50, 70), rng.uniform(35, 50)])
    green = _rgb([rng.uniform(35, 80), rng.uniform(70, 125), rng.uniform(20, 55)])
    half = rng.uniform(0.1, 0.2)
    self.plane_z(z, lateral, (-0.5, 0.5), (0, cv),
                 lambda u, v, px, win: (np.abs(u) < np.maximum(half + 0.015 * (cv - v), 0.5 * px),
                                        Look(bark, light=self.tex(win, 0.1, 0.2))), VEGETATION)

    def canopy(u, v, px, win):
      ya, yb, xa, xb = win
      edge = 1.0 + 0.22 * self.fine[ya:yb, xa:xb] + 0.15 * self.coarse[ya:yb, xa:xb]
      inside = (u / r) ** 2 + ((v - cv) / ry) ** 2 <= edge * edge
      light = (1.0 + 0.25 * np.clip((v - cv) / ry, -1, 1)) * self.tex(win, 0.15, 0.45)
      return inside, Look(green, light=light)

    self.plane_z(z, lateral, (-1.3 * r, 1.3 * r), (cv - 1.3 * ry, cv + 1.3 * ry), canopy,
                 VEGETATION)

  # -- poles, signs, traffic lights ---------------------------------------------------------

  def pole(self, side, lateral, z):
    """A street lamp, a sign post or a traffic light on the kerb (the pole, arm and lamp
    head are pole; sign plates and light boxes their own classes)."""
    rng = self.rng
    grey = _rgb(rng.uniform(70, 160) * np.ones(3))
    kind = rng.choice(("lamp", "sign", "light"), p=(0.35, 0.4, 0.25))
    height = {"lamp": rng.uniform(5.5, 9.0), "sign": rng.uniform(2.4, 3.4),
              "light": rng.uniform(3.0, 4.5)}[kind]
    half = rng.uniform(0.05, 0.1)
    arm = -side * rng.uniform(1.0, 2.5) if kind == "lamp" else 0.0
    if kind == "light" and rng.random() < 0.35:
      height, arm = rng.uniform(5.5, 6.5), -side * rng.uniform(2.5, 5.0)  # over the road

    def post(u, v, px, win):
      hw = np.maximum(half, 0.55 * px)
      inside = (np.abs(u) < hw) & (v < height)
      if arm:
        lo, hi = min(0.0, arm), max(0.0, arm)
        inside |= ((u >= lo) & (u <= hi)) & (np.abs(v - height + hw) < hw)
        if kind == "lamp":
          inside |= (np.abs(u - arm) < 0.3) & ((v > height - 0.25) & (v < height))
      return inside, Look(grey, light=self.tex(win, 0.05, 0.1))

    margin = max(half, 0.6 * z / self.cam.f) + (0.3 if kind == "lamp" else 0.0)
    self.plane_z(z, lateral, (min(0.0, arm) - margin, max(0.0, arm) + margin),
                 (0, height + 0.1), post, POLE)
    if kind == "sign":
      for k in range(int(rng.integers(1, 3))):
        size = rng.uniform(0.5, 0.8)
        self.sign(lateral, z - 0.06, height - k * (size + 0.1), size)
    elif kind == "light":
      self.traffic_light(lateral + arm, z - 0.1, height if arm else height + 0.9)

  def sign(self, lateral, z, top, size):
    rng = self.rng
    shape = rng.choice(("disc", "square", "triangle", "diamond"))
    back = rng.random() < 0.25  # seen from behind: a grey plate
    cv, r = top - size / 2, size / 2
    colours = _rgb({"disc": ((240, 240, 240), (200, 20, 30)),  # prohibition
                    "square": ((20, 70, 160), (235, 235, 235)),  # information
                    "triangle": ((240, 240, 240), (200, 20, 30)),  # warning
                    "diamond": ((240, 200, 20), (240, 240, 240))}[shape])  # priority road

    def plate(u, v, px, win):
      du, dv = u, v - cv
      if shape == "disc":
        dist = np.sqrt(du * du + dv * dv) / r
      elif shape == "square":
        dist = np.maximum(np.abs(du), np.abs(dv)) / r
      elif shape == "diamond":
        dist = (np.abs(du) + np.abs(dv)) / r
      else:  # warning triangle, its centroid at the centre: both terms are 1 on its edges
        dist = np.maximum(-dv / (0.5 * r), (np.abs(du) * 1.732 + dv) / r)
      if back:
        return dist <= 1.0, Look(_rgb((150, 150, 150)), light=self.tex(win, 0.05, 0.05))
      return dist <= 1.0, Look(colours, (dist > 0.72).view(np.uint8), self.tex(win, 0.03, 0.05))

    self.plane_z(z, lateral, (-r, r), (cv - r, cv + r), plate, SIGN)

  def traffic_light(self, lateral, z, top):
    on = int(self.rng.integers(3))
    colours = _rgb(((35, 35, 35), ((255, 40, 30), (255, 180, 20), (40, 230, 120))[on]))

    def box(u, v, px, win):
      inside = (np.abs(u) < np.maximum(0.17, 0.55 * px)) & ((v > top - 0.95) & (v < top))
      lamp = _disc(u, v, 0.0, top - 0.17 - 0.3 * on, 0.1)
      return inside, Look(colours, lamp.view(np.uint8), self.tex(win, 0.0, 0.1))

    self.plane_z(z, lateral, (-0.3, 0.3), (top - 1.0, top), box, LIGHT)

  # -- people, riders and two-wheelers ------------------------------------------------------

  def person(self, lateral, z):
    rng = self.rng
    height = rng.uniform(1.55, 1.95)
    colours = np.stack([_CLOTHES[rng.integers(len(_CLOTHES))], _CLOTHES[rng.integers(4)],
                        _SKIN[rng.integers(len(_SKIN))],
                        _rgb((30, 25, 20)) * rng.uniform(0.8, 3.0)]).astype(np.float32)
    stride = rng.uniform(0.0, 0.25)
    hip, shoulder = 0.52 * height, 0.82 * height
    headr = 0.115 * height / 1.75

    def body(u, v, px, win):
      w = np.maximum(0.06, 0.55 * px)
      torso = (np.abs(u) < 0.2 + 0.02 * (v - hip)) & ((v >= hip - 0.05) & (v <= shoulder))
      head = _disc(u, v, 0.0, height - headr, headr)
      neck = (np.abs(u) < 0.06) & ((v > shoulder - 0.02) & (v < height - headr))
      arms = (np.abs(np.abs(u) - 0.24) < w) & ((v > hip - 0.12) & (v < shoulder - 0.02))
      legs = (_segment(u, v, (-0.09, hip), (-0.1 - stride, 0.0), np.maximum(0.075, 0.55 * px))
              | _segment(u, v, (0.09, hip), (0.1 + stride, 0.0), np.maximum(0.075, 0.55 * px)))
      index = _layers(legs, head | neck, head & (v > height - 0.8 * headr))  # + hair
      return (torso | head) | (neck | arms) | legs, Look(colours, index, self.tex(win, 0.1, 0.1))

    self.plane_z(z, lateral, (-0.5, 0.5), (0, height + 0.05), body, PERSON)

  def two_wheeler(self, lateral, z, motor: bool, ridden: bool):
    """A bicycle or motorcycle seen from the side (crossing) or from behind (riding along
    the road), and its rider if ridden."""
    rng = self.rng
    cls = MOTORCYCLE if motor else BICYCLE
    frame_colours = np.stack([_PAINTS[rng.integers(len(_PAINTS))], _TYRE])
    side_view = rng.random() < 0.5 or not ridden
    facing = float(rng.choice((-1.0, 1.0)))
    r = 0.31 if motor else 0.34
    rider_colours = np.stack([_CLOTHES[rng.integers(len(_CLOTHES))], _CLOTHES[1],
                              _rgb((30, 30, 35)) * rng.uniform(1, 6) if motor else
                              _SKIN[rng.integers(len(_SKIN))]]).astype(np.float32)
    if side_view:
      rear, front = (-0.55 * facing, r), (0.55 * facing, r)

      def frame(u, v, px, win):
        t = np.maximum(0.09 if motor else 0.025, 0.55 * px)
        tyres = ((np.abs(np.sqrt((u - rear[0]) ** 2 + (v - r) ** 2) - r + t) < t)
                 | (np.abs(np.sqrt((u - front[0]) ** 2 + (v - r) ** 2) - r + t) < t))
        if motor:
          body = (((u / 0.55) ** 2 + ((v - 0.62) / 0.22) ** 2) <= 1) | _segment(
              u, v, (0.35 * facing, 0.9), front, 0.05)
          hubs = _disc(u, v, rear[0], r, 0.13) | _disc(u, v, front[0], r, 0.13)
          return tyres | body | hubs, Look(frame_colours, tyres.view(np.uint8))
        bb, seat, head = (0.0, 0.3), (-0.15 * facing, 0.88), (0.38 * facing, 0.86)
        tubes = (_segment(u, v, rear, bb, t) | _segment(u, v, bb, seat, t)
                 | _segment(u, v, seat, head, t) | _segment(u, v, bb, head, t)
                 | _segment(u, v, head, front, t) | _segment(u, v, seat, rear, t)
                 | _segment(u, v, head, (0.3 * facing, 1.0), t))
        return tyres | tubes, Look(frame_colours, tyres.view(np.uint8))

      hip = (-0.12 * facing, 1.0 if motor else 0.92)
      shoulder, hand = (0.1 * facing, 1.5), (0.3 * facing, 1.0)
      knee, foot = (0.22 * facing, 0.65), (0.08 * facing, 0.3)

      def rider(u, v, px, win):
        w = np.maximum(0.07, 0.55 * px)
        torso = _segment(u, v, hip, shoulder, 0.16)
        head = _disc(u, v, shoulder[0] + 0.06 * facing, shoulder[1] + 0.17, 0.12)
        arm = _segment(u, v, shoulder, hand, w)
        leg = _segment(u, v, hip, knee, 0.09) | _segment(u, v, knee, foot, w)
        return (torso | head | arm | leg,
                Look(rider_colours, _layers(leg, head), self.tex(win, 0.1, 0.1)))

      span = (-0.95, 0.95)
    else:  # from behind: the wheel edge-on, the handlebar and the rider's back
      def frame(u, v, px, win):
        wheel = (np.abs(u) < np.maximum(0.1 if motor else 0.03, 0.55 * px)) & (v < 2 * r)
        bar = (np.abs(u) < (0.35 if motor else 0.28)) & (np.abs(v - 1.0) < np.maximum(
            0.025, 0.55 * px))
        if motor:
          bar |= (np.abs(u) < 0.3) & ((v > 0.35) & (v < 0.85))
        return wheel | bar, Look(frame_colours, wheel.view(np.uint8))

      def rider(u, v, px, win):
        torso = (np.abs(u) < 0.2) & ((v > 0.95) & (v < 1.5))
        head = _disc(u, v, 0.0, 1.64, 0.12)
        legs = (np.abs(np.abs(u) - 0.12) < 0.07) & ((v > 0.35) & (v < 1.0))
        return (torso | head | legs,
                Look(rider_colours, _layers(legs, head), self.tex(win, 0.1, 0.1)))

      span = (-0.45, 0.45)
    self.plane_z(z, lateral, span, (0, 1.2), frame, cls)
    if ridden:
      self.plane_z(z - 0.05, lateral, span, (0.2, 1.8), rider, RIDER)

  # -- vehicles -----------------------------------------------------------------------------

  def vehicle(self, cls, lateral, z, oncoming: bool):
    """A car, truck, bus or tram: its face towards the camera (the back, or the front when
    oncoming), the side the camera sees, and its shadow on the road."""
    rng = self.rng
    width, height, length = {
        CAR: (rng.uniform(1.65, 1.9), rng.uniform(1.4, 1.65), rng.uniform(3.8, 4.9)),
        TRUCK: (rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.8), rng.uniform(6.0, 10.0)),
        BUS: (2.55, rng.uniform(3.0, 3.3), rng.uniform(11.0, 13.0)),
        TRAIN: (2.4, rng.uniform(3.3, 3.6), rng.uniform(25.0, 35.0))}[cls]
    body = ((_PAINTS[rng.integers(len(_PAINTS))] if cls in (CAR, TRUCK) else
             _FLEET[rng.integers(len(_FLEET))]) * rng.uniform(0.9, 1.1, 3))
    cargo = _PAINTS[rng.integers(len(_PAINTS))] if cls == TRUCK else body
    lamp = (240, 240, 220) if oncoming else (200, 20, 20)
    # Materials: 0 body, 1 cargo box, 2 glass, 3 lamp, 4 bumper, 5 tyre.
    colours = _rgb(np.stack([body, cargo, _GLASS, lamp, body * 0.5, _TYRE]))
    hw, belt = width / 2, 0.95 if cls == CAR else 1.0
    wheel_r = 0.32 if cls == CAR else 0.5
    self.shade_ground(lambda zz, d: np.abs(d + self.centre - lateral) < hw + 0.2,
                      rng.uniform(0.35, 0.6), (z - 0.4, z + length),
                      (lateral - hw - 0.2, lateral + hw + 0.2))

    def side(u, v, px, win):
      t = (u - z) / length  # 0 at the end facing the camera
      t = 1 - t if oncoming else t  # 0 at the back
      cargo_box = np.zeros((), bool)
      if cls == CAR:
        rise = (v - belt) / (height - belt)
        roof = (t > 0.22 + 0.1 * rise) & (t < 0.78 - 0.12 * rise)
        inside = ((v > 0.25) & (v < belt)) | ((v >= belt) & (v < height)) & roof
        glass = ((v > belt + 0.08) & (v < height - 0.06)) & roof & (_frac(t * length / 1.2) > 0.08)
      elif cls == TRUCK:
        cargo_box = (t < 0.72) & ((v > 0.9) & (v < height))
        cab = (t > 0.75) & ((v > 0.5) & (v < min(height, 2.9)))
        inside = cargo_box | cab | ((v > 0.5) & (v < 1.0))
        glass = cab & (v > 1.8) & (t > 0.85)
      else:
        inside = (v > 0.35) & (v < height)
        glass = ((v > 1.1) & (v < height - 0.5)) & (_frac(t * length / 1.6) > 0.1)
      if cls == TRAIN:
        wheels = (v < 0.4) & (_frac((u - z) / 8.0) < 0.3)
      else:
        wheels = (_disc(u, v, z + 0.18 * length, wheel_r, wheel_r) |
                  _disc(u, v, z + 0.82 * length, wheel_r, wheel_r))
      tyre = wheels & (~inside | (v < wheel_r * 1.1))
      look = Look(colours, _layers(cargo_box, glass, np.zeros((), bool), np.zeros((), bool),
                                   tyre), self.tex(win, 0.08, 0.05))
      return inside | wheels, look

    def face(u, v, px, win):
      a = np.abs(u)
      if cls == CAR:
        cabin = ((v >= belt) & (v < height)) & (
            a < hw * (0.92 - 0.15 * (v - belt) / (height - belt)))
        inside = ((v > 0.25) & (v < belt)) & (a < hw) | cabin
        glass = cabin & ((v > belt + 0.07) & (v < height - 0.06)) & (a < hw * 0.75)
      else:
        inside = ((v > 0.35) & (v < height)) & (a < hw)
        glass = (v > (1.3 if oncoming or cls != TRUCK else 9.0)) & (v < height - 0.25) & (
            a < hw - 0.15)
        if cls in (BUS, TRAIN):
          glass |= ((v > 1.5) & (v < height - 0.4)) & (a < hw - 0.2)
      wheels = ((a > hw - 0.3) & (a < hw - 0.03)) & (v < 0.4)
      lamps = ((a > hw - 0.4) & (a < hw - 0.08)) & (np.abs(v - 0.8) < 0.08)
      bumper = ((v < 0.4) & (v > 0.25)) & (a < hw)
      box = inside if cls == TRUCK and not oncoming else np.zeros((), bool)
      index = _layers(box, glass, lamps, bumper, wheels & ~inside)
      return inside | wheels, Look(colours, index, self.tex(win, 0.08, 0.05))

    face_side = -1.0 if lateral - hw > 0 else (1.0 if lateral + hw < 0 else 0.0)
    if face_side:
      self.plane_x(lateral + face_side * hw, (z, z + length), (0, height), side, cls,
                   self.side_shade(-face_side))
    if cls == TRAIN:  # pantograph
      self.plane_z(z + length * 0.4, lateral, (-0.8, 0.8), (height, height + 0.9),
                   lambda u, v, px, win: (_segment(u, v, (-0.5, height), (0.4, height + 0.85),
                                                   np.maximum(0.03, 0.55 * px)),
                                          Look(_rgb((50, 50, 50)))), TRAIN)
    self.plane_z(z, lateral, (-hw - 0.05, hw + 0.05), (0, height), face, cls)

  # -- the scene ----------------------------------------------------------------------------

  def layout(self):
    """What stands where: (buildings, walls/fences/hedges, everything else), each a list of
    tuples starting with the near depth."""
    rng, cam = self.rng, self.cam
    z_near = cam.f * cam.cam_h / (self.h - cam.y_h) + 1.0  # the ground at the bottom row
    buildings, middle, items = [], [], []
    parked = {}
    for side in (-1, 1):
      kerb = self.road_half + self.verge[side]
      front = kerb + self.walk[side]
      built = rng.random() < 0.85
      z = rng.uniform(1.0, 15.0)
      while z < self.z_far:
        length = rng.uniform(8, 35)
        if built and rng.random() < 0.8:
          setback = front + (rng.uniform(0, 3) if rng.random() < 0.5 else 0.0)
          buildings.append((z, side, setback, length, rng.uniform(6, 28), rng.uniform(8, 20)))
        else:  # a gap or a park: trees behind the sidewalk
          for _ in range(int(rng.integers(1, 4))):
            items.append((rng.uniform(z, z + length), "tree", side, front + rng.uniform(0.5, 8)))
        if rng.random() < 0.25:
          middle.append((z, side, front - 0.1, length))
        z += length
      for _ in range(int(rng.poisson(3))):  # street trees on the sidewalk's outer half
        items.append((rng.uniform(z_near + 2, 90), "tree", side, kerb + self.walk[side] * 0.7))
      for _ in range(int(rng.poisson(2.5))):
        items.append((rng.uniform(z_near + 1, 70), "pole", side, kerb + 0.4))
      for _ in range(int(rng.poisson(2.2))):
        items.append((rng.uniform(z_near + 1, 55), "person", side,
                      kerb + rng.uniform(0.3, max(self.walk[side] - 0.3, 0.4))))
      if rng.random() < 0.2:
        items.append((rng.uniform(z_near + 1, 40), "bicycle", side, kerb + 0.6))
      parked[side] = rng.random() < 0.45
      if parked[side]:  # cars along the kerb
        z = rng.uniform(z_near, 20)
        while z < 80:
          if rng.random() < 0.7:
            items.append((z, "car", side, self.road_half - 1.1))
          z += rng.uniform(5.0, 9.0)
    # Moving traffic (lanes left of the centre come towards the camera), not in a lane
    # taken by parked cars or the tram.
    for k in range(self.lanes):
      offset = -self.road_half + (k + 0.5) * self.lane_w
      if ((k == 0 and parked[-1]) or (k == self.lanes - 1 and parked[1]) or
          (self.tram and abs(offset - self.tram_axis) < 2.0)):
        continue
      z = rng.uniform(z_near + 1.0, 30.0)
      while z < 110:
        draw = rng.random()
        if draw < 0.5:
          kind = str(rng.choice(("car", "truck", "bus"), p=(0.82, 0.12, 0.06)))
          items.append((z, kind, 0, offset))
          z += {"car": 5.0, "truck": 10.0, "bus": 13.0}[kind]
        elif draw < 0.56:
          items.append((z, "rider", 0, offset + rng.uniform(-0.8, 0.8)))
        z += rng.uniform(4.0, 30.0)
    if rng.random() < 0.1:  # someone crossing
      items.append((rng.uniform(z_near + 2, 25), "person", 0, rng.uniform(-1, 1) * self.road_half))
    if self.tram and rng.random() < 0.5:
      items.append((rng.uniform(z_near + 4, 60), "train", 0, self.tram_axis))
    return buildings, middle, items

  def render(self) -> Tuple[np.ndarray, np.ndarray]:
    rng = self.rng
    self.sky()
    self.skyline()
    self.ground()
    if self.sun > 0.7:  # buildings on the side away from the sun shade the street
      s, reach = -self.sun_side, rng.uniform(0, 1.2) * self.road_half
      phase, k = rng.uniform(0, 6.3), rng.uniform(0.05, 0.2)
      self.shade_ground(lambda z, d: s * d > self.road_half - reach + 2 * np.sin(z * k + phase),
                        rng.uniform(0.45, 0.65))
    buildings, middle, items = self.layout()
    # Back to front; buildings and the things along the sidewalk's back first, as they
    # stand behind everything nearer the road whatever their depth.
    for z, side, setback, length, height, depth in sorted(buildings, key=lambda b: -b[0]):
      self.building(side, setback, z, z + length, height, depth)
    for z, side, lateral, length in sorted(middle, key=lambda m: -m[0]):
      self.wall_fence_or_hedge(side, lateral, z, z + length)
    for z, kind, side, offset in sorted(items, key=lambda it: -it[0]):
      lateral = self.centre + (side * offset if side else offset)
      if kind == "tree":
        self.tree(lateral, z)
      elif kind == "pole":
        self.pole(side, lateral, z)
      elif kind == "person":
        self.person(lateral, z)
      elif kind == "bicycle":
        self.two_wheeler(lateral, z, motor=False, ridden=False)
      elif kind == "rider":
        self.two_wheeler(lateral, z, motor=rng.random() < 0.35, ridden=True)
      else:
        cls = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}[kind]
        self.vehicle(cls, lateral, z, oncoming=offset < 0 and side == 0)
    return self._finish()

  def _finish(self):
    """Per-image exposure, white balance, gamma and sensor noise (colours only)."""
    rng = self.rng
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    noise = (rng.random((self.h, self.w), dtype=np.float32) - np.float32(0.5)) * np.float32(
        rng.uniform(3.0, 10.0))  # uniform: cheaper than normal, as good for this
    gamma = (255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.85, 1.2)).round().astype(np.uint8)
    image = np.empty((self.h, self.w, 3), np.uint8)
    for c in range(3):
      plane = self.image[c] * np.float32(gain[c]) + noise
      np.clip(plane, 0, 255, out=plane)
      image[..., c] = np.take(gamma, plane.astype(np.uint8))
    return image, self.mask


def render(rng: np.random.Generator, image_size=DEFAULT_IMAGE_SIZE):
  """One street scene drawn from rng: (image uint8 (H, W, 3), mask uint8 (H, W))."""
  return _Scene(rng, image_size).render()


class SyntheticCity(synthetic.Synthetic):
  """`size` street scenes of `image_size` (h, w) of one split (Synthetic's source, this
  module's renderer)."""
  class_names = CLASS_NAMES
  palette = PALETTE
  dataset = "synthetic_city"
  render = staticmethod(lambda rng, image_size: render(rng, image_size))

  def __init__(self, split: str, size: int, image_size=DEFAULT_IMAGE_SIZE, seed: int = 0):
    super().__init__(split, size, image_size, seed)


def class_frequencies(num_scenes: int, image_size=DEFAULT_IMAGE_SIZE,
                      seed: int = 0) -> np.ndarray:
  """Each class's share of the pixels of the first `num_scenes` training scenes, (19,)."""
  source = SyntheticCity("train", num_scenes, image_size, seed)
  counts = np.zeros(len(CLASS_NAMES), np.int64)
  for index in range(num_scenes):
    counts += np.bincount(source.load(index)[1].ravel(), minlength=len(CLASS_NAMES))
  return counts / counts.sum()


def _open(data_cfg, split):
  size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_eval_size
  return SyntheticCity(split, size, data_cfg.synthetic_image_size, data_cfg.synthetic_seed)


DATASETS.register("synthetic_city", base.DatasetSpec(open=_open, class_names=CLASS_NAMES,
                                                     palette=PALETTE))
