"""The module panel (MRSuperRes.py with its MRSuperResPanel mixins) run without Qt, around
slicer-core's real MRML scene: stand-ins for the widgets MRSuperRes.ui declares (by their class),
for qt.QTimer and qt.QSettings and for the slicer.util calls the panel makes. Slicer's event loop
is emulated where it matters: a modal dialog runs the panel's timer, as Qt's nested event loop
does, and so does a pip install (Slicer 5.8/5.10 log its output through processEvents).

It installs stand-in modules, so it runs in a child: `python panel_emulation.py SCENARIO` prints
one JSON object of what it saw, which test_panel_emulated.py checks.
"""
from __future__ import annotations

import json
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
UI_FILE = ROOT / "MRSuperRes" / "Resources" / "UI" / "MRSuperRes.ui"


# -- widgets: the properties and signals the panel uses, with Qt's behaviour where it matters
class Widget:
    def __init__(self, name):
        self.name, self.enabled, self.visible, self.text, self.toolTip = name, True, True, "", ""
        self._slots = {}

    def connect(self, signal, slot):
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in list(self._slots.get(signal, [])):
            slot(*args)

    def isHidden(self):
        return not self.visible

    def setMRMLScene(self, scene):
        pass


class Button(Widget):
    def click(self):
        if self.enabled:                        # a disabled button ignores clicks, as in Qt
            self.emit("clicked()")


class Combo(Widget):
    def __init__(self, name, editable=False):
        super().__init__(name)
        self.items, self._index, self.editable, self._edit = [], -1, editable, ""

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentText(self):
        return self.items[self._index] if self._index >= 0 else self._edit

    @property
    def count(self):
        return len(self.items)

    def clear(self):
        self.items = []
        self.currentIndex = -1

    def addItem(self, text):
        self.items.append(text)
        if self._index < 0:                     # the first item becomes current, as in Qt
            self.currentIndex = 0

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def setEditText(self, text):
        self._edit = text
        self.emit("editTextChanged(QString)", text)


def _valued(attribute, signals):
    """A widget class with one value property that emits `signals` when it changes."""
    def get(self):
        return getattr(self, "_" + attribute)

    def set_(self, value):
        if value != getattr(self, "_" + attribute):
            setattr(self, "_" + attribute, value)
            for signal in signals:
                self.emit(signal, value)
    return property(get, set_)


class Check(Widget):
    _checked = False
    checked = _valued("checked", ["toggled(bool)"])


class Spin(Widget):
    _value = 0
    value = _valued("value", ["valueChanged(int)", "valueChanged(double)"])


class DoubleSpin(Spin):
    _value = 0.0


class DirectoryButton(Widget):
    _directory = ""
    directory = _valued("directory", ["directoryChanged(QString)"])


class NodeSelector(Widget):
    def __init__(self, name):
        super().__init__(name)
        self._node, self.checked = None, []

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def checkedNodes(self):
        return list(self.checked)


class Bar(Widget):
    maximum, value = 100, 0


WIDGETS = {"QPushButton": Button, "QComboBox": Combo, "QCheckBox": Check, "QSpinBox": Spin,
           "QDoubleSpinBox": DoubleSpin,
           "ctkSliderWidget": Spin, "ctkDirectoryButton": DirectoryButton, "qMRMLNodeComboBox": NodeSelector,
           "qMRMLCheckableNodeComboBox": NodeSelector, "QProgressBar": Bar}


def ui_of_file(path=UI_FILE):
    """Every named widget of the .ui file as its stand-in (slicer.util.childWidgetVariables)."""
    ui = types.SimpleNamespace()
    for element in ET.parse(path).iter("widget"):
        name, cls = element.get("name"), element.get("class")
        if not name:
            continue
        props = {p.get("name"): p for p in element.findall("property")}
        if cls == "QComboBox":
            editable = props.get("editable") is not None and props["editable"].find("bool").text == "true"
            widget = Combo(name, editable)
        else:
            widget = WIDGETS.get(cls, Widget)(name)
        enabled = props.get("enabled")
        if enabled is not None:
            widget.enabled = enabled.find("bool").text == "true"
        setattr(ui, name, widget)
    return ui


# -- the event loop: timers and single shots, run by `process_events`
class QTimer:
    timers, pending = [], []

    def __init__(self):
        self.active, self.interval, self._slots = False, 0, []
        QTimer.timers.append(self)

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self._slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    @staticmethod
    def singleShot(ms, slot):
        QTimer.pending.append(slot)


class QSettings:
    store = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):
        self.store[key] = value


TIMER_DEPTH = [0]          # > 0 while a timer's callback runs


def process_events():
    """One turn of the event loop: every active timer fires, then the single shots queued so far."""
    for timer in list(QTimer.timers):
        if timer.active:
            for slot in list(timer._slots):
                TIMER_DEPTH[0] += 1
                try:
                    slot()
                finally:
                    TIMER_DEPTH[0] -= 1
    shots, QTimer.pending[:] = list(QTimer.pending), []
    for slot in shots:
        slot()


class Recorder:
    """What the panel showed the user, and whether the panel's timer callback was running then."""

    def __init__(self):
        self.dialogs = []
        self.widget = None

    def error_display(self, text, *args, **kwargs):
        self.dialogs.append({"text": str(text), "inside_timer": TIMER_DEPTH[0] > 0})
        for _ in range(3):                      # a modal dialog's own event loop runs the timers
            process_events()


def install_standins(recorder):
    """qt, the application's slicer attributes and slicer.ScriptedLoadableModule, around
    slicer-core's real scene; returns the scene."""
    import contextlib

    import slicer
    import slicer.util

    from MRSuperResLib.in_slicer.scene import application_logic, headless_scene

    scene = headless_scene()
    qt = types.ModuleType("qt")
    qt.QTimer, qt.QSettings = QTimer, QSettings
    sys.modules["qt"] = qt
    slicer.app = types.SimpleNamespace(connect=lambda *a: None, disconnect=lambda *a: None,
                                       testingEnabled=lambda: True, temporaryPath=None)
    util = slicer.util
    util.errorDisplay = recorder.error_display
    util.WaitCursor = contextlib.nullcontext
    util.loadUI = lambda path: Widget("MRSuperRes")
    util.childWidgetVariables = lambda root: ui_of_file()
    util.selectModule = lambda name: None
    util.getModuleLogic = lambda name: recorder.widget.logic        # getModuleGui(module).logic
    volumes = application_logic(scene).GetModuleLogic("Volumes")       # the application's reader
    util.loadVolume = lambda path: volumes.AddArchetypeVolume(str(path), Path(path).name.split(".")[0])

    @contextlib.contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:
            recorder.error_display(f"{message}\n\n{exc}")
    util.tryWithErrorDisplay = try_with_error_display
    slicer.modules = types.SimpleNamespace(mrsuperres=types.SimpleNamespace(
        widgetRepresentation=lambda: types.SimpleNamespace(self=lambda: recorder.widget)))

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def setup(self):
            pass

        def resourcePath(self, name):
            return str(ROOT / "MRSuperRes" / "Resources" / name)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        said = []

        def delayDisplay(self, message, msec=None):
            self.said.append(message)

    slm.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: None})
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    slicer.ScriptedLoadableModule = slm
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    return scene


class FakeJob:
    """An enhance or compare job that reports `statuses` in turn (the last one repeats)."""

    def __init__(self, *statuses, error="the model file is damaged", result=None):
        self.statuses, self.error, self.result = list(statuses), error, result
        self.done, self.total, self.secondsLeft, self.polls, self.cancelled = 1, 4, 3.0, 0, False

    def poll(self):
        self.polls += 1
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def cancel(self):
        self.cancelled = True


class FakeTrainingJob(FakeJob):
    progress = (5, 10, 60.0)
    message = "training failed: out of memory"


def open_panel(recorder, dependencies=True):
    """The module file imported and its panel set up as Slicer does; `dependencies` False: a
    fresh Slicer, where torch and the other packages are missing."""
    sys.path.insert(0, str(ROOT / "MRSuperRes"))
    sys.path.insert(0, str(ROOT))
    import MRSuperRes as module
    from MRSuperResPanel import self_test

    versions = {"value": None}
    real = module.installed_versions

    def installed():
        found = real()
        return found if versions["value"] is None else dict(found, **versions["value"])
    if not dependencies:
        versions["value"] = {"torch": None, "safetensors": None}
    for namespace in (module, self_test):
        namespace.installed_versions = installed
    widget = module.MRSuperResWidget()
    recorder.widget = widget
    widget.setup()
    widget.enter()
    return module, widget, versions


def scenario_opened(recorder):
    """A fresh Slicer opens the module: the logic exists, the plan line shows, no torch."""
    _, widget, _ = open_panel(recorder, dependencies=False)
    import slicer

    from MRSuperResLib.options import SAMPLE_VOLUME
    node = slicer.util.loadVolume(str(SAMPLE_VOLUME))
    widget.ui.inputSelector.setCurrentNode(node)
    plan_line = widget.ui.autoAxisLabel.text
    # a thick-slice scan: the plan follows the spacing control, which the parameter node keeps
    import tempfile

    import nibabel as nib
    import numpy as np
    from MRSuperResLib.scans.slice_profile import simulate_thick
    sample = nib.load(str(SAMPLE_VOLUME))
    thick = nib.Nifti1Image(simulate_thick(np.asarray(sample.dataobj, np.float32), 2, 4.0),
                            sample.affine @ np.diag([1.0, 1.0, 4.0, 1.0]))
    with tempfile.TemporaryDirectory(prefix="mrsuperres-emulation-") as folder:
        nib.save(thick, f"{folder}/thick.nii.gz")
        widget.ui.inputSelector.setCurrentNode(slicer.util.loadVolume(f"{folder}/thick.nii.gz"))
    thick_auto = widget.ui.autoAxisLabel.text
    widget.ui.spacingSpinBox.value = 2.0
    thick_two = widget.ui.autoAxisLabel.text
    return {"logic": widget.logic is not None, "module_logic": slicer.util.getModuleLogic("MRSuperRes") is widget.logic,
            "missing": widget.missing, "install_shown": not widget.ui.installDependenciesButton.isHidden(),
            "plan_line": plan_line, "thick_auto": thick_auto, "thick_two": thick_two,
            "spacing_parameter": widget.parameterNode().GetParameter("spacing"),
            "device_note": widget.ui.deviceNoteLabel.text,
            "models": widget.ui.modelComboBox.count, "torch": "torch" in sys.modules,
            "dialogs": recorder.dialogs}


def scenario_self_test(recorder):
    """The module's self-test as Reload & Test runs it (runTest, called directly) on a Slicer
    without the dependencies: the panel part passes, the enhance part is said to be skipped."""
    module, widget, _ = open_panel(recorder, dependencies=False)
    test = module.MRSuperResTest()
    raised = None
    try:
        test.runTest()
    except BaseException as exc:                # noqa: BLE001 (the point is what escapes)
        raised = f"{type(exc).__name__}: {exc}"
    return {"raised": raised, "said": test.said, "torch": "torch" in sys.modules, "dialogs": recorder.dialogs}


def scenario_finish_once(recorder):
    """An enhance fails and a compare finishes in the same tick; their messages and results are
    handled once each, and no dialog opens inside the timer's callback."""
    _, widget, _ = open_panel(recorder)
    shown = []
    widget.logic.showComparison = lambda result: shown.append(result)
    metrics = {"SR": {"ssim": [0.9, 0.01], "psnr": [30.0, 1.0], "vif": [0.5, 0.1]}}
    compare = FakeJob("done", result=types.SimpleNamespace(metrics=metrics, maps=False))
    enhance = FakeJob("failed")
    training = FakeTrainingJob("failed")
    widget.jobs = {"enhance": enhance, "compare": compare}
    widget.trainingJob = training
    widget.timer.start()
    for _ in range(5):
        process_events()
    ui = widget.ui
    return {"comparisons_shown": len(shown), "dialogs": recorder.dialogs,
            "labels": [ui.progressLabel.text, ui.compareStatusLabel.text, ui.trainingStatusLabel.text],
            "buttons": [ui.enhanceButton.text, ui.enhanceButton.enabled, ui.compareButton.enabled,
                        ui.startTrainingButton.enabled, ui.stopTrainingButton.enabled],
            "jobs": [widget.jobs["enhance"] is None, widget.jobs["compare"] is None, widget.trainingJob is None],
            "timer_active": widget.timer.active}


def scenario_enhance_note(recorder):
    """Two enhance results land: a scan stretched for the network (its facts say so) and a plain
    one; the status line carries the logic's note for the first only."""
    _, widget, _ = open_panel(recorder)
    import slicer

    labels = []
    for name, facts in (("hot x4", {"network_ceiling": 0.25}), ("plain x4", {"network_ceiling": 1.0})):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node.SetAttribute("MRSuperRes.facts", json.dumps(facts))
        widget.jobs = {"enhance": FakeJob("done", result=node), "compare": None}
        widget.timer.start()
        for _ in range(3):
            process_events()
        labels.append(widget.ui.progressLabel.text)
    return {"labels": labels, "dialogs": recorder.dialogs}


def scenario_install(recorder):
    """Apply on a fresh Slicer installs the dependencies once: while pip runs (and processes
    events) every action button is disabled and clicks on them do nothing; then the job starts."""
    module, widget, versions = open_panel(recorder, dependencies=False)
    import slicer

    from MRSuperResLib.options import SAMPLE_VOLUME
    widget.ui.inputSelector.setCurrentNode(slicer.util.loadVolume(str(SAMPLE_VOLUME)))
    seen = {"installs": 0, "enabled_during": None}
    launched = []
    widget.launch = lambda kind: launched.append(kind) or FakeJob("running")
    names = ("enhanceButton", "compareButton", "installDependenciesButton", "importModelButton",
             "startTrainingButton", "resumeTrainingButton")

    def ensure_dependencies(ask=True):
        seen["installs"] += 1
        seen["enabled_during"] = {n: getattr(widget.ui, n).enabled for n in names}
        for name in ("enhanceButton", "compareButton", "installDependenciesButton", "startTrainingButton"):
            getattr(widget.ui, name).click()            # the user clicks while pip's output scrolls
        widget.onApply("compare")                       # even were a click to get through
        widget.onInstallDependencies()
        process_events()
        versions["value"] = None                        # installed
        return True
    module.ensure_dependencies = ensure_dependencies
    widget.ui.enhanceButton.click()
    return {**seen, "launched": launched, "missing_after": widget.missing,
            "enabled_after": {n: getattr(widget.ui, n).enabled for n in names},
            "enhance_button": widget.ui.enhanceButton.text, "dialogs": recorder.dialogs}


SCENARIOS = {"opened": scenario_opened, "self_test": scenario_self_test, "finish_once": scenario_finish_once,
             "install": scenario_install, "enhance_note": scenario_enhance_note}

if __name__ == "__main__":
    recorder = Recorder()
    install_standins(recorder)
    print("RESULT " + json.dumps(SCENARIOS[sys.argv[1]](recorder), default=str))
