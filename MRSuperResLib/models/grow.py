"""A bigger RRDBNet that computes exactly what a trained one does, so a longer run can start from it.

Why: training a bigger network from scratch throws away what the shipped one learnt; grown this
way, it starts where that one is and can only add to it.

- Wider (`num_feat`, `num_grow_ch`): the old channels keep their weights; every new channel's
  incoming weights and bias start at zero, so it stays zero, while its outgoing weights start
  random (BasicSR's small initialisation) so that it receives a gradient from the first step.
- Deeper (`num_block`): the new RRDBs are appended to the trunk with the last convolution of each
  dense block at zero. Such a dense block is the identity, and an RRDB of three of them returns
  1.2 times its input (its residual scaling 0.2). `conv_body`'s weights are divided by 1.2 for each
  new block, and the output is unchanged.
"""
from __future__ import annotations

import torch

from .rrdbnet import RRDBNet, init_weights

RESIDUAL_SCALE = 1.2            # an RRDB whose dense blocks are the identity returns x * 0.2 + x


def grow(source: RRDBNet, num_block: int, num_feat: int, num_grow_ch: int, seed: int = 0) -> RRDBNet:
    """`source` grown to the given size (each at least the source's); the same function."""
    old = source.config
    nf0, gc0, nb0 = old["num_feat"], old["num_grow_ch"], old["num_block"]
    if num_block < nb0 or num_feat < nf0 or num_grow_ch < gc0:
        raise ValueError(f"a network grows, it does not shrink: {nb0} blocks, {nf0} features, {gc0} growth "
                         f"channels to {num_block}, {num_feat}, {num_grow_ch}")
    arch = {k: v for k, v in old.items() if k not in ("input_skip", "supersample")}
    with torch.random.fork_rng(devices=[]):          # the caller's random stream is left as it was
        torch.manual_seed(seed)
        target = RRDBNet(**{**arch, "num_block": num_block, "num_feat": num_feat, "num_grow_ch": num_grow_ch},
                         input_skip="input_skip" in old, supersample=old.get("supersample", 1))
        init_weights(target, 0.1)
    state = target.state_dict()
    for key, value in source.state_dict().items():
        if key in ("input_skip", "supersample"):
            continue
        new = state[key]
        if value.dim() == 1:                                   # a bias: new channels at zero
            new.zero_()
            new[: value.shape[0]] = value
            continue
        columns = _old_inputs(key, value.shape[1], nf0, gc0, num_feat, num_grow_ch)
        new[value.shape[0]:] = 0                               # new channels start (and stay) at zero
        new[: value.shape[0], columns] = value
    for block in range(nb0, num_block):                       # appended blocks: dense blocks as identity
        for rdb in (1, 2, 3):
            state[f"body.{block}.rdb{rdb}.conv5.weight"].zero_()
            state[f"body.{block}.rdb{rdb}.conv5.bias"].zero_()
    state["conv_body.weight"] /= RESIDUAL_SCALE ** (num_block - nb0)
    target.load_state_dict(state)
    return target.eval()


def _old_inputs(key: str, n_in: int, nf0: int, gc0: int, nf: int, gc: int) -> list[int]:
    """Where the old input channels of convolution `key` sit in the grown one: a dense block's
    conv k sees cat(x, x1, ..., x_{k-1}), each part at its new width."""
    if key.startswith("body.") and ".conv" in key:
        k = int(key.rsplit(".conv", 1)[1][0])
        columns = list(range(nf0))
        for part in range(k - 1):
            columns += [nf + part * gc + i for i in range(gc0)]
        return columns
    return list(range(n_in))                                 # conv_first: sub-pixels; the rest: features
