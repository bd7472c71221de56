"""`mrsuperres enhance` end to end: an independent fp32 RRDBNet, units, cancel, the real model."""
from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from conftest import tiny_model, write_nifti
from MRSuperResLib.cli import main
from MRSuperResLib.errors import Cancelled
from MRSuperResLib.pipeline.consistency import anchor_to_input
from MRSuperResLib.pipeline.enhance import enhance_volume, super_resolve_slices
from MRSuperResLib.scans.volumes import Volume


def independent_rrdbnet(state: dict, x: torch.Tensor) -> torch.Tensor:
    """RRDBNet forward written from the papers' description, straight from the tensors."""
    def conv(name, t):
        return F.conv2d(t, state[f"{name}.weight"].double(), state[f"{name}.bias"].double(), padding=1)

    def lrelu(t):
        return torch.where(t >= 0, t, 0.2 * t)

    x = x.double()
    f = int(round(state["conv_first.weight"].shape[1] ** 0.5))   # 1-channel: unshuffle factor
    if f > 1:                                                     # space-to-depth by hand
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(b, c * f * f, h // f, w // f)
    feat = conv("conv_first", x)
    trunk = feat
    n_block = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    for b in range(n_block):
        t = trunk
        for r in (1, 2, 3):
            feats = [t]
            for c in range(1, 5):
                feats.append(lrelu(conv(f"body.{b}.rdb{r}.conv{c}", torch.cat(feats, 1))))
            t = t + 0.2 * conv(f"body.{b}.rdb{r}.conv5", torch.cat(feats, 1))
        trunk = trunk + 0.2 * t
    feat = feat + conv("conv_body", trunk)
    n_up = sum(1 for k in state if k.startswith("conv_up") and k.endswith(".weight"))
    for i in range(1, n_up + 1):
        feat = lrelu(conv(f"conv_up{i}", feat.repeat_interleave(2, 2).repeat_interleave(2, 3)))
    return conv("conv_last", lrelu(conv("conv_hr", feat))).float()


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def lively(model):
    """Make every part of a random tiny model matter (BasicSR's init leaves the dense blocks
    near zero) and give its output a mean of 0.5 and a spread of 0.15 on a probe input, so
    that clipping to [0, 1] hides nothing."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("body.") and name.endswith("weight"):
                p.mul_(20.0)
        y = model(torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0)))
        k = 0.15 / float(y.std())
        model.conv_last.weight.mul_(k)
        model.conv_last.bias.mul_(k).add_(0.5 - float(y.mean()) * k)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_enhance_cli_matches_an_independent_implementation(tmp_path, save_tiny, sample_volume, scale, capsys):
    data, affine = sample_volume
    vol = data[40:72, 50:78, 20:23] / data.max()
    vol = (vol - vol.min()) / (vol.max() - vol.min())                # spans [0, 1]
    src = write_nifti(tmp_path / "in.nii.gz", vol.astype(np.float32), affine)
    weights = save_tiny(lively(tiny_model(scale, blocks=2)), "tiny")
    out, raw = tmp_path / "out.nii.gz", tmp_path / "raw.nii.gz"
    assert main(["enhance", str(src), "-o", str(raw), "--model", str(weights), "--axis", "2", "--no-anchor"]) == 0
    assert "consistency none" in capsys.readouterr().out
    assert main(["enhance", str(src), "-o", str(out), "--model", str(weights), "--axis", "2"]) == 0
    state = load_file(str(weights))
    slices = vol.transpose(2, 0, 1).astype(np.float32)
    with torch.no_grad():
        ref = independent_rrdbnet(state, torch.from_numpy(slices.copy())[:, None].float())
    ref = np.clip(ref[:, 0].numpy(), 0, 1)
    assert 0.2 < np.mean((ref > 0) & (ref < 1))                      # the comparison is not all clipping
    got = nib.load(str(raw)).get_fdata()
    assert got.shape == ref.transpose(1, 2, 0).shape
    assert psnr(got, ref.transpose(1, 2, 0)) >= 40                   # --no-anchor: the network's output
    anchored = anchor_to_input(ref, slices).transpose(1, 2, 0)       # by default: anchored to the input
    assert psnr(nib.load(str(out)).get_fdata(), anchored) >= 40
    assert psnr(anchored, ref.transpose(1, 2, 0)) < 35               # (which is not the same thing)


def test_enhance_self_ensemble_averages_eight_symmetric_runs(tmp_path, save_tiny, sample_volume, capsys):
    data, affine = sample_volume
    src = write_nifti(tmp_path / "in.nii.gz", (data[40:72, 50:78, 20:22] / data.max()).astype(np.float32), affine)
    weights = save_tiny(lively(tiny_model(4, blocks=1)), "tiny")
    plain, ens = tmp_path / "plain.nii.gz", tmp_path / "ens.nii.gz"
    assert main(["enhance", str(src), "-o", str(plain), "--model", str(weights), "--axis", "2"]) == 0
    assert main(["enhance", str(src), "-o", str(ens), "--model", str(weights), "--axis", "2", "--self-ensemble"]) == 0
    assert "(self-ensemble x8)" in capsys.readouterr().out
    a, b = nib.load(str(plain)), nib.load(str(ens))
    assert np.allclose(a.affine, b.affine) and a.shape == b.shape
    assert np.abs(a.get_fdata() - b.get_fdata()).max() > 1e-4          # a random network is not symmetric


@pytest.mark.slow
def test_real_model_matches_an_independent_implementation(tmp_path, default_model_path, sample_volume):
    """RealESRGAN_x4plus (1-channel) via `enhance --model FILE` vs the independent forward pass."""
    data, affine = sample_volume
    vol = data[60:84, 70:94, 24:26] / data.max()
    vol = (vol - vol.min()) / (vol.max() - vol.min())
    src = write_nifti(tmp_path / "in.nii.gz", vol.astype(np.float32), affine)
    out = tmp_path / "out.nii"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(default_model_path), "--axis", "2",
                 "--no-anchor"]) == 0
    got = nib.load(str(out)).get_fdata()
    with torch.no_grad():
        ref = independent_rrdbnet(load_file(str(default_model_path)),
                                  torch.from_numpy(vol.transpose(2, 0, 1).copy())[:, None].float())
    ref = np.clip(ref[:, 0].numpy().transpose(1, 2, 0), 0, 1)
    assert psnr(got, ref) >= 40


def test_intensity_units_and_anatomy_kept(sample_volume):
    """Output overlays its input: same units, same range, and the same anatomy (bicubic-like)."""
    from MRSuperResLib.scans.resample import downsample, upsample
    data, affine = sample_volume
    hr = data[:, :, 20:24] * 5.0 + 200.0
    lr = np.moveaxis(downsample(np.moveaxis(hr, 2, 0), 4, "bilinear"), 0, 2)
    model = tiny_model(4, blocks=1)
    with torch.no_grad():                       # a model that is bicubic-free but near-identity
        for p in model.parameters():
            p.zero_()
        model.conv_first.weight[0, 0, 1, 1] = 1
        for conv in (model.conv_up1, model.conv_up2, model.conv_hr, model.conv_last):
            conv.weight[0, 0, 1, 1] = 1
    out, facts = enhance_volume(Volume(lr, np.diag([4, 4, 1, 1.0])), model, axis=2, device="cpu")
    assert facts["intensity_range"] == [pytest.approx(float(lr.min())), pytest.approx(float(lr.max()))]
    assert out.data.min() >= lr.min() - 1e-3 and out.data.max() <= lr.max() + 1e-3
    assert abs(out.data.mean() - hr.mean()) < 0.02 * hr.mean()
    bicubic = np.moveaxis(upsample(np.moveaxis(lr, 2, 0), 4, "bicubic"), 0, 2)
    assert np.corrcoef(out.data.ravel(), bicubic.ravel())[0, 1] > 0.95


def test_cancel_and_progress():
    model = tiny_model(4)
    stack = np.random.rand(6, 16, 16).astype(np.float32)
    seen, stop = [], threading.Event()

    def progress(done, total):
        seen.append((done, total))
        if done >= 2:
            stop.set()
    with pytest.raises(Cancelled):
        super_resolve_slices(model, stack, device="cpu", batch_size=2, progress=progress, cancel=stop)
    assert seen == [(0, 6), (2, 6)]
    seen.clear()
    out = super_resolve_slices(model, stack, device="cpu", batch_size=4, progress=progress)
    assert out.shape == (6, 64, 64) and seen[-1] == (6, 6)
    # batching does not change results
    one = super_resolve_slices(model, stack, device="cpu", batch_size=1)
    assert np.allclose(out, one, atol=1e-5)


def test_out_of_memory_halves_the_batch():
    """A batch that cannot be allocated is retried smaller, with the same result."""
    model = tiny_model(4)
    calls = []
    forward = model.forward

    def picky(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return forward(x)
    model.forward = picky
    stack = np.random.rand(5, 12, 12).astype(np.float32)
    out = super_resolve_slices(model, stack, device="cpu", precision="fp32", batch_size=8)
    assert calls[:3] == [5, 2, 2] and sum(calls[1:]) == 5
    model.forward = forward
    assert np.allclose(out, super_resolve_slices(model, stack, device="cpu", precision="fp32", batch_size=1), atol=1e-5)
