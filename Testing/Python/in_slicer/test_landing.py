"""A large result lands without stalling Slicer's main thread: the child writes the output and
its maps in VTK's memory order with their display ranges, and the parent fills the nodes from a
memory map in steps of at most nodes.LANDING_BYTES, one per poll, with nothing computed on the
whole volume in between. (How long the longest poll takes: scripts/maintainers/poll_stall.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, tiny_model

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRSuperResLib.in_slicer import nodes  # noqa: E402
from MRSuperResLib.in_slicer.logic import MRSuperResLogic  # noqa: E402
from MRSuperResLib.in_slicer.scene import headless_scene, load_volume  # noqa: E402

REAL_LR = ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"


@pytest.mark.slow
def test_a_result_with_maps_lands_in_small_steps_one_per_poll(tmp_path, save_tiny, monkeypatch):
    headless_scene()
    node = load_volume(REAL_LR, "aniso")
    model = save_tiny(tiny_model(4), "tiny4")
    logic = MRSuperResLogic()
    reference = logic.enhance(node, model=str(model), axis=2, precision="fp32", maps=True, inProcess=True)
    slices = slicer.util.arrayFromVolume(reference).shape[0]

    def whole_volume_percentile(*args, **kwargs):
        raise AssertionError("a display range computed in Slicer's main thread")

    one_slice = slicer.util.arrayFromVolume(reference)[0].nbytes
    monkeypatch.setattr(nodes, "LANDING_BYTES", one_slice)                # a step: one output slice
    monkeypatch.setattr(np, "percentile", whole_volume_percentile)        # the child measured them
    job = logic.enhance(node, model=str(model), axis=2, precision="fp32", maps=True, waitForCompletion=False)
    landing_polls = 0
    while job.poll() == "running":
        if job.process.poll() is not None and job.events and job.events[-1].get("event") == "done":
            landing_polls += 1
    assert job.status == "done", job.error
    assert landing_polls >= 3 * slices - 3                   # the output and both maps, slice by slice
    sr = job.result
    assert np.array_equal(slicer.util.arrayFromVolume(sr), slicer.util.arrayFromVolume(reference))
    for name in ("consistency", "uncertainty"):
        made = slicer.mrmlScene.GetNodeByID(sr.GetAttribute(f"MRSuperRes.map.{name}"))
        ref = slicer.mrmlScene.GetNodeByID(reference.GetAttribute(f"MRSuperRes.map.{name}"))
        assert np.array_equal(slicer.util.arrayFromVolume(made), slicer.util.arrayFromVolume(ref))
        assert made.GetDisplayNode().GetWindow() == pytest.approx(ref.GetDisplayNode().GetWindow())
    assert json.loads(sr.GetAttribute("MRSuperRes.facts"))["self_ensemble"] is True
    assert not job.folder.exists()                           # the job folder goes once the nodes are made


def test_a_failing_landing_step_removes_what_it_made_and_the_job_folder(tmp_path, monkeypatch):
    """Nothing half-made: a node whose filling fails is removed, and the job reports one line."""
    headless_scene()
    from MRSuperResLib.scans.volumes import Volume

    count = slicer.mrmlScene.GetNumberOfNodes()
    volume = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), np.eye(4))
    monkeypatch.setattr(nodes, "LANDING_BYTES", 1)
    steps = nodes.add_volume_node_steps(volume, "partial")
    next(steps)
    with pytest.raises(RuntimeError):
        steps.throw(RuntimeError("disk gone"))
    assert slicer.mrmlScene.GetNumberOfNodes() == count
    made = nodes.add_volume_node(volume, "whole")
    assert np.array_equal(slicer.util.arrayFromVolume(made), volume.data.transpose(2, 1, 0))


@pytest.mark.slow
def test_cancel_while_a_result_lands_leaves_the_scene_as_it_was(tmp_path, save_tiny, monkeypatch):
    headless_scene()
    node = load_volume(REAL_LR, "aniso")
    model = save_tiny(tiny_model(4), "tiny4")
    monkeypatch.setattr(nodes, "LANDING_BYTES", 1)                         # a step: one slice
    count = slicer.mrmlScene.GetNumberOfNodes()
    job = MRSuperResLogic().enhance(node, model=str(model), axis=2, precision="fp32", maps=True,
                                    waitForCompletion=False)
    steps = 0
    while job.poll() == "running":
        if job.process.poll() is not None and job.events and job.events[-1].get("event") == "done":
            steps += 1
            if steps == 5:                      # the output node is half filled
                job.cancel()
    assert job.status == "cancelled" and steps == 5
    assert slicer.mrmlScene.GetNumberOfNodes() == count and not job.folder.exists()
