"""Thick-slice scans at the sizes users bring: the default spacing is no finer than needed (and the
plan says how to get isotropic voxels), and a long run takes one orientation of planes and says so."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import oblique_affine, tiny_model

from MRSuperResLib.engine.slices import SliceEngine
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.options import AUTO_FINEST_MM, LONG_RUN_S
from MRSuperResLib.pipeline.enhance import enhance_volume
from MRSuperResLib.pipeline.plan import make_plan
from MRSuperResLib.scans import slice_profile
from MRSuperResLib.scans.volumes import Volume


def scan(spacing, shape=(512, 512, 120)) -> Volume:
    return Volume(np.zeros(shape, np.float32), oblique_affine(spacing))


def test_the_default_spacing_is_the_plane_but_no_finer_than_needed():
    mprage = make_plan(scan((0.41, 0.41, 1.5)), "through-plane", 2, "auto")
    assert mprage.factor == 2 and mprage.output_shape == [512, 512, 240]
    assert mprage.output_spacing[2] == pytest.approx(AUTO_FINEST_MM)
    hint = [w for w in mprage.warnings if "--spacing 0.41 for isotropic voxels" in w]
    assert hint and "1.8x the voxels and the time" in hint[0]
    asked = make_plan(scan((0.41, 0.41, 1.5)), "through-plane", 2, "auto", spacing=0.41)
    assert asked.output_shape[2] == 439 and not any("isotropic" in w for w in asked.warnings)
    for spacing, factor in (((0.88, 0.88, 4.4), 5), ((1, 1, 5), 5), ((0.45, 0.45, 0.9), 2)):
        plan = make_plan(scan(spacing, (64, 64, 12)), "through-plane", 2, "auto")
        assert plan.factor == pytest.approx(factor) and not any("isotropic" in w for w in plan.warnings)


def test_a_long_run_takes_one_orientation_and_says_how_to_take_two():
    volume = scan((0.41, 0.41, 1.5))
    two = 2 * 512 * 512 * 240
    slow = make_plan(volume, "through-plane", 2, "auto", seconds_per_voxel=2 * LONG_RUN_S / two)
    assert slow.orientations == 1 and slow.seconds == pytest.approx(LONG_RUN_S)
    assert any("two would take about 20 min: --orientations 2" in w for w in slow.warnings)
    assert "one orientation of planes" in slow.summary()
    fast = make_plan(volume, "through-plane", 2, "auto", seconds_per_voxel=0.5 * LONG_RUN_S / two)
    assert fast.orientations == 2 and "two orientations" in fast.summary()
    forced = make_plan(volume, "through-plane", 2, "auto", seconds_per_voxel=2 * LONG_RUN_S / two, orientations=2)
    assert forced.orientations == 2 and forced.seconds == pytest.approx(2 * LONG_RUN_S)
    with pytest.raises(MRSuperResError, match="--orientations must be 1, 2 or auto"):
        make_plan(volume, "through-plane", 2, "auto", orientations=3)
    assert make_plan(volume, "in-plane", 2, "auto", seconds_per_voxel=1.0).orientations is None


def test_one_orientation_runs_half_the_planes_and_maps_need_two(monkeypatch):
    hr = np.zeros((24, 20, 40), np.float32)
    hr[:, :, 22] = 1.0
    thick = Volume(slice_profile.simulate_thick(hr, 2, 5.0), np.diag([1.0, 1.0, 5.0, 1.0]))
    seen = []

    def identity(self, x):
        seen.append(x.shape)
        return np.clip(x, 0, 1)

    monkeypatch.setattr(SliceEngine, "forward", identity)
    plan = make_plan(thick, "through-plane", 2, "asked for", orientations=1)
    out, facts = enhance_volume(thick, tiny_model(1), plan=plan, device="cpu", precision="fp32")
    assert len(seen) == 1 and seen[0][0] == 24                           # the 24 planes of one orientation
    assert facts["slices"] == 24 and out.data.shape == (24, 20, 40)
    with pytest.raises(MRSuperResError, match="--maps needs --orientations 2"):
        enhance_volume(thick, tiny_model(1), plan=make_plan(thick, "through-plane", 2, "", orientations=1),
                       device="cpu", precision="fp32", maps=True)

