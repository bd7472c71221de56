"""Decide once, pass down: the direction, the plan and the consistency step are each decided once
per `mrsuperres enhance` and once per panel Apply (the plan shown, then the job), counted by
wrapping every reference the package holds to the deciding functions."""
from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import sys

import numpy as np
import pytest
from conftest import SAMPLE, tiny_model, write_nifti

import MRSuperResLib
from MRSuperResLib.cli import main
from MRSuperResLib.models.rrdbnet import RRDBNet
from MRSuperResLib.pipeline import consistency, plan
from MRSuperResLib.scans import geometry

DECISIONS = (plan.choose_direction, plan.make_plan, consistency.for_model)


@pytest.fixture
def calls(monkeypatch):
    """{function name: calls} for DECISIONS, every module's reference to them wrapped."""
    for info in pkgutil.walk_packages(MRSuperResLib.__path__, "MRSuperResLib."):
        if not info.name.endswith("__main__") and "slicer" not in info.name:
            importlib.import_module(info.name)
    counts = {f.__name__: 0 for f in DECISIONS}
    for function in DECISIONS:
        def counted(*args, _function=function, **kwargs):
            counts[_function.__name__] += 1
            return _function(*args, **kwargs)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("MRSuperResLib") and \
                    getattr(module, function.__name__, None) is function:
                monkeypatch.setattr(module, function.__name__, counted)
    return counts


def thick_volume(tmp_path):
    import nibabel as nib
    from MRSuperResLib.scans.slice_profile import simulate_thick

    img = nib.load(str(SAMPLE))
    data = simulate_thick(np.asarray(img.dataobj, np.float32)[:48, :48, :24], 2, 4.0)
    return write_nifti(tmp_path / "thick.nii.gz", data, geometry.resample_affine(img.affine, 2, 0.25, along=(2,)))


def test_one_cli_enhance_decides_each_thing_once(tmp_path, save_tiny, calls, capsys):
    import nibabel as nib

    img = nib.load(str(SAMPLE))
    src = write_nifti(tmp_path / "t1.nii.gz", np.asarray(img.dataobj, np.float32)[:40, :40, 20:23], img.affine)
    model = save_tiny(tiny_model(4), "tiny4")
    assert main(["enhance", str(src), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(model),
                 "--precision", "fp32"]) == 0
    assert calls == {"choose_direction": 1, "make_plan": 1, "for_model": 1}


def test_one_cli_through_plane_enhance_decides_each_thing_once(tmp_path, save_tiny, calls, capsys):
    x1 = save_tiny(RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4, input_skip=True), "x1")
    assert main(["enhance", str(thick_volume(tmp_path)), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(x1),
                 "--precision", "fp32"]) == 0
    assert "through-plane" in capsys.readouterr().err
    assert calls["choose_direction"] == 1 and calls["make_plan"] == 1 and calls["for_model"] == 0


def test_the_python_api_decides_once_too(tmp_path, save_tiny, calls):
    from MRSuperResLib import enhance_volume, read_volume

    hr, facts = enhance_volume(read_volume(thick_volume(tmp_path)), save_tiny_x1(save_tiny), direction="auto",
                               precision="fp32")
    assert facts["direction"] == "through-plane"
    assert calls["choose_direction"] == 1 and calls["make_plan"] == 1


def save_tiny_x1(save_tiny):
    from MRSuperResLib.models.catalog import load_model

    return load_model(str(save_tiny(RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4,
                                            input_skip=True), "x1")))[0]


def test_one_panel_apply_decides_each_thing_once(tmp_path, save_tiny, calls):
    """What the panel's Apply does (MRSuperRes.py `launch`): the plan it shows, then enhance with
    that plan; the job (here in this process, as the child runs it) decides nothing again."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    headless_scene()
    import nibabel as nib

    img = nib.load(str(SAMPLE))
    node = load_volume(write_nifti(tmp_path / "t1.nii.gz", np.asarray(img.dataobj, np.float32)[:40, :40, 20:23],
                                   img.affine), "t1")
    model = save_tiny(tiny_model(4), "tiny4")
    logic = MRSuperResLogic()
    for name in calls:
        calls[name] = 0
    shown = logic.plan(node, "auto", "auto")
    sr = logic.enhance(node, model=str(model), axis="auto", direction=shown.direction, plan=shown,
                       precision="fp32", inProcess=True)
    assert calls == {"choose_direction": 1, "make_plan": 1, "for_model": 1}
    assert json.loads(sr.GetAttribute("MRSuperRes.facts"))["axis"] == shown.axis


def test_the_child_job_receives_the_plan(tmp_path, save_tiny, monkeypatch):
    """The serialised plan is in the job's folder, so the child needs no choice of its own."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from MRSuperResLib.in_slicer import logic as logic_module
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    headless_scene()
    node = load_volume(thick_volume(tmp_path), "thick")
    specs = []

    def job(cmd, folder, **kwargs):               # read what the child would get, start nothing
        specs.append(json.loads((folder / "job.json").read_text()))
        shutil.rmtree(folder)

    monkeypatch.setattr(logic_module, "Job", job)
    x1 = save_tiny(RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4, input_skip=True), "x1")
    logic = logic_module.MRSuperResLogic()
    shown = logic.plan(node)
    logic.enhance(node, model=str(x1), plan=shown, waitForCompletion=False)
    assert specs[0]["options"]["plan"] == shown.as_facts()
    assert specs[0]["options"]["plan"]["direction"] == "through-plane"


def test_bad_input_is_refused_before_the_engine_is_calibrated(tmp_path, save_tiny, monkeypatch, capsys):
    """Each refusal is one line before any timing run: calibrating ("auto") never comes first."""
    from MRSuperResLib import Volume, enhance_volume
    from MRSuperResLib.engine import calibration
    from MRSuperResLib.errors import MRSuperResError

    def never(*args, **kwargs):
        raise AssertionError("calibrated before the input was checked")

    monkeypatch.setattr(calibration, "choose", never)
    x4, thick = tiny_model(4), read_thick(tmp_path)
    nan = np.full((16, 16, 3), np.nan, np.float32)
    for volume, model, kwargs, message in (
            (Volume(nan, np.eye(4)), x4, {}, "NaN or infinite"),
            (thick, x4, dict(direction="through-plane"), "needs an x1 through-plane model"),
            (thick, x4, dict(direction="in-plane", spacing=1.0), "--spacing applies to --direction through-plane"),
            (Volume(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), x4, {}, "4D image")):
        with pytest.raises(MRSuperResError, match=message):
            enhance_volume(volume, model, **kwargs)
    # the command line says what is wrong with --spacing before it looks for a model of that scale
    assert main(["enhance", str(thick_volume(tmp_path)), "-o", str(tmp_path / "o.nii.gz"), "--direction", "in-plane",
                 "--scale", "3", "--spacing", "1"]) == 2
    assert "--spacing applies to --direction through-plane" in capsys.readouterr().err


def read_thick(tmp_path):
    from MRSuperResLib import read_volume

    return read_volume(thick_volume(tmp_path))
