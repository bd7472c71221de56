"""Real-ESRGAN's U-Net discriminator with spectral normalisation, 1 input channel.

BasicSR's `UNetDiscriminatorSN` with the same parameter names, including the legacy
`torch.nn.utils.spectral_norm` keys (`weight_orig`, `weight_u`, `weight_v`) that released
checkpoints use. It returns per-pixel logits at the input resolution (H, W divisible by 8).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, num_in_ch: int = 1, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        self.config = dict(num_in_ch=num_in_ch, num_feat=num_feat, skip_connection=skip_connection)
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def act(t):
            return F.leaky_relu(t, negative_slope=0.2)

        def up(t):
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)


def discriminator_from_state(state: dict[str, torch.Tensor], source: str = "") -> UNetDiscriminatorSN:
    """A 1-channel discriminator from a BasicSR state dict (3-channel conv0 summed over colours)."""
    from ..errors import MRSuperResError

    if "conv0.weight" not in state or "conv9.weight" not in state:
        raise MRSuperResError(f"{source} is not a UNetDiscriminatorSN state dict")
    state = dict(state)
    w = state["conv0.weight"]
    if w.shape[1] == 3:
        state["conv0.weight"] = w.sum(1, keepdim=True)
    model = UNetDiscriminatorSN(1, num_feat=w.shape[0])
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise MRSuperResError(f"discriminator weights {source} do not fit: {' '.join(str(exc).split())[:300]}") from None
    return model
