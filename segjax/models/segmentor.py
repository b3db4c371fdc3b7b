"""EncoderDecoder: backbone -> optional neck -> decode head(s) (+ auxiliary heads).

The common shape of most segmentation models (mmseg's EncoderDecoder and, with a sequence of
decode heads, its CascadeEncoderDecoder: OCRNet's FCN stage feeds its OCR stage). Models that
do not split this way (U-Net, SegNet) register a whole module in MODELS instead. Every model
returns `(logits, aux_logits)` and carries `aux_loss_weights`, one per auxiliary output, so
losses, training and evaluation never look inside.

Each head config may carry `loss`, a sequence of `{"name", "weight", **options}` (mmseg's
`loss_decode`; segjax.losses.LOSSES names them; absent = cross-entropy, weight 1). The model
carries them as `output_losses`, one tuple per output in the order of (logits, *aux_logits).
A head with extra outputs (DANet's pam and cam) trains them with its own `loss` list, or with
`extra_losses`, one list per extra output, where they differ (PIDNet's boundary outputs; such
a head declares `extra_output_channels` and must be given them).

A head config may also carry `align_corners` (mmseg's key, default False): True upsamples that
head's logits to the labels (losses) and to the image (evaluation) with corners aligned, as
mmseg does for STDC's decode and detail heads. The model carries them as `align_corners`, one
bool per output in the same order.

Submodule names follow mmseg's (`decode_head`, `decode_head_0`, `auxiliary_head_0`), so an
mmseg checkpoint converts by renaming.
"""
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

# segjax.losses imports segjax.models.layers, so this import can meet a half-initialised
# module: use `losses.*` inside functions only.
from segjax import losses
from segjax.errors import ConfigError
from segjax.models.registry import BACKBONES, HEADS, MODELS, NECKS


class EncoderDecoder(nn.Module):
  backbone: nn.Module
  decode_head: Union[nn.Module, Sequence[nn.Module]]  # a sequence = a cascade
  neck: Optional[nn.Module] = None
  auxiliary_head: Sequence[nn.Module] = ()
  # Loss weight of each auxiliary output, in the order returned: earlier cascade stages,
  # the decode head's own extra outputs (DANet's), then the auxiliary heads.
  aux_loss_weights: Tuple[float, ...] = ()
  # The losses of each output (main logits, then the auxiliary ones in the order above): a
  # tuple of segjax.losses.LossSpec per output. () = cross-entropy on every output.
  output_losses: Tuple[Tuple[Tuple[str, float, Tuple], ...], ...] = ()
  # Per output, in the same order: upsampled with corners aligned (mmseg's head
  # `align_corners=True`). () = none is.
  align_corners: Tuple[bool, ...] = ()

  def __call__(self, images: jnp.ndarray, train: bool = False
               ) -> Tuple[jnp.ndarray, Tuple[jnp.ndarray, ...]]:
    """images: normalised NHWC floats. Returns logits at the head's resolution (1/4 or 1/8
    of the input) and a tuple of auxiliary logits; callers resize them to the labels."""
    features = self.backbone(images, train=train)
    if self.neck is not None:
      features = self.neck(features, train=train)
    aux = []
    if isinstance(self.decode_head, nn.Module):
      logits = self.decode_head(features, train=train)
    else:
      logits = self.decode_head[0](features, train=train)
      for head in self.decode_head[1:]:
        aux.append(logits)
        logits = head(features, logits, train=train)
    if isinstance(logits, tuple):  # a head with several supervised outputs
      logits, extra = logits
      aux.extend(extra)
    aux.extend(head(features, train=train) for head in self.auxiliary_head)
    return logits, tuple(aux)


def _head_losses(cfg, where: str, num_classes: int, channels: Optional[int] = None
                 ) -> Tuple[Tuple[str, float, Tuple], ...]:
  """A loss list as LossSpecs, each validated now for an output of `channels` channels
  (default num_classes); ConfigErrors name `where[i]` (where = e.g. "model.decode_head.loss")."""
  if cfg is None:
    return losses.DEFAULT_LOSSES
  if isinstance(cfg, str) or hasattr(cfg, "keys") or not isinstance(cfg, Sequence) or not cfg:
    raise ConfigError(f"{where} must be a non-empty sequence of mappings like "
                      f"{{'name': 'cross_entropy', 'weight': 1.0}}, got {cfg!r}")
  return tuple(losses.loss_spec(entry, f"{where}[{i}]", num_classes, channels)
               for i, entry in enumerate(cfg))


def _build_head(cfg, where: str, num_classes: int, dtype: Any):
  """(head, its loss weight, its losses, the loss weights of its extra outputs, their losses,
  its align_corners).

  The extra outputs use the head's own losses (DANet's pam and cam, as mmseg's), or the
  config's `extra_losses`, one list per extra output. A head whose extra outputs are not
  class logits (`extra_output_channels` other than num_classes) needs `extra_losses`."""
  cfg = dict(cfg)
  weight = float(cfg.pop("loss_weight", 1.0))
  head_losses = _head_losses(cfg.pop("loss", None), f"{where}.loss", num_classes)
  extra_cfg = cfg.pop("extra_losses", None)
  align_corners = cfg.pop("align_corners", False)
  if not isinstance(align_corners, bool):
    raise ConfigError(f"{where}.align_corners must be True or False, got {align_corners!r}")
  head = HEADS.build(cfg, where, num_classes=num_classes, dtype=dtype)
  extra_weights = tuple(float(w) for w in getattr(head, "extra_loss_weights", ()))
  channels = tuple(getattr(head, "extra_output_channels", ())) or (num_classes,) * len(
      extra_weights)
  if extra_cfg is None:
    if any(c != num_classes for c in channels):
      raise ConfigError(f"{where}.extra_losses is missing: {cfg['name']}'s extra outputs have "
                        f"{channels} channels, not class logits; give one loss list per output")
    return (head, weight, head_losses, extra_weights, (head_losses,) * len(extra_weights),
            align_corners)
  if (isinstance(extra_cfg, str) or not isinstance(extra_cfg, Sequence)
      or len(extra_cfg) != len(extra_weights)):
    raise ConfigError(f"{where}.extra_losses must hold one loss list per extra output of "
                      f"{cfg['name']} ({len(extra_weights)}), got {extra_cfg!r}")
  extra_losses = tuple(_head_losses(entry, f"{where}.extra_losses[{i}]", num_classes, c)
                       for i, (entry, c) in enumerate(zip(extra_cfg, channels)))
  return head, weight, head_losses, extra_weights, extra_losses, align_corners


def build_encoder_decoder(num_classes: int, backbone, decode_head, neck=None,
                          auxiliary_head=(), dtype: Any = None) -> EncoderDecoder:
  """Builds each part from its config (a mapping with "name"); see configs/common.py.

  `decode_head` is one head config or a sequence of them (a cascade; each but the last
  carries its `loss_weight`); every `auxiliary_head` entry carries its `loss_weight`. Any head
  may carry `loss` (see the module docstring).
  """
  weights, output_losses, corners = [], [], []  # of the auxiliary outputs, in order
  if isinstance(decode_head, (list, tuple)):
    heads = []
    for i, cfg in enumerate(decode_head):
      head, weight, head_losses, extra, extra_losses, aligned = _build_head(
          cfg, f"model.decode_head[{i}]", num_classes, dtype)
      if i < len(decode_head) - 1:
        if extra:
          raise ConfigError(f"model.decode_head[{i}]: {cfg['name']} has several outputs; only "
                            "the last stage of a cascade may")
        weights.append(weight)
        output_losses.append(head_losses)
        corners.append(aligned)
      elif weight != 1.0:
        raise ConfigError(f"model.decode_head[{i}].loss_weight: the last stage's loss is the "
                          f"main loss (weight 1), got {weight}")
      heads.append(head)
    decode, main_losses, extra_weights, main_aligned = tuple(heads), head_losses, extra, aligned
  else:
    decode, _, main_losses, extra_weights, extra_losses, main_aligned = _build_head(
        decode_head, "model.decode_head", num_classes, dtype)
  weights.extend(extra_weights)
  output_losses.extend(extra_losses)
  corners.extend([main_aligned] * len(extra_weights))
  aux = []
  for i, cfg in enumerate(auxiliary_head):
    if "loss_weight" not in cfg:
      raise ConfigError(f"model.auxiliary_head[{i}].loss_weight is missing (mmseg uses 0.4)")
    head, weight, head_losses, extra, _, aligned = _build_head(
        cfg, f"model.auxiliary_head[{i}]", num_classes, dtype)
    if extra:
      raise ConfigError(f"model.auxiliary_head[{i}]: {cfg['name']} has several outputs; use "
                        "it as the decode head")
    aux.append(head)
    weights.append(weight)
    output_losses.append(head_losses)
    corners.append(aligned)
  return EncoderDecoder(
      backbone=BACKBONES.build(backbone, "model.backbone", dtype=dtype),
      decode_head=decode,
      neck=NECKS.build(neck, "model.neck", dtype=dtype) if neck else None,
      auxiliary_head=tuple(aux), aux_loss_weights=tuple(weights),
      output_losses=(main_losses, *output_losses),
      align_corners=(main_aligned, *corners) if main_aligned or any(corners) else ())


MODELS.register("encoder_decoder", build_encoder_decoder)


def encoder_decoder_with(head: str):
  """A MODELS entry for a paper's model that is EncoderDecoder with the decode head `head`
  (`MODELS.register("ocnet", encoder_decoder_with("oc_head"))`), so a config names the paper:
  `{"name": "ocnet", "backbone": {...}, "decode_head": {"oc_type": "asp"}}`.

  `decode_head` holds the head's arguments and may leave out its name (absent: the head with
  its defaults); a config that names another head gets an EncoderDecoder with that one, as
  the registry walk of tests/test_models.py builds every model with the test config's head.
  """
  def build(num_classes: int, backbone, decode_head=None, neck=None, auxiliary_head=(),
            dtype: Any = None) -> EncoderDecoder:
    return build_encoder_decoder(num_classes, backbone, {"name": head, **(decode_head or {})},
                                 neck, auxiliary_head, dtype)
  return build
