"""The batch entry point ships with the extension (MRSuperResLib/in_slicer/batch.py) and runs the way
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
from MRSuperResLib.in_slicer.scene import headless_scene
headless_scene()
def _exit(code):
    raise SystemExit(code)
slicer.util.exit = _exit
"""

def python_code(argv: list[str]) -> subprocess.CompletedProcess:
    code = APP_PRELUDE + f"import MRSuperResLib.in_slicer.batch as b; b.main({argv!r}, exit=True)\nprint('not reached')\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
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
    assert "MRSuperResLib/in_slicer/batch.py" in cmake


def test_the_batch_scripts_choices_are_the_librarys_options():
    """slicer/batch.py takes its lists from MRSuperResLib.options (no torch: a missing torch is one
    clear line), not from a copy."""
    import ast

    tree = ast.parse((ROOT / "MRSuperResLib" / "in_slicer" / "batch.py").read_text())
    calls = {n.args[0].value: {k.arg: k.value for k in n.keywords} for n in ast.walk(tree)
             if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)}
    for flag, default, choices in (("--consistency", "CONSISTENCY_DEFAULT", "CONSISTENCY_MODES"),
                                   ("--direction", "DIRECTION_DEFAULT", "DIRECTIONS")):
        assert calls[flag]["default"].id == default and calls[flag]["choices"].id == choices
    code = "import sys, MRSuperResLib.in_slicer.batch as b; b._run(['--help'])\nassert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)

def test_the_batch_script_exits_when_the_library_cannot_even_be_imported(tmp_path):
    """Slicer --python-script does not end by itself: a failure before main() still exits 1."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'MRSuperResLib.in_slicer.batch':\n"
        "            raise ImportError('a broken install (test)')\n"
        "sys.meta_path.insert(0, Broken())\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "slicer_enhance.py"), "--input", "x.nii.gz",
                          "--output", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "could not start" in out.stderr and "broken install" in out.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_input_leaves_no_output_folder(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "slicer_enhance.py"), "--input",
                          str(tmp_path / "missing.nii.gz"), "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "missing.nii.gz" in out.stderr
    assert not (tmp_path / "out").exists()
