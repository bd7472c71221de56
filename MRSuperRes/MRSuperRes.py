"""MRSuperRes: super-resolution of MRI volumes with a 1-channel Real-ESRGAN generator.

This file is the Slicer module: the module description and the panel (widget); the panel's
Enhance and Compare jobs, model list, map overlay, training section, device note and the
self-test are in MRSuperResPanel/ beside it. All work is done by `MRSuperResLogic` (MRSuperResLib/in_slicer/logic.py), which needs no Qt and is
also what the Python console and batch scripts use:

    import MRSuperRes
    logic = MRSuperRes.MRSuperResLogic()
    sr = logic.enhance(volumeNode, model="mri-x4-fidelity", axis="auto", device="auto")

In a plain Python process with slicer-core (no Qt) importing this file gives the logic and the
dependency helpers only (HAVE_APP is False). Slicer 5.8 runs Python 3.9: keep this file 3.9-clean.
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:                                   # MRSuperResSetup and MRSuperResPanel, beside this file
    sys.path.insert(0, _HERE)
for _candidate in (_HERE, os.path.dirname(_HERE)):          # installed extension / source tree
    if os.path.isdir(os.path.join(_candidate, "MRSuperResLib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)

_LOGIC_NAMES = {"MRSuperResLogic": "in_slicer.logic", "CompareResult": "in_slicer.nodes",
                "TrainingJob": "in_slicer.training_jobs",
                "Job": "in_slicer.jobs", "ThreadJob": "in_slicer.jobs", "headless_scene": "in_slicer.scene",
                "load_volume": "in_slicer.scene"}


def __getattr__(name):
    """`MRSuperRes.MRSuperResLogic` and friends, imported on first use: the library needs torch,
    which a fresh Slicer gets only on the first Apply (ensure_dependencies)."""
    if name in _LOGIC_NAMES:
        import importlib
        return getattr(importlib.import_module(f"MRSuperResLib.{_LOGIC_NAMES[name]}"), name)
    raise AttributeError(f"module 'MRSuperRes' has no attribute '{name}'")


from MRSuperResLib.options import (CONSISTENCY_MODES, DEGRADATIONS, DEVICES, DIRECTIONS,  # noqa: E402 (no torch)
                                   MAP_NAMES)
from MRSuperResSetup.dependencies import (default_home_dir, dependency_lines, ensure_dependencies,  # noqa: E402
                                          installed_versions)

# Panel state is synced by hand, not with slicer.parameterNodeWrapper: the wrapper stores bools as
# "True"/"False" (the logic's node holds "true"/"false"), a QComboBox needs a fixed Choice list it
# refills (the model lists change at run time; a scene may name a model not installed here, which
# the wrapper refuses), and a ctkDirectoryButton maps only to pathlib.Path ("" is written as ".").
SETTINGS = "MRSuperRes"
TRAINING_PARAMETER_PREFIX = "train_"      # MRSuperResLogic.TRAINING_PARAMETER_PREFIX (a test checks)
# the panel's state in the scene's parameter node: {control: parameter}, the names
# MRSuperResLogic.PARAMETER_DEFAULTS / PARAMETER_NODE_REFERENCES use (a test checks)
PANEL_CONTROLS = {"modelComboBox": "model", "directionComboBox": "direction", "spacingSpinBox": "spacing",
                  "axisComboBox": "axis",
                  "deviceComboBox": "device", "selfSupervisedCheckBox": "selfSupervised",
                  "detailSlider": "detail", "selfEnsembleCheckBox": "selfEnsemble",
                  "consistencyComboBox": "consistency", "mapsCheckBox": "maps",
                  "scaleSpinBox": "scale", "degradationComboBox": "degradation",
                  "compareModelComboBox": "compareModel", "compareAxisComboBox": "compareAxis",
                  "compareDeviceComboBox": "compareDevice", "outputDirectoryButton": "outputFolder"}
PANEL_NODE_REFERENCES = {"inputSelector": "InputVolume", "groundTruthSelector": "GroundTruthVolume"}
DOUBLE_CONTROLS = ("detailSlider", "spacingSpinBox")     # their valueChanged carries a double
# the panel's control for each training option it offers (TrainConfig names; their defaults come
# from TrainConfig through MRSuperResLogic.parameterDefaults); TRAINING_FIXED: offered without a
# control, at the panel's default (axis "all": patches from every orientation)
TRAINING_CONTROLS = {"stageComboBox": "stage", "presetComboBox": "preset", "initModelComboBox": "init",
                     "iterationsSpinBox": "iters", "batchSpinBox": "batch", "patchSpinBox": "patch",
                     "trainDeviceComboBox": "device"}
TRAINING_FIXED = ("axis",)

try:                                     # the Slicer application (Qt) is there
    import qt
    import slicer
    from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
    from slicer.util import VTKObservationMixin
    HAVE_APP = hasattr(slicer, "app")
except ImportError:                      # plain Python with slicer-core: the logic only
    HAVE_APP = False


if HAVE_APP:
    import logging

    from MRSuperResPanel.self_test import MRSuperResTest  # noqa: F401 (the test runner finds it here)
    from MRSuperResPanel.device import DevicePanel
    from MRSuperResPanel.jobs import JobsPanel
    from MRSuperResPanel.maps import MapsPanel
    from MRSuperResPanel.models import ModelsPanel
    from MRSuperResPanel.training import TrainingPanel

    class MRSuperRes(ScriptedLoadableModule):
        def __init__(self, parent):
            ScriptedLoadableModule.__init__(self, parent)
            parent.title = "MRSuperRes"
            parent.categories = ["Filtering"]
            parent.dependencies = []
            parent.contributors = ["MRSuperRes project"]   # EXTENSION_CONTRIBUTORS (a test checks)
            parent.helpText = (
                "Super-resolution of MRI volumes slice by slice with a 1-channel Real-ESRGAN generator; "
                "ground-truth comparison with metrics in linked views; training and fine-tuning in the "
                "background. Needs Slicer 5.8 or later and the PyTorch extension. See "
                "<a href='https://github.com/mrsuperres/SlicerMRSuperRes'>the documentation</a>.")
            parent.acknowledgementText = (
                "Real-ESRGAN (Wang et al. 2021, BSD-3); 1-channel Real-ESRGAN for MRI after Rashid, "
                "Shakibapour and Ebrahimi, Single MR image super-resolution using generative adversarial "
                "network; Colin27 sample (Holmes et al. 1998, BSD-3).")

    class MRSuperResWidget(JobsPanel, ModelsPanel, MapsPanel, TrainingPanel, DevicePanel,
                           ScriptedLoadableModuleWidget, VTKObservationMixin):
        """The panel. It reads controls, calls the logic and shows what comes back. The logic needs
        no torch and exists from setup on (slicer.util.getModuleLogic works on a fresh Slicer);
        what its jobs need is installed on the first Apply/Start or 'Install dependencies'.
        Job results are handled in the timer's callback, once per job, and never inside a modal
        dialog: an error dialog opens after the callback has returned."""

        AXES = {"auto": "auto", "i (sagittal for RAS volumes)": 0, "j (coronal)": 1, "k (axial)": 2}
        # buttons that start work; all disabled while the dependencies install (updateButtons)
        ACTION_BUTTONS = ("enhanceButton", "compareButton", "installDependenciesButton", "importModelButton",
                          "startTrainingButton", "resumeTrainingButton")
        # combo boxes whose items come from the library (models, training choices)
        LISTED_BY_LOGIC = ("modelComboBox", "compareModelComboBox", "stageComboBox", "presetComboBox")

        def __init__(self, parent=None):
            ScriptedLoadableModuleWidget.__init__(self, parent)
            VTKObservationMixin.__init__(self)
            self.logic = None
            self.jobs = {"enhance": None, "compare": None}
            self.trainingJob = None
            self.closedJobs = []             # enhance/compare jobs of a closed scene, still ending
            self.cancelling = set()          # sections whose job was asked to stop
            self.trainingStopping = False
            self.models = []
            self.timer = None
            self.deviceProbe = None               # the child that says what the device is
            self.missing = []                     # what the jobs still need (dependency_lines)
            self.installing = False               # an install is running (pip may process events)
            self._updating = False
            self._polling = False                 # inside onTimer: a nested call returns at once
            self.CONTROLS = {**PANEL_CONTROLS,
                             **{name: TRAINING_PARAMETER_PREFIX + opt for name, opt in TRAINING_CONTROLS.items()}}

        def setup(self):
            ScriptedLoadableModuleWidget.setup(self)
            widget = slicer.util.loadUI(self.resourcePath("UI/MRSuperRes.ui"))
            self.layout.addWidget(widget)
            self.ui = slicer.util.childWidgetVariables(widget)
            widget.setMRMLScene(slicer.mrmlScene)
            try:
                self.buildPanel()
            except Exception as exc:             # setup never raises: say what broke, keep the panel
                logging.exception("MRSuperRes: setting up the panel failed")
                self.ui.dependenciesLabel.text = f"MRSuperRes could not set up its panel: {exc}"

        def buildPanel(self):
            """Everything that needs no torch: choices, state, signals."""
            self.timer = qt.QTimer()
            self.timer.setInterval(250)
            self.timer.connect("timeout()", self.onTimer)
            for combo in (self.ui.axisComboBox, self.ui.compareAxisComboBox):
                combo.clear()
                combo.addItems(list(self.AXES))
            for combo in (self.ui.deviceComboBox, self.ui.compareDeviceComboBox, self.ui.trainDeviceComboBox):
                combo.clear()
                combo.addItems(list(DEVICES))
            self.ui.degradationComboBox.clear()
            self.ui.degradationComboBox.addItems([*DEGRADATIONS, "thick"])
            self.ui.directionComboBox.clear()
            self.ui.directionComboBox.addItems(list(DIRECTIONS))
            self.ui.consistencyComboBox.addItems(list(CONSISTENCY_MODES))
            self.ui.mapOverlayComboBox.addItems(["no overlay", *MAP_NAMES, "error"])
            self.ui.mapOverlayComboBox.connect("currentIndexChanged(int)", self.onMapOverlay)
            self.lastResult = None                   # the newest enhance node or CompareResult with maps
            self.ui.initModelComboBox.addItems(["realesrgan", "scratch"])
            self.updateButtons()
            self.updateGUIFromParameterNode()
            self.connectControls()
            self.ui.enhanceButton.connect("clicked()", lambda: self.onApply("enhance"))
            self.ui.compareButton.connect("clicked()", lambda: self.onApply("compare"))
            self.ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
            self.ui.importModelButton.connect("clicked()", self.onImportModel)
            self.ui.openModelsFolderButton.connect("clicked()", self.onOpenModelsFolder)
            self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
            self.ui.compareModelComboBox.connect("currentIndexChanged(int)", self.onCompareModelChanged)
            self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
            self.ui.axisComboBox.connect("currentIndexChanged(int)", self.onInputChanged)
            self.ui.directionComboBox.connect("currentIndexChanged(int)", self.onInputChanged)
            self.ui.spacingSpinBox.connect("valueChanged(double)", self.onInputChanged)
            self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
            self.ui.startTrainingButton.connect("clicked()", lambda: self.onStartTraining(False))
            self.ui.stopTrainingButton.connect("clicked()", self.onStopTraining)
            self.ui.resumeTrainingButton.connect("clicked()", lambda: self.onStartTraining(True))
            self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
            self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
            self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneImported)
            slicer.app.connect("aboutToQuit()", self.onApplicationQuit)
            self.startLogic()

        def enter(self):
            """Something may have been installed meanwhile (the Python console, another module)."""
            if self.logic is not None:
                self.showDependencyState()

        # -- dependencies and the logic
        def showDependencyState(self):
            self.missing = dependency_lines(installed_versions())
            self.ui.installDependenciesButton.visible = bool(self.missing)
            self.ui.dependenciesLabel.visible = bool(self.missing)
            self.ui.dependenciesLabel.text = ("Apply installs what MRSuperRes still needs: " + "; ".join(self.missing)
                                              if self.missing else "")

        def updateButtons(self):
            """Every button's enabled state, from the panel's state, in this one place."""
            idle = not self.installing
            for name in self.ACTION_BUTTONS:
                getattr(self.ui, name).enabled = idle
            for kind in self.SECTIONS:
                self.section(kind)[0].enabled = idle and kind not in self.cancelling
            training = self.trainingJob is not None
            self.ui.startTrainingButton.enabled = self.ui.resumeTrainingButton.enabled = idle and not training
            self.ui.stopTrainingButton.enabled = training and not self.trainingStopping

        def onInstallDependencies(self):
            self.ensureDependencies()

        def ensureDependencies(self) -> bool:
            """True when the logic and everything its jobs need are there; else installs what is
            missing (asks once). While it installs (pip processes events on Slicer 5.8/5.10) the
            action buttons are disabled and any second call returns False at once."""
            if self.installing or self.logic is None:
                return False
            self.showDependencyState()
            if not self.missing:
                return True
            self.installing = True
            self.updateButtons()
            try:
                ensure_dependencies(ask=True)
            finally:
                self.installing = False
                self.updateButtons()
                self.showDependencyState()
            if not self.missing:
                self.onDeviceChanged()
            return not self.missing

        def startLogic(self):
            """The logic (no torch: Slicer's own packages suffice), then what only it knows: the
            models, the training choices and the defaults of settings the scene's node lacks."""
            self.showDependencyState()
            try:
                with slicer.util.WaitCursor():
                    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
                    self.logic = MRSuperResLogic()
                    choices = self.logic.trainingChoices()
                    for combo, option in ((self.ui.stageComboBox, "stage"), (self.ui.presetComboBox, "preset")):
                        self._updating = True
                        try:
                            combo.clear()
                            combo.addItems(choices.get(option, []))
                        finally:
                            self._updating = False
                    self.refreshModels()
                    self.logic.getParameterNode()                 # fills in the defaults
                    self.updateGUIFromParameterNode()
                    self.onDeviceChanged()
                    self.onInputChanged()
            except Exception as exc:                 # in setup: no dialog, the panel says it
                self.logic = None
                logging.exception("MRSuperRes: starting the logic failed")
                self.ui.dependenciesLabel.visible = True
                self.ui.dependenciesLabel.text = f"MRSuperRes could not start: {exc}"

        # -- state: the scene's parameter node (saved with the scene) mirrors every control; the
        # same values persist between Slicer runs in QSettings, which seed only a NEW scene's node
        def parameterNode(self):
            """The singleton node MRSuperResLogic.getParameterNode() reads, made here when missing so
            the panel keeps state before the logic (torch) exists; a new (or just reset) one is
            seeded from QSettings. The logic fills in the other defaults once it exists."""
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode("MRSuperRes", "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag("MRSuperRes")
                node.SetName(scene.GenerateUniqueName("MRSuperRes"))
                node = scene.AddNode(node)
            if node.GetAttribute("ModuleName") != "MRSuperRes":       # removed by a scene close
                node.SetAttribute("ModuleName", "MRSuperRes")
            if node.GetParameterCount() == 0:
                settings = qt.QSettings()
                for key in self.CONTROLS.values():
                    value = settings.value(f"{SETTINGS}/{key}")
                    if value not in (None, ""):
                        node.SetParameter(key, str(value))
            if not node.GetParameter("outputFolder"):
                node.SetParameter("outputFolder", str(default_home_dir() / "runs"))
            return node

        def _get(self, widget):
            if hasattr(widget, "currentText"):
                return widget.currentText
            if hasattr(widget, "directory"):
                return widget.directory
            if hasattr(widget, "checked"):
                return "true" if widget.checked else "false"
            return str(widget.value)

        def _set(self, name, widget, value):
            if value is None:
                return
            if hasattr(widget, "currentText"):
                index = widget.findText(value)
                if index >= 0:
                    widget.currentIndex = index
                elif widget.editable:
                    widget.setEditText(value)
                elif value and self.logic is None and name in self.LISTED_BY_LOGIC:
                    widget.addItem(value)          # choices not known yet: show the saved value
                    widget.currentIndex = widget.findText(value)
                elif not value and name in ("modelComboBox", "compareModelComboBox") and widget.count:
                    widget.currentIndex = 0        # "": the default model, listed first
            elif hasattr(widget, "directory"):
                widget.directory = value
            elif hasattr(widget, "checked"):
                widget.checked = value.lower() == "true"
            elif value:
                widget.value = type(widget.value)(float(value))     # int for spin boxes, float for sliders

        def connectControls(self):
            for name in self.CONTROLS:
                widget = getattr(self.ui, name)
                signal = ("currentIndexChanged(int)" if hasattr(widget, "currentText") else
                          "directoryChanged(QString)" if hasattr(widget, "directory") else
                          "toggled(bool)" if hasattr(widget, "checked") else "valueChanged(double)"
                          if name in DOUBLE_CONTROLS else "valueChanged(int)")
                widget.connect(signal, self.updateParameterNodeFromGUI)
                if hasattr(widget, "editable") and widget.editable:
                    widget.connect("editTextChanged(QString)", self.updateParameterNodeFromGUI)
            for name in PANEL_NODE_REFERENCES:
                getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)

        def updateGUIFromParameterNode(self, *_):
            node = self.parameterNode()
            self._updating = True
            try:
                for name, key in self.CONTROLS.items():
                    self._set(name, getattr(self.ui, name), node.GetParameter(key))
                for name, ref in PANEL_NODE_REFERENCES.items():
                    getattr(self.ui, name).setCurrentNode(node.GetNodeReference(ref))
            finally:
                self._updating = False
            self.onModelChanged()

        def updateParameterNodeFromGUI(self, *_):
            scene = slicer.mrmlScene
            if self._updating or scene.IsImporting() or scene.IsClosing():   # never over a node being loaded
                return
            node = self.parameterNode()
            wasModified = node.StartModify()
            for name, key in self.CONTROLS.items():
                node.SetParameter(key, self._get(getattr(self.ui, name)))
            for name, ref in PANEL_NODE_REFERENCES.items():
                current = getattr(self.ui, name).currentNode()
                node.SetNodeReferenceID(ref, current.GetID() if current else None)
            node.EndModify(wasModified)

        def saveSettings(self):
            s = qt.QSettings()
            for name, key in self.CONTROLS.items():
                s.setValue(f"{SETTINGS}/{key}", self._get(getattr(self.ui, name)))

        def onSceneImported(self, *_):
            """A loaded scene brings its own parameter node: read it before anything writes."""
            if self.logic is not None:
                self.refreshModels()
            self.updateGUIFromParameterNode()

        def onSceneEndClose(self, *_):
            """The new, empty scene: its node is seeded from QSettings."""
            self.updateGUIFromParameterNode()

        # -- inputs and models (the model list itself: MRSuperResPanel/models.py)
        def onInputChanged(self, *_):
            """What Enhance will make of the input: direction (auto's choice), output size, warnings."""
            node = self.ui.inputSelector.currentNode()
            self.ui.autoAxisLabel.text = ""
            if self.logic is None or node is None:
                return
            try:
                plan = self.logic.plan(node, self.ui.directionComboBox.currentText,
                                       self.AXES.get(self.ui.axisComboBox.currentText, "auto"), self.spacingValue())
                self.ui.autoAxisLabel.text = "\n".join([plan.summary()] + [f"Warning: {w}" for w in plan.warnings])
            except Exception as exc:
                self.ui.autoAxisLabel.text = str(exc)

        def spacingValue(self):
            """The slice spacing asked for, or None for auto (the spin box at 0)."""
            value = float(self.ui.spacingSpinBox.value)
            return value if value > 0 else None

        # -- scene close and application quit: never block
        def onSceneStartClose(self, *_):
            self.lastResult = None
            for kind, job in self.jobs.items():
                if job is not None:
                    job.cancel()
                    self.closedJobs.append(job)
                    self.onJobFinished(kind, job, "cancelled")
            if self.trainingJob is not None:
                self.trainingJob.cancel()          # graceful: checkpoint and model, in the background
                self.trainingStopping = True
                self.updateButtons()
                self.ui.trainingStatusLabel.text = "scene closed: the run stops after saving a checkpoint"

        def onApplicationQuit(self):
            """Slicer is quitting: every job is asked to stop, a training gets the time to write its
            checkpoint (it resumes from it), then what is left is ended (jobs.shutdown)."""
            jobs = [job for job in list(self.jobs.values()) + self.closedJobs + [self.trainingJob] if job is not None]
            if jobs:
                try:
                    from MRSuperResLib.in_slicer.jobs import shutdown
                    with slicer.util.WaitCursor():
                        shutdown(jobs)
                except Exception:
                    logging.exception("MRSuperRes: ending the jobs failed")
            self.jobs = {kind: None for kind in self.jobs}
            self.closedJobs, self.trainingJob = [], None
            if self.timer:
                self.timer.stop()

        def cleanup(self):
            self.onApplicationQuit()
            self.removeObservers()
            slicer.app.disconnect("aboutToQuit()", self.onApplicationQuit)
