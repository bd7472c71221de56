"""The Slicer panel's Qt-free parts and the packaging: which dependencies get installed and with
which pip arguments (Slicer 5.12+ and older), the requirement list against pyproject.toml, the
torch minimum, the training output folder, LICENSE, the CTest registration, Python 3.9."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from MRSuperResLib import options
from conftest import ROOT, SAMPLE

sys.path.insert(0, str(ROOT / "MRSuperRes"))
import MRSuperRes as module  # noqa: E402
from MRSuperResSetup import dependencies as panel  # noqa: E402

PANEL_FILE = ROOT / "MRSuperRes" / "MRSuperRes.py"

# Slicer 5.8's own packages at typical versions; nibabel and safetensors missing, scikit-image too old
VERSIONS = {"torch": "2.5.1+cu121", "numpy": "1.26.4", "scipy": "1.13.1", "SimpleITK": "2.4.0",
            "requests": "2.32.3", "pillow": "10.4.0", "nibabel": None, "pynrrd": "1.1.1",
            "scikit-image": "0.20.0", "safetensors": None, "matplotlib": "3.9.2", "tqdm": "4.66.5", "onnx": "1.16.2"}
WANTED = ["nibabel>=5.0,<6", "scikit-image>=0.21,<0.27", "safetensors>=0.4,<1"]
CONSTRAINTS = "numpy==1.26.4\nscipy==1.13.1\nSimpleITK==2.4.0\nrequests==2.32.3\npillow==10.4.0\n"


def pyproject_dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        return tomllib.loads(text)["project"]["dependencies"]
    except ImportError:                                    # Python < 3.11
        block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
        return re.findall(r'^\s*"([^"]+)"', block, re.M)


def test_the_requirement_list_is_pyprojects_without_torch():
    deps = pyproject_dependencies()
    torch = [d for d in deps if panel.split_requirement(d)[0] == "torch"]
    assert sorted(panel.PIP_REQUIREMENTS) == sorted(set(deps) - set(torch))
    assert panel.TORCH_REQUIREMENT in panel.split_requirement(torch[0])[1].split(",")    # same minimum


def test_what_is_installed_and_the_constraints_for_a_missing_package_set():
    assert panel.packages_to_install(VERSIONS) == WANTED
    assert panel.constraints_text(VERSIONS) == CONSTRAINTS
    assert panel.slicer_package_problems(VERSIONS) == []
    assert panel.dependency_lines(VERSIONS) == ["nibabel>=5.0,<6", "scikit-image>=0.21,<0.27 (installed: 0.20.0)",
                                                "safetensors>=0.4,<1"]
    everything = dict(VERSIONS, nibabel="5.3.2", safetensors="0.4.5", **{"scikit-image": "0.24.0"})
    assert panel.dependency_lines(everything) == []
    # Slicer's own packages are held, never installed, even when missing or out of range
    assert panel.packages_to_install(dict(VERSIONS, numpy=None, scipy="0.9")) == WANTED
    assert panel.slicer_package_problems(dict(VERSIONS, numpy="1.21.0")) == ["Slicer's numpy 1.21.0 is outside >=1.24,<3"]
    assert panel.constraints_text(dict(VERSIONS, SimpleITK=None)) == CONSTRAINTS.replace("SimpleITK==2.4.0\n", "")


def new_pip_install(requirements, **kwargs):             # Slicer 5.12+: slicer.util forwards to slicer.packaging
    pass


def pip_install_5_10(requirements, blocking=True, logCallback=None, completedCallback=None):
    pass


def old_pip_install(requirements):                       # Slicer 5.8
    pass


def test_pip_arguments_with_and_without_a_constraints_argument():
    assert panel.pip_takes_constraints(new_pip_install)
    assert panel.pip_takes_constraints(lambda requirements, constraints=None: None)
    assert not panel.pip_takes_constraints(pip_install_5_10)
    assert not panel.pip_takes_constraints(old_pip_install)
    path = r"C:\Users\A User\AppData\Local\Temp\mrsuperres-constraints-x.txt"
    assert panel.pip_install_call(WANTED, path, True) == (WANTED, {"constraints": path})
    assert panel.pip_install_call(WANTED, path, False) == (WANTED + ["-c", path], {})


class FakeSlicer:
    """slicer.util and slicer.app as ensure_dependencies uses them, recording every call."""

    def __init__(self, pip_install=None, testing=False, confirm=True):
        self.calls, self.messages, self.confirmations = [], [], []
        self.constraints_seen = None

        def record(args, **kwargs):
            path = kwargs.get("constraints") or args[args.index("-c") + 1]
            self.constraints_seen = Path(path).read_text()
            self.calls.append((args, kwargs, path))

        pip = pip_install or new_pip_install

        def pip_install(requirements, **kwargs):          # keeps the signature the code inspects
            record(requirements, **kwargs)
            return pip(requirements, **kwargs)

        if not panel.pip_takes_constraints(pip):
            def pip_install(requirements):                # noqa: F811
                record(requirements)
                return pip(requirements)

        self.util = types.SimpleNamespace(
            pip_install=pip_install,
            confirmOkCancelDisplay=lambda text, title=None: self.confirmations.append(text) or confirm,
            errorDisplay=lambda text, *a, **k: self.messages.append(text))
        self.app = types.SimpleNamespace(testingEnabled=lambda: testing)


@pytest.fixture
def fake_env(monkeypatch):
    """Installed versions that change when the fake pip or PyTorchUtils installs something."""
    state = {"versions": dict(VERSIONS)}
    monkeypatch.setattr(panel, "installed_versions", lambda: dict(state["versions"]))
    return state


@pytest.mark.parametrize("pip", [new_pip_install, old_pip_install], ids=["slicer-5.12", "slicer-5.8"])
def test_ensure_dependencies_installs_the_missing_set_with_slicers_packages_held(monkeypatch, fake_env, pip):
    def installs(requirements, **kwargs):
        fake_env["versions"].update({"nibabel": "5.3.2", "scikit-image": "0.24.0", "safetensors": "0.4.5"})

    fake = FakeSlicer(installs if pip is new_pip_install else (lambda requirements: installs(requirements)))
    monkeypatch.setattr(panel, "slicer", fake, raising=False)
    assert panel.ensure_dependencies() is True
    (args, kwargs, path), = fake.calls
    if pip is new_pip_install:
        assert (args, kwargs) == (WANTED, {"constraints": path})
    else:
        assert (args, kwargs) == (WANTED + ["-c", path], {})
    assert fake.constraints_seen == CONSTRAINTS
    assert not Path(path).exists()                                     # the temporary file is removed
    assert len(fake.confirmations) == 1 and "nibabel>=5.0,<6" in fake.confirmations[0] and not fake.messages


def test_nothing_is_installed_in_testing_mode_or_when_declined(monkeypatch, fake_env):
    for fake, questions in ((FakeSlicer(testing=True), 0), (FakeSlicer(confirm=False), 1)):
        monkeypatch.setattr(panel, "slicer", fake, raising=False)
        assert panel.ensure_dependencies() is False
        assert fake.calls == [] and fake.messages == [] and len(fake.confirmations) == questions


def test_a_failed_install_is_one_message_and_never_raises(monkeypatch, fake_env):
    def fails(requirements, **kwargs):
        raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install"])

    fake = FakeSlicer(fails)
    monkeypatch.setattr(panel, "slicer", fake, raising=False)
    assert panel.ensure_dependencies() is False
    assert len(fake.messages) == 1 and "CalledProcessError" in fake.messages[0]
    assert "Install dependencies" in fake.messages[0]


def test_an_old_torch_is_reported_and_upgraded_through_pytorchutils(monkeypatch, fake_env):
    assert panel.torch_problem("2.1.2+cu118") == "PyTorch 2.1.2+cu118 is too old: MRSuperRes needs PyTorch >=2.4"
    assert panel.torch_problem(None) == "PyTorch is not installed"
    for fine in ("2.4.0", "2.5.1+cpu", "2.13.0+cpu", "3.0.0"):
        assert panel.torch_problem(fine) is None
    everything = dict(VERSIONS, torch="2.1.2", nibabel="5.3.2", safetensors="0.4.5", **{"scikit-image": "0.24.0"})
    assert panel.dependency_lines(everything) == [panel.torch_problem("2.1.2")]
    fake_env["versions"] = everything
    asked = []

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            asked.append((askConfirmation, torchVersionRequirement))
            fake_env["versions"]["torch"] = "2.5.1"
            return types.SimpleNamespace(__version__="2.5.1")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    fake = FakeSlicer()
    monkeypatch.setattr(panel, "slicer", fake, raising=False)
    assert panel.ensure_dependencies() is True
    assert asked == [(False, ">=2.4")] and fake.calls == []              # one question (ours), pip not needed
    assert len(fake.confirmations) == 1 and "too old" in fake.confirmations[0]
    # the old torch was already imported in this session: the upgrade needs a restart
    fake_env["versions"]["torch"] = "2.1.2"
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.1.2"))
    fake = FakeSlicer()
    monkeypatch.setattr(panel, "slicer", fake, raising=False)
    assert panel.ensure_dependencies() is False
    assert len(fake.messages) == 1 and "restart Slicer" in fake.messages[0]


def test_without_the_pytorch_extension_the_message_says_where_torch_comes_from(monkeypatch, fake_env):
    fake_env["versions"]["torch"] = None
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)              # import fails
    fake = FakeSlicer()
    monkeypatch.setattr(panel, "slicer", fake, raising=False)
    assert panel.ensure_dependencies() is False
    assert len(fake.messages) == 1 and "PyTorch extension" in fake.messages[0]
    assert fake.confirmations == []                                     # nothing to offer: no question


def test_versions_compare_as_releases():
    assert panel.satisfies("0.26.1", ">=0.21,<0.27") and not panel.satisfies("0.27.0", ">=0.21,<0.27")
    assert panel.satisfies("2.0.0rc1", ">=1.24,<3") and not panel.satisfies("3.0", ">=1.24,<3")
    assert panel.satisfies("5.0", ">=5.0,<6") and not panel.satisfies(None, ">=5.0,<6")
    assert panel.version_key("2.4.0a0+git1234") == (2, 4, 0)


def test_the_real_metadata_lookup_finds_what_this_environment_has():
    versions = panel.installed_versions()
    assert set(versions) >= {"torch", "nibabel", "numpy", "SimpleITK", "pillow"}
    import numpy
    assert versions["numpy"] == numpy.__version__


def test_the_panel_uses_the_logics_parameter_names():
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic

    assert module.TRAINING_PARAMETER_PREFIX == MRSuperResLogic.TRAINING_PARAMETER_PREFIX
    assert set(module.PANEL_CONTROLS.values()) == set(MRSuperResLogic.PARAMETER_DEFAULTS)
    assert set(module.PANEL_NODE_REFERENCES.values()) == set(MRSuperResLogic.PARAMETER_NODE_REFERENCES)


def test_the_panels_choices_are_the_librarys_options():
    """The panel fills its lists from MRSuperResLib.options, which imports neither torch nor numpy,
    so it needs no library before the dependencies are installed and restates no list (that no
    list is restated anywhere: test_architecture)."""
    from MRSuperResLib.in_slicer.nodes import MAP_TITLES

    text = PANEL_FILE.read_text()
    for combo, source in (("consistencyComboBox", "list(CONSISTENCY_MODES)"), ("directionComboBox", "list(DIRECTIONS)"),
                          ("degradationComboBox", '[*DEGRADATIONS, "thick"]'),
                          ("mapOverlayComboBox", '["no overlay", *MAP_NAMES, "error"]')):
        assert f"self.ui.{combo}.addItems({source})" in text, combo
    assert "from MRSuperResLib.options import" in text
    assert set(options.MAP_NAMES) | {"error"} == set(MAP_TITLES)


def test_importing_the_panel_module_in_plain_python_imports_no_library():
    code = ("import sys; sys.path.insert(0, 'MRSuperRes'); import MRSuperRes; "
            "print(MRSuperRes.HAVE_APP, sorted(m for m in sys.modules if m in ('torch', 'nibabel') "
            "or m.startswith('MRSuperResLib')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "False ['MRSuperResLib', 'MRSuperResLib.options']"   # torch-free lists only


def test_the_default_home_is_the_librarys(monkeypatch, tmp_path):
    from MRSuperResLib.options import home_dir

    monkeypatch.delenv("MRSUPERRES_HOME", raising=False)
    assert panel.default_home_dir() == home_dir()
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path))
    assert panel.default_home_dir() == home_dir() == tmp_path


def test_the_training_output_folder(tmp_path):
    runs = tmp_path / "runs"
    fresh = panel.training_output_folder("", runs, False, "20260101-120000")
    assert fresh == runs / "run-20260101-120000"
    assert panel.training_output_folder(str(runs), runs, False, "s") == runs / "run-s"
    (fresh / "run").mkdir(parents=True)
    (fresh / "run" / "train_config.json").write_text("{}")
    assert panel.training_output_folder(str(fresh), runs, False, "t") == runs / "run-t"     # Start: a new run
    assert panel.training_output_folder(str(fresh), runs, True, "t") == fresh               # Resume: that run
    mine = tmp_path / "mine"
    assert panel.training_output_folder(str(mine), runs, False, "t") == mine                # the user's choice


def test_license_is_bsd3_as_pyproject_says():
    license_text = (ROOT / "LICENSE").read_text()
    assert 'license = "BSD-3-Clause"' in (ROOT / "pyproject.toml").read_text()
    assert license_text.startswith("BSD 3-Clause License")
    assert "Copyright (c) " in license_text and "MRSuperRes developers" in license_text
    assert "Neither the name of the copyright holder" in license_text


def test_the_self_test_is_registered_with_ctest():
    cmake = (ROOT / "MRSuperRes" / "CMakeLists.txt").read_text()
    block = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", cmake, re.S)
    assert block and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in block.group(1)
    tree = ast.parse(PANEL_FILE.read_text())
    classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    assert {"MRSuperRes", "MRSuperResWidget"} <= classes
    # the test class lives in MRSuperResPanel/self_test.py; the module imports it into its namespace,
    # where the test runner (slicer.testing.runUnitTest) looks for unittest classes
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "MRSuperResPanel.self_test" for a in n.names}
    assert "MRSuperResTest" in imported
    test_tree = ast.parse((PANEL_FILE.parent / "MRSuperResPanel" / "self_test.py").read_text())
    tests = [n for n in ast.walk(test_tree) if isinstance(n, ast.ClassDef) and n.name == "MRSuperResTest"]
    assert tests and any(getattr(b, "id", "") == "ScriptedLoadableModuleTest" for b in tests[0].bases)


def test_in_the_application_the_widget_is_assembled_from_its_parts():
    """With stand-ins for Qt and Slicer's application modules (none here), the module file builds
    the widget from its mixins and exposes the self-test where the test runner looks."""
    code = """
import sys, types
qt = types.ModuleType("qt")
slicer = types.ModuleType("slicer"); slicer.app = object(); slicer.util = types.ModuleType("slicer.util")
slm = types.ModuleType("slicer.ScriptedLoadableModule")
for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
    setattr(slm, name, type(name, (), {}))
slicer.util.VTKObservationMixin = type("VTKObservationMixin", (), {})
slicer.ScriptedLoadableModule = slm
sys.modules.update({"qt": qt, "slicer": slicer, "slicer.util": slicer.util, "slicer.ScriptedLoadableModule": slm})
sys.path.insert(0, "MRSuperRes")
import MRSuperRes as m
assert m.HAVE_APP
w = m.MRSuperResWidget
for name in ("onStartTraining", "pollTraining", "refreshModels", "onModelChanged", "detailValue",
             "onMapOverlay", "showMapsOf", "onApply", "onJobFinished", "onDeviceChanged", "showDeviceNote"):
    assert callable(getattr(w, name)), name
assert issubclass(m.MRSuperResTest, slm.ScriptedLoadableModuleTest)
# Compare's factor follows the chosen in-plane model (an x2 model is compared at x2), not a thick one
ns = types.SimpleNamespace
ui = ns(compareModelComboBox=ns(currentText="x2"), degradationComboBox=ns(currentText="bilinear"),
        scaleSpinBox=ns(value=4))
fake = ns(ui=ui, models=[{"name": "x2", "scale": 2}, {"name": "thick", "scale": 1}])
w.onCompareModelChanged(fake)
assert ui.scaleSpinBox.value == 2
ui.compareModelComboBox.currentText, ui.scaleSpinBox.value = "thick", 5
w.onCompareModelChanged(fake)
assert ui.scaleSpinBox.value == 5
print(sorted(k for k in sys.modules if k == "torch" or k.startswith("MRSuperResLib")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['MRSuperResLib', 'MRSuperResLib.options']"   # no torch before the dependencies


def test_the_ui_has_the_install_button_and_stop_starts_disabled():
    ui = ET.parse(ROOT / "MRSuperRes" / "Resources" / "UI" / "MRSuperRes.ui")
    widgets = {w.get("name"): w for w in ui.iter("widget")}
    assert {"installDependenciesButton", "dependenciesLabel"} <= set(widgets)
    stop = widgets["stopTrainingButton"]
    assert [p.find("bool").text for p in stop.iter("property") if p.get("name") == "enabled"] == ["false"]


def test_the_panel_file_is_python_3_9():
    source = PANEL_FILE.read_text()
    for path in [PANEL_FILE, *(PANEL_FILE.parent / "MRSuperResSetup").glob("*.py"),
                 *(PANEL_FILE.parent / "MRSuperResPanel").glob("*.py")]:
        ast.parse(path.read_text(), feature_version=(3, 9))             # no match, no 3.10+ syntax
    assert "from __future__ import annotations" in source
    vermin = Path(sys.executable).with_name("vermin")
    if not vermin.exists():
        pytest.skip("vermin is not installed")
    library = PANEL_FILE.parent.parent / "MRSuperResLib"             # Slicer imports the library too
    out = subprocess.run([str(vermin), "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
                          str(PANEL_FILE), str(PANEL_FILE.parent / "MRSuperResSetup"),
                          str(PANEL_FILE.parent / "MRSuperResPanel"), str(library)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_logic_loads_lists_plans_and_learns_the_device_without_torch():
    """What the panel does when the module is entered (the logic, its model list, training choices,
    the parameter node, the device note) and when a volume is chosen (the plan): none of it imports
    torch or initialises CUDA in Slicer's process; the device is asked of a child."""
    code = (f"import sys\n"
            f"from MRSuperResLib.in_slicer.scene import headless_scene, load_volume\n"
            f"headless_scene()\n"
            f"from MRSuperResLib.in_slicer.logic import MRSuperResLogic\n"
            f"from MRSuperResLib.in_slicer.device_probe import DeviceProbe\n"
            f"logic = MRSuperResLogic()\n"
            f"probe = DeviceProbe()\n"
            f"assert logic.listModels() and logic.trainingChoices()\n"
            f"logic.getParameterNode()\n"
            f"plan = logic.plan(load_volume({str(SAMPLE)!r}, 'sample'))\n"
            f"print(plan.direction, 'torch' in sys.modules, repr(probe.wait()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    direction, torch_loaded, note = out.stdout.strip().split(" ", 2)
    assert direction == "in-plane" and torch_loaded == "False"
    import torch                                   # this test process may: it is not Slicer's
    assert ("No CUDA GPU found" in note) == (not torch.cuda.is_available())
