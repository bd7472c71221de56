"""The Real-ESRGAN generator (RRDBNet) with BasicSR's parameter names.

Built exactly as BasicSR builds it so that released checkpoints load with a strict key and
shape check: x4 is conv_first -> 23 RRDB -> conv_body (+ skip) -> two (nearest x2, conv_upN,
LeakyReLU) stages -> conv_hr -> conv_last. x2 and x1 feed the same x4 trunk with the input
pixel-unshuffled by 2 or 4 (channels x4 or x16). x8 (the two-stage ESRGAN thesis) adds a third upsampling stage,
`conv_up3`, after `conv_up2`; it has no unshuffle.

`input_skip` adds the input to the output (x1, the through-plane models) or its bicubic
upsampling (x2, x4, x8), so the network learns the correction to it rather than the image
itself: rebuilding every pixel through an unshuffle and nearest-neighbour upsamplings is slow
to learn (an x1 network from scratch on a CPU had not reached cubic interpolation after 1000
iterations; an x2 network from the x4 trunk was still 0.9 dB below bicubic after 1000). It is a
buffer in the state dict, so a weights file says whether it has one; BasicSR's own RRDBNet has
no such skip, so such files are for MRSuperRes.

`supersample` k builds the network for scale x k and averages each k x k block of its output:
the image is made on a grid k times finer and re-acquired with a box, the partial-volume model
of a voxel. An x2 model so built is the x4 network with every weight unchanged, which is how
the shipped x2 model started (docs/models.md: +2.6 dB over bicubic on the validation subjects,
against +0.3 dB for a pixel-unshuffle x2 trained about as long from the same x4 trunk). A
buffer, as `input_skip`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SCALES = (1, 2, 4, 8)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        init_weights(self, 0.1)  # as BasicSR: dense-block convs start small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaling 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


def unshuffle_factor(scale: int) -> int:
    """How much the input is pixel-unshuffled before the trunk (x2 -> 2, x1 -> 4, else 1)."""
    return {1: 4, 2: 2}.get(scale, 1)


class RRDBNet(nn.Module):
    """1-channel (by default) Real-ESRGAN generator; `scale` is 1, 2, 4 or 8."""

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, scale: int = 4,
                 num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32, input_skip: bool = False,
                 supersample: int = 1):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"RRDBNet scale must be one of {SCALES}, not {scale}")
        if supersample != 1 and (scale == 1 or scale * supersample not in SCALES):
            raise ValueError(f"supersample {supersample} needs an in-plane scale whose product with it is one of "
                             f"{SCALES[1:]}, not x{scale}")
        if input_skip and num_in_ch != num_out_ch:
            raise ValueError("input_skip is for networks with as many outputs as inputs")
        self.scale = scale
        self.config = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, scale=scale,
                           num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
        if input_skip:                       # only then: the configs (and cache keys) of others stay as they were
            self.config["input_skip"] = True
            self.register_buffer("input_skip", torch.ones(()))
        if supersample != 1:
            self.config["supersample"] = supersample
            self.register_buffer("supersample", torch.tensor(float(supersample)))
        self.inner_scale = inner = scale * supersample       # the scale the layers are built for
        f = unshuffle_factor(inner)
        self.conv_first = nn.Conv2d(num_in_ch * f * f, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if inner == 8:
            self.conv_up3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (pixel-unshuffle)."""
        return unshuffle_factor(self.inner_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = unshuffle_factor(self.inner_scale)
        feat = F.pixel_unshuffle(x, f) if f > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        ups = [self.conv_up1, self.conv_up2] + ([self.conv_up3] if self.inner_scale == 8 else [])
        for conv in ups:
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if self.inner_scale != self.scale:
            out = F.avg_pool2d(out, self.inner_scale // self.scale)
        if "input_skip" not in self.config:
            return out
        if self.scale == 1:
            return out + x
        return out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).to(out.dtype)


def init_weights(model: nn.Module, scale: float = 0.1) -> None:
    """BasicSR's default_init_weights: kaiming-normal convs times `scale`, zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data *= scale
            if m.bias is not None:
                m.bias.data.zero_()
