"""A grown network computes what its source does, and its new parts learn."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from MRSuperResLib.models.grow import grow
from MRSuperResLib.models.rrdbnet import RRDBNet


def trained_like(model: RRDBNet) -> RRDBNet:
    """Weights far from BasicSR's small start, so every layer's nonlinearity is exercised."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("scale,skip", [(1, True), (4, False), (2, False), (8, False)])
@pytest.mark.parametrize("size", [(3, 16, 8), (1, 24, 8), (1, 16, 12), (2, 32, 16)])
def test_the_grown_network_computes_the_same(scale, skip, size):
    torch.manual_seed(0)
    source = trained_like(RRDBNet(1, 1, scale=scale, num_feat=16, num_block=1, num_grow_ch=8, input_skip=skip))
    grown = grow(source.eval(), *size)
    assert (grown.config["num_block"], grown.config["num_feat"], grown.config["num_grow_ch"]) == size
    assert ("input_skip" in grown.config) == skip
    x = torch.rand(2, 1, 16, 24)
    with torch.no_grad():
        ref, out = source(x), grown(x)
    assert ref.abs().max() > 0.1 and torch.allclose(out, ref, atol=1e-5)


def test_new_channels_and_blocks_receive_gradients():
    source = trained_like(tiny_model(4))
    grown = grow(source, 2, 24, 12).train()
    x = torch.rand(2, 1, 12, 12)
    (grown(x) - torch.rand(2, 1, 48, 48)).abs().mean().backward()
    new_rows = grown.body[0].rdb1.conv1.weight.grad[8:]          # channels 8..11 did not exist
    assert new_rows.abs().sum() > 0
    assert grown.body[1].rdb1.conv5.weight.grad.abs().sum() > 0   # the appended block's zeroed conv
    assert grown.conv_first.weight.grad[16:].abs().sum() > 0


def test_a_network_is_not_shrunk():
    with pytest.raises(ValueError, match="does not shrink"):
        grow(tiny_model(4, blocks=2), 1, 16, 8)


def test_growing_leaves_the_callers_random_stream_alone():
    source = tiny_model(4)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grow(source, 2, 24, 12)
    assert torch.equal(torch.rand(3), expected)
