"""The authors' ENet (Paszke, Chaurasia, Kim and Culurciello 2016), transcribed from Lua Torch
to PyTorch as the reference of segjax/models/enet.py. Tests only.

Source: https://github.com/e-lab/ENet-training, commit
f76214475ace6df38d50fa93a334ed7ffcc93af6 (2017-06-26; the model files last changed in
0daaae355ab0ebb616f498ccdf32690f22adc567, 2016-11-11): train/models/encoder.lua (the
initial block, `_bottleneck` and the encoder sequence; its final 1x1 classifier is the encoder
training stage's and is removed for the decoder) and train/models/decoder.lua (`bottleneck`
with max-unpooling and the final full convolution). Written by Adam Paszke, the paper's first
author.
Licence: the repository's README: "This software is released under a creative commons license
which allows for personal and research use only. For a commercial license please contact the
authors" (CC BY-NC 4.0). This file is a transcription of the layer definitions (a different
language), used only to test segjax's independent implementation; it is not part of the
segjax package.

Layer by layer, as the Lua files build it (Torch7 argument order: SpatialConvolution(in, out,
kW, kH, dW, dH, padW, padH), so `asymetric = 5` is a 1x5 conv then a 5x1 conv in H x W):
  * initial: 3x3/2 conv to 13 channels (with bias) || 2x2/2 max pool of the image -> concat
    (conv first) -> BN(eps 1e-3) -> PReLU(16).
  * encoder bottleneck(input, output, downsample): internal = output / 4;
    conv branch: projection (1x1, or 2x2 stride 2 when downsampling; no bias) -> BN -> PReLU
      -> 3x3 conv (with bias) | dilated 3x3 (with bias) | 1x5 (no bias) then 5x1 (with bias)
      -> BN -> PReLU -> 1x1 expansion (no bias) -> BN -> SpatialDropout (0.01 for the first
      five bottlenecks, 0.1 after);
    shortcut: identity [-> 2x2/2 max pool] [-> zero channels appended up to `output`];
    sum -> PReLU(output).
  * decoder bottleneck(input, output, upsample): internal = output / 4;
    conv branch: 1x1 (no bias) -> BN -> ReLU -> 3x3 conv, or when upsampling a 3x3 full
      convolution stride 2, pad 1, adj 1 (with bias) -> BN -> ReLU -> 1x1 (no bias) -> BN;
    shortcut: identity, or when input != output or upsampling 1x1 conv (no bias) -> BN
      [-> max unpooling with the indices of the encoder pool it mirrors];
    sum -> ReLU.
  * the decoder's upsampling bottlenecks 4.0 and 5.0 unpool with the indices of bottleneck
    2.0's and 1.0's pools (decoder.lua's pooling_modules[3] and [2]); the initial block's
    pool indices are unused.
  * fullconv: 2x2 full convolution stride 2 (with bias) to the classes.
Module names are segjax's (the paper's bottleneck numbers), so a state dict converts to
segjax's tree by the generic layout rules. Torch7 pools in floor mode, so the model runs on
inputs whose sides are multiples of 8, as the original.
"""
import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-3  # every nn.SpatialBatchNormalization(n, 1e-3)


class InitialBlock(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv = nn.Conv2d(3, 13, 3, stride=2, padding=1, bias=True)
    self.bn = nn.BatchNorm2d(16, eps=EPS)
    self.prelu = nn.PReLU(16)

  def forward(self, x):
    x = torch.cat([self.conv(x), F.max_pool2d(x, 2, 2)], 1)
    return self.prelu(self.bn(x))


class EncoderBottleneck(nn.Module):
  """encoder.lua's `_bottleneck(4, true, asymetric, dilated, input, output, downsample)`."""

  def __init__(self, cin, cout, downsample=False, asymmetric=0, dilated=0, dropout=0.1):
    super().__init__()
    internal = cout // 4
    s = 2 if downsample else 1
    self.downsample, self.asymmetric, self.cin, self.cout = downsample, asymmetric, cin, cout
    self.conv1 = nn.Conv2d(cin, internal, s, stride=s, bias=False)
    self.bn1 = nn.BatchNorm2d(internal, eps=EPS)
    self.prelu1 = nn.PReLU(internal)
    if asymmetric:
      pad = (asymmetric - 1) // 2
      self.conv2a = nn.Conv2d(internal, internal, (1, asymmetric), padding=(0, pad), bias=False)
      self.conv2b = nn.Conv2d(internal, internal, (asymmetric, 1), padding=(pad, 0), bias=True)
    elif dilated:
      self.conv2 = nn.Conv2d(internal, internal, 3, padding=dilated, dilation=dilated)
    else:
      self.conv2 = nn.Conv2d(internal, internal, 3, padding=1)
    self.bn2 = nn.BatchNorm2d(internal, eps=EPS)
    self.prelu2 = nn.PReLU(internal)
    self.conv3 = nn.Conv2d(internal, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout, eps=EPS)
    self.dropout = nn.Dropout2d(dropout)
    self.prelu = nn.PReLU(cout)

  def forward(self, x):
    y = self.prelu1(self.bn1(self.conv1(x)))
    y = self.conv2b(self.conv2a(y)) if self.asymmetric else self.conv2(y)
    y = self.prelu2(self.bn2(y))
    y = self.dropout(self.bn3(self.conv3(y)))
    indices = None
    if self.downsample:
      x, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    if self.cout != self.cin:
      n, _, h, w = x.shape
      x = torch.cat([x, x.new_zeros(n, self.cout - self.cin, h, w)], 1)
    return self.prelu(x + y), indices


class DecoderBottleneck(nn.Module):
  """decoder.lua's `bottleneck(input, output, upsample, reverse_module)`."""

  def __init__(self, cin, cout, upsample=False):
    super().__init__()
    internal = cout // 4
    self.upsample = upsample
    self.conv1 = nn.Conv2d(cin, internal, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(internal, eps=EPS)
    if upsample:
      self.conv2 = nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1,
                                      output_padding=1, bias=True)
    else:
      self.conv2 = nn.Conv2d(internal, internal, 3, padding=1)
    self.bn2 = nn.BatchNorm2d(internal, eps=EPS)
    self.conv3 = nn.Conv2d(internal, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout, eps=EPS)
    self.has_shortcut = cin != cout or upsample
    if self.has_shortcut:
      self.shortcut_conv = nn.Conv2d(cin, cout, 1, bias=False)
      self.shortcut_bn = nn.BatchNorm2d(cout, eps=EPS)

  def forward(self, x, indices=None, size=None):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.has_shortcut:
      x = self.shortcut_bn(self.shortcut_conv(x))
      if self.upsample:
        x = F.max_unpool2d(x, indices, 2, 2, output_size=size)
    return F.relu(x + y)


def _section(stage):
  """Bottlenecks {stage}.1 .. {stage}.8 of stages 2 and 3: regular, dilated 2, asymmetric 5,
  dilated 4, regular, dilated 8, asymmetric 5, dilated 16."""
  kinds = ({}, {"dilated": 2}, {"asymmetric": 5}, {"dilated": 4}, {}, {"dilated": 8},
           {"asymmetric": 5}, {"dilated": 16})
  return [(f"bottleneck{stage}_{i + 1}", EncoderBottleneck(128, 128, **kw))
          for i, kw in enumerate(kinds)]


class ENet(nn.Module):
  """encoder.lua's model without its classifier, then decoder.lua's layers."""

  def __init__(self, num_classes):
    super().__init__()
    self.initial = InitialBlock()
    self.bottleneck1_0 = EncoderBottleneck(16, 64, downsample=True, dropout=0.01)
    for i in range(1, 5):
      setattr(self, f"bottleneck1_{i}", EncoderBottleneck(64, 64, dropout=0.01))
    self.bottleneck2_0 = EncoderBottleneck(64, 128, downsample=True)
    for stage in (2, 3):
      for name, module in _section(stage):
        setattr(self, name, module)
    self.bottleneck4_0 = DecoderBottleneck(128, 64, upsample=True)
    self.bottleneck4_1 = DecoderBottleneck(64, 64)
    self.bottleneck4_2 = DecoderBottleneck(64, 64)
    self.bottleneck5_0 = DecoderBottleneck(64, 16, upsample=True)
    self.bottleneck5_1 = DecoderBottleneck(16, 16)
    self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, bias=True)

  def forward(self, x):
    x = self.initial(x)
    size1 = x.shape[2:]
    x, indices1 = self.bottleneck1_0(x)
    for i in range(1, 5):
      x, _ = getattr(self, f"bottleneck1_{i}")(x)
    size2 = x.shape[2:]
    x, indices2 = self.bottleneck2_0(x)
    for stage in (2, 3):
      for i in range(1, 9):
        x, _ = getattr(self, f"bottleneck{stage}_{i}")(x)
    x = self.bottleneck4_0(x, indices2, size2)
    x = self.bottleneck4_2(self.bottleneck4_1(x))
    x = self.bottleneck5_0(x, indices1, size1)
    x = self.bottleneck5_1(x)
    return self.fullconv(x)
