"""The panel itself, run by panel_emulation.py around a real MRML scene with stand-ins for Qt:
what a fresh Slicer shows on opening the module, the self-test as Reload & Test runs it, a job
finished exactly once with no dialog inside the timer, and an install that cannot start twice.
Against the panel before these were fixed, the same scenarios showed a comparison twice, opened
dialogs inside the timer's callback, raised SkipTest from Reload & Test and re-entered the install."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

EMULATION = Path(__file__).with_name("panel_emulation.py")


def run(scenario: str) -> dict:
    out = subprocess.run([sys.executable, str(EMULATION), scenario], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_a_fresh_slicer_opens_the_module_with_its_logic_and_plan_and_no_torch():
    seen = run("opened")
    assert seen["logic"] and seen["module_logic"]          # slicer.util.getModuleLogic works before any install
    assert any("PyTorch" in line for line in seen["missing"]) and seen["install_shown"]
    assert seen["plan_line"].startswith("in-plane x4 along axial") and "592, 736, 48" in seen["plan_line"]
    assert seen["thick_auto"].startswith("through-plane x4 along axial") and "[148, 184, 12] -> [148, 184, 48]" \
        in seen["thick_auto"]
    assert "through-plane x2 along axial" in seen["thick_two"] and "-> [148, 184, 24]" in seen["thick_two"]
    assert float(seen["spacing_parameter"]) == 2.0                 # the spin box is kept in the parameter node
    assert seen["models"] >= 1 and seen["device_note"] == ""      # no device probe without torch
    assert seen["torch"] is False and seen["dialogs"] == []


def test_reload_and_test_runs_the_panel_part_and_says_the_skip():
    seen = run("self_test")
    assert seen["raised"] is None, seen["raised"]           # no SkipTest escapes into Slicer's error dialog
    assert "Panel test passed" in seen["said"]
    assert any(s.startswith("test_enhance_and_compare skipped: ") and "PyTorch" in s for s in seen["said"])
    assert seen["torch"] is False and seen["dialogs"] == []


def test_finished_jobs_are_handled_once_and_no_dialog_opens_inside_the_timer():
    seen = run("finish_once")
    assert seen["comparisons_shown"] == 1
    assert [d["text"] for d in seen["dialogs"]] == ["Enhance failed: the model file is damaged",
                                                    "training failed: out of memory"]
    assert not any(d["inside_timer"] for d in seen["dialogs"])
    enhance, compare, training = seen["labels"]
    assert enhance == "failed: the model file is damaged" and compare.startswith("SR: SSIM 0.900")
    assert training == "failed: training failed: out of memory"
    assert seen["buttons"] == ["Apply", True, True, True, False] and all(seen["jobs"])
    assert seen["timer_active"] is False


def test_an_install_runs_once_with_the_action_buttons_disabled():
    seen = run("install")
    assert seen["installs"] == 1
    assert not any(seen["enabled_during"].values()), seen["enabled_during"]
    assert all(seen["enabled_after"].values()), seen["enabled_after"]
    assert seen["launched"] == ["enhance"] and seen["enhance_button"] == "Cancel"   # then the Apply goes on
    assert seen["missing_after"] == [] and seen["dialogs"] == []


def test_an_enhance_result_stretched_for_the_network_says_so_in_the_status_line():
    seen = run("enhance_note")
    hot, plain = seen["labels"]
    assert hot.startswith("done: 'hot x4' added to the scene\n") and "25% of its range" in hot
    assert plain == "done: 'plain x4' added to the scene" and seen["dialogs"] == []
