"""The official OCNet heads (PyTorch), vendored as the reference of
segjax/models/heads/oc_head.py. Tests only.

Source: https://github.com/openseg-group/OCNet.pytorch, commit
679a45b8996c583817bbdde81971a47d71c7654e (2020-07-15): oc_module/base_oc_block.py,
oc_module/pyramid_oc_block.py, oc_module/asp_oc_block.py, and the `context`, `layer5`, `cls`
and `dsn` layers of network/resnet101_{base,pyramid,asp}_oc.py.
Licence: MIT, Copyright (c) 2018 Yuhui Yuan (LICENSE): "Permission is hereby granted, free of
charge, to any person obtaining a copy of this software ... The above copyright notice and
this permission notice shall be included in all copies or substantial portions of the
Software." (The files' headers: "Created by: RainbowSecret ... Modified from:
https://github.com/AlexHex7/Non-local_pytorch ... licensed under the MIT-style license found
in the LICENSE file".)

Edits, none of which changes the computation:
  * InPlaceABNSync (a CUDA extension) -> `InPlaceABNSync` below: BatchNorm2d + leaky ReLU
    (slope 0.01) in plain torch, the maths of the repository's own pure-torch `ABN`
    (inplace_abn/bn.py, defaults activation="leaky_relu", slope=0.01); `BatchNorm2d` =
    InPlaceABNSync(activation='none') as in the files.
  * The torch-version switches are gone: F.upsample(..., align_corners=True) (the torch 0.4
    branch the paper's results used) -> F.interpolate(..., align_corners=True);
    nn.init.constant -> nn.init.constant_; ASP_OC_Module.forward's Variable / tuple input
    switch keeps the tensor path.
  * The network files hard-code 2048 input channels and C = 512; `context_*`, `dsn` take them
    as arguments so the tests can run them at small widths (the defaults are the official
    ones).
"""
import functools

import torch
from torch import nn
from torch.nn import functional as F


class InPlaceABNSync(nn.Module):
  """BatchNorm2d followed by the activation, as inplace_abn's ABN (state dict: weight, bias,
  running_mean, running_var, like the original)."""

  def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
               activation="leaky_relu", slope=0.01):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(num_features))
    self.bias = nn.Parameter(torch.zeros(num_features))
    self.register_buffer("running_mean", torch.zeros(num_features))
    self.register_buffer("running_var", torch.ones(num_features))
    self.eps, self.momentum, self.activation, self.slope = eps, momentum, activation, slope

  def forward(self, x):
    x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                     self.training, self.momentum, self.eps)
    if self.activation == "leaky_relu":
      return F.leaky_relu(x, negative_slope=self.slope)
    return x


BatchNorm2d = functools.partial(InPlaceABNSync, activation='none')


# ---- oc_module/base_oc_block.py ---------------------------------------------------------

class _SelfAttentionBlock(nn.Module):
    def __init__(self, in_channels, key_channels, value_channels, out_channels=None, scale=1):
        super(_SelfAttentionBlock, self).__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        if out_channels == None:
            self.out_channels = in_channels
        self.pool = nn.MaxPool2d(kernel_size=(scale, scale))
        self.f_key = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                kernel_size=1, stride=1, padding=0),
            InPlaceABNSync(self.key_channels),
        )
        self.f_query = self.f_key
        self.f_value = nn.Conv2d(in_channels=self.in_channels, out_channels=self.value_channels,
            kernel_size=1, stride=1, padding=0)
        self.W = nn.Conv2d(in_channels=self.value_channels, out_channels=self.out_channels,
            kernel_size=1, stride=1, padding=0)
        nn.init.constant_(self.W.weight, 0)
        nn.init.constant_(self.W.bias, 0)

    def forward(self, x):
        batch_size, h, w = x.size(0), x.size(2), x.size(3)
        if self.scale > 1:
            x = self.pool(x)

        value = self.f_value(x).view(batch_size, self.value_channels, -1)
        value = value.permute(0, 2, 1)
        query = self.f_query(x).view(batch_size, self.key_channels, -1)
        query = query.permute(0, 2, 1)
        key = self.f_key(x).view(batch_size, self.key_channels, -1)

        sim_map = torch.matmul(query, key)
        sim_map = (self.key_channels**-.5) * sim_map
        sim_map = F.softmax(sim_map, dim=-1)

        context = torch.matmul(sim_map, value)
        context = context.permute(0, 2, 1).contiguous()
        context = context.view(batch_size, self.value_channels, *x.size()[2:])
        context = self.W(context)
        if self.scale > 1:
            context = F.interpolate(input=context, size=(h, w), mode='bilinear', align_corners=True)
        return context


class SelfAttentionBlock2D(_SelfAttentionBlock):
    def __init__(self, in_channels, key_channels, value_channels, out_channels=None, scale=1):
        super(SelfAttentionBlock2D, self).__init__(in_channels,
                                                    key_channels,
                                                    value_channels,
                                                    out_channels,
                                                    scale)


class BaseOC_Module(nn.Module):
    def __init__(self, in_channels, out_channels, key_channels, value_channels, dropout, sizes=([1])):
        super(BaseOC_Module, self).__init__()
        self.stages = []
        self.stages = nn.ModuleList([self._make_stage(in_channels, out_channels, key_channels, value_channels, size) for size in sizes])
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2*in_channels, out_channels, kernel_size=1, padding=0),
            InPlaceABNSync(out_channels),
            nn.Dropout2d(dropout)
            )

    def _make_stage(self, in_channels, output_channels, key_channels, value_channels, size):
        return SelfAttentionBlock2D(in_channels,
                                    key_channels,
                                    value_channels,
                                    output_channels,
                                    size)

    def forward(self, feats):
        priors = [stage(feats) for stage in self.stages]
        context = priors[0]
        for i in range(1, len(priors)):
            context += priors[i]
        output = self.conv_bn_dropout(torch.cat([context, feats], 1))
        return output


class BaseOC_Context_Module(nn.Module):
    def __init__(self, in_channels, out_channels, key_channels, value_channels, dropout, sizes=([1])):
        super(BaseOC_Context_Module, self).__init__()
        self.stages = []
        self.stages = nn.ModuleList([self._make_stage(in_channels, out_channels, key_channels, value_channels, size) for size in sizes])
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, padding=0),
            InPlaceABNSync(out_channels),
            )

    def _make_stage(self, in_channels, output_channels, key_channels, value_channels, size):
        return SelfAttentionBlock2D(in_channels,
                                    key_channels,
                                    value_channels,
                                    output_channels,
                                    size)

    def forward(self, feats):
        priors = [stage(feats) for stage in self.stages]
        context = priors[0]
        for i in range(1, len(priors)):
            context += priors[i]
        output = self.conv_bn_dropout(context)
        return output


# ---- oc_module/pyramid_oc_block.py ------------------------------------------------------

class _PyramidSelfAttentionBlock(nn.Module):
    def __init__(self, in_channels, key_channels, value_channels, out_channels=None, scale=1):
        super(_PyramidSelfAttentionBlock, self).__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        if out_channels == None:
            self.out_channels = in_channels
        self.f_key = nn.Sequential(
            nn.Conv2d(in_channels=self.in_channels, out_channels=self.key_channels,
                kernel_size=1, stride=1, padding=0),
            InPlaceABNSync(self.key_channels)
        )
        self.f_query = self.f_key
        self.f_value = nn.Conv2d(in_channels=self.in_channels, out_channels=self.value_channels,
            kernel_size=1, stride=1, padding=0)
        self.W = nn.Conv2d(in_channels=self.value_channels, out_channels=self.out_channels,
            kernel_size=1, stride=1, padding=0)
        nn.init.constant_(self.W.weight, 0)
        nn.init.constant_(self.W.bias, 0)

    def forward(self, x):
        batch_size, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)

        local_x = []
        local_y = []
        step_h, step_w = h//self.scale, w//self.scale
        for i in range(0, self.scale):
            for j in range(0, self.scale):
                start_x, start_y = i*step_h, j*step_w
                end_x, end_y = min(start_x+step_h, h), min(start_y+step_w, w)
                if i == (self.scale-1):
                    end_x = h
                if j == (self.scale-1):
                    end_y = w
                local_x += [start_x, end_x]
                local_y += [start_y, end_y]

        value = self.f_value(x)
        query = self.f_query(x)
        key = self.f_key(x)

        local_list = []
        local_block_cnt = 2*self.scale*self.scale
        for i in range(0, local_block_cnt, 2):
            value_local = value[:,:,local_x[i]:local_x[i+1],local_y[i]:local_y[i+1]]
            query_local = query[:,:,local_x[i]:local_x[i+1],local_y[i]:local_y[i+1]]
            key_local = key[:,:,local_x[i]:local_x[i+1],local_y[i]:local_y[i+1]]

            h_local, w_local = value_local.size(2), value_local.size(3)
            value_local = value_local.contiguous().view(batch_size, self.value_channels, -1)
            value_local = value_local.permute(0, 2, 1)

            query_local = query_local.contiguous().view(batch_size, self.key_channels, -1)
            query_local = query_local.permute(0, 2, 1)
            key_local = key_local.contiguous().view(batch_size, self.key_channels, -1)

            sim_map = torch.matmul(query_local, key_local)
            sim_map = (self.key_channels**-.5) * sim_map
            sim_map = F.softmax(sim_map, dim=-1)

            context_local = torch.matmul(sim_map, value_local)
            context_local = context_local.permute(0, 2, 1).contiguous()
            context_local = context_local.view(batch_size, self.value_channels, h_local, w_local)
            local_list.append(context_local)

        context_list = []
        for i in range(0, self.scale):
            row_tmp = []
            for j in range(0, self.scale):
                row_tmp.append(local_list[j+i*self.scale])
            context_list.append(torch.cat(row_tmp, 3))

        context = torch.cat(context_list, 2)
        context = self.W(context)

        return context


class PyramidSelfAttentionBlock2D(_PyramidSelfAttentionBlock):
    def __init__(self, in_channels, key_channels, value_channels, out_channels=None, scale=1):
        super(PyramidSelfAttentionBlock2D, self).__init__(in_channels,
                                                            key_channels,
                                                            value_channels,
                                                            out_channels,
                                                            scale)


class Pyramid_OC_Module(nn.Module):
    def __init__(self, in_channels, out_channels, dropout, sizes=([1])):
        super(Pyramid_OC_Module, self).__init__()
        self.group = len(sizes)
        self.stages = []
        self.stages = nn.ModuleList([self._make_stage(in_channels, out_channels, in_channels // 2, in_channels, size) for size in sizes])
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2*in_channels*self.group, out_channels, kernel_size=1, padding=0),
            InPlaceABNSync(out_channels),
            nn.Dropout2d(dropout)
            )
        self.up_dr = nn.Sequential(
            nn.Conv2d(in_channels, in_channels*self.group, kernel_size=1, padding=0),
            InPlaceABNSync(in_channels*self.group)
            )

    def _make_stage(self, in_channels, output_channels, key_channels, value_channels, size):
        return PyramidSelfAttentionBlock2D(in_channels,
                                            key_channels,
                                            value_channels,
                                            output_channels,
                                            size)

    def forward(self, feats):
        priors = [stage(feats) for stage in self.stages]
        context = [self.up_dr(feats)]
        for i in range(0, len(priors)):
            context += [priors[i]]
        output = self.conv_bn_dropout(torch.cat(context, 1))
        return output


# ---- oc_module/asp_oc_block.py ----------------------------------------------------------

class ASP_OC_Module(nn.Module):
    def __init__(self, features, out_features=256, dilations=(12, 24, 36)):
        super(ASP_OC_Module, self).__init__()
        self.context = nn.Sequential(nn.Conv2d(features, out_features, kernel_size=3, padding=1, dilation=1, bias=True),
                                   InPlaceABNSync(out_features),
                                   BaseOC_Context_Module(in_channels=out_features, out_channels=out_features, key_channels=out_features//2, value_channels=out_features,
                                    dropout=0, sizes=([2])))
        self.conv2 = nn.Sequential(nn.Conv2d(features, out_features, kernel_size=1, padding=0, dilation=1, bias=False),
                                   InPlaceABNSync(out_features))
        self.conv3 = nn.Sequential(nn.Conv2d(features, out_features, kernel_size=3, padding=dilations[0], dilation=dilations[0], bias=False),
                                   InPlaceABNSync(out_features))
        self.conv4 = nn.Sequential(nn.Conv2d(features, out_features, kernel_size=3, padding=dilations[1], dilation=dilations[1], bias=False),
                                   InPlaceABNSync(out_features))
        self.conv5 = nn.Sequential(nn.Conv2d(features, out_features, kernel_size=3, padding=dilations[2], dilation=dilations[2], bias=False),
                                   InPlaceABNSync(out_features))

        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(out_features * 5, out_features * 2, kernel_size=1, padding=0, dilation=1, bias=False),
            InPlaceABNSync(out_features * 2),
            nn.Dropout2d(0.1)
            )

    def forward(self, x):
        feat1 = self.context(x)
        feat2 = self.conv2(x)
        feat3 = self.conv3(x)
        feat4 = self.conv4(x)
        feat5 = self.conv5(x)
        out = torch.cat((feat1, feat2, feat3, feat4, feat5), 1)
        output = self.conv_bn_dropout(out)
        return output


# ---- network/resnet101_{base,pyramid,asp}_oc.py: the layers after the backbone -----------

def context_base_oc(in_channels=2048, c=512):
    """resnet101_base_oc.py `self.context`."""
    return nn.Sequential(
        nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1),
        InPlaceABNSync(c),
        BaseOC_Module(in_channels=c, out_channels=c, key_channels=c // 2, value_channels=c // 2,
        dropout=0.05, sizes=([1]))
        )


def context_pyramid_oc(in_channels=2048, c=512):
    """resnet101_pyramid_oc.py `self.layer5` then `self.context`."""
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1),
            BatchNorm2d(c)
            ),
        Pyramid_OC_Module(in_channels=c, out_channels=c, dropout=0.05, sizes=([1, 2, 3, 6])),
        )


def context_asp_oc(in_channels=2048, c=512):
    """resnet101_asp_oc.py `self.context`."""
    return nn.Sequential(
        nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1),
        InPlaceABNSync(c),
        ASP_OC_Module(c, c // 2)
        )


def cls(num_classes, c=512):
    """`self.cls` of the three networks."""
    return nn.Conv2d(c, num_classes, kernel_size=1, stride=1, padding=0, bias=True)


def dsn(num_classes, in_channels=1024, c=512, oc_type="base"):
    """`self.dsn` (stage-3 supervision): ABN in base / asp, BatchNorm2d (no activation) in
    pyramid; dropout 0.05 (0.10 in asp)."""
    norm = BatchNorm2d(c) if oc_type == "pyramid" else InPlaceABNSync(c)
    return nn.Sequential(
        nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1),
        norm,
        nn.Dropout2d(0.10 if oc_type == "asp" else 0.05),
        nn.Conv2d(c, num_classes, kernel_size=1, stride=1, padding=0, bias=True)
        )


CONTEXTS = {"base": context_base_oc, "pyramid": context_pyramid_oc, "asp": context_asp_oc}
