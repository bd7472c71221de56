"""The batch entry point ships with the extension (MRSuperResLib/slicer_batch.py) and runs the way
the README gives it for an installed Slicer: `--python-code` calling main([...], exit=True)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_model

pytest.importorskip("slicer")

REAL_LR = ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"
# The scene Slicer --no-main-window has; slicer.util.exit ends Python as the application's does
APP_PRELUDE = """
import slicer
from MRSuperResLib.slicer_scene import headless_scene
headless_scene()
def _exit(code):
    raise SystemExit(code)
slicer.util.exit = _exit
"""

def python_code(argv: list[str]) -> subprocess.CompletedProcess:
    code = APP_PRELUDE + f"import MRSuperResLib.slicer_batch as b; b.main({argv!r}, exit=True)\nprint('not reached')\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_python_code_form_enhances_reports_failures_and_exits(tmp_path, save_tiny):
    model = str(save_tiny(tiny_model(4), "t"))
    out = tmp_path / "out"
    done = python_code(["--input", str(REAL_LR), str(tmp_path / "missing.nii.gz"), "--output", str(out),
                        "--model", model])
    assert done.returncode == 1, done.stderr
    assert "not reached" not in done.stdout
    assert (out / "aniso_vox_sr.nii.gz").is_file()
    errors = [line for line in done.stderr.splitlines() if line.startswith("mrsuperres:")]
    assert len(errors) == 1 and "missing.nii.gz: file not found" in errors[0], done.stderr
    assert python_code(["--input", str(REAL_LR), "--output", str(tmp_path / "o2"), "--model", model]).returncode == 0


def test_the_extension_installs_the_batch_module():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "MRSuperResLib/slicer_batch.py" in cmake


def test_the_batch_scripts_consistency_choices_are_the_librarys():
    """slicer_batch declares them without importing torch (so a missing torch is one clear line)."""
    import ast

    from MRSuperResLib import consistency

    tree = ast.parse((ROOT / "MRSuperResLib" / "slicer_batch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
             and isinstance(n.args[0], ast.Constant) and n.args[0].value == "--consistency"]
    kw = {k.arg: ast.literal_eval(k.value) for k in calls[0].keywords if k.arg in ("default", "choices")}
    assert kw == {"default": consistency.DEFAULT, "choices": consistency.MODES}
