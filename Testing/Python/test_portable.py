"""Nothing Unix-only where Windows would reach it: with `resource`, `fcntl`, `termios`, `pwd` and
`grp` unimportable for the package's own code (a sitecustomize on PYTHONPATH, which reaches
child processes too), every module imports and an auto-precision enhance runs, calibration
included."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, SAMPLE, tiny_model, write_nifti

UNIX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp")

SITECUSTOMIZE = f'''
import sys

BLOCKED = {UNIX_ONLY!r}


class NoUnixOnly:
    """Refuses the Unix-only modules to imports made by MRSuperResLib's own code (torch and the
    standard library keep theirs: on Windows they have their own code paths)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen")):
            frame = frame.f_back
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if importer.startswith("MRSuperResLib"):
            raise ImportError(f"No module named {{name!r}} (Windows emulation: imported by {{importer}})")
        return None


sys.meta_path.insert(0, NoUnixOnly())
'''


@pytest.mark.slow
def test_the_package_and_an_auto_precision_enhance_need_no_unix_only_module(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    import nibabel as nib

    from MRSuperResLib.models.weights import save_model

    img = nib.load(str(SAMPLE))
    src = write_nifti(tmp_path / "t1.nii.gz", np.asarray(img.dataobj, np.float32)[:40, :40, 20:23], img.affine)
    weights = tmp_path / "tiny.safetensors"
    save_model(tiny_model(4), weights, {"training_data": "random init (test)", "iterations": 0})
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import MRSuperResLib
        try:
            import resource
        except ImportError:
            raise SystemExit("the emulation must not block the standard library's own imports")
        for info in pkgutil.walk_packages(MRSuperResLib.__path__, "MRSuperResLib."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
        blocked = [m for m in {UNIX_ONLY!r} if m in sys.modules and any(
            getattr(mod, m, None) is sys.modules[m] for n, mod in sys.modules.items() if n.startswith("MRSuperResLib"))]
        assert not blocked, blocked
        from MRSuperResLib.cli import main
        sys.exit(main(["enhance", {str(src)!r}, "-o", {str(tmp_path / "sr.nii.gz")!r}, "--model", {str(weights)!r},
                       "--precision", "auto", "-v"]))
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
               MRSUPERRES_HOME=str(tmp_path / "home"))             # nothing cached: calibration runs
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "precision" in out.stdout and (tmp_path / "sr.nii.gz").exists()
    assert (tmp_path / "home" / "calibration.json").exists() or "only precision" in out.stdout or \
        "no bf16 units" in out.stdout


def test_the_emulation_blocks_what_the_package_imports(tmp_path):
    """The check can fail: a module of the package that imports `resource` is refused."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probe = tmp_path / "MRSuperResLib_probe.py"
    probe.write_text("import resource\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(tmp_path)]))
    out = subprocess.run([sys.executable, "-c", "import MRSuperResLib_probe"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "Windows emulation" in out.stderr
