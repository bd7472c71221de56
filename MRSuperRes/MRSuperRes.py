"""MRSuperRes: super-resolution of MRI volumes with a 1-channel Real-ESRGAN generator.

This file is the Slicer module: the module description, the panel (widget) and the self-test.
All work is done by `MRSuperResLogic` (MRSuperResLib/slicer_logic.py), which needs no Qt and is
also what the Python console and batch scripts use:

    import MRSuperRes
    logic = MRSuperRes.MRSuperResLogic()
    sr = logic.enhance(volumeNode, model="mri-x4-fidelity", axis="auto", device="auto")

In a plain Python process with slicer-core (no Qt) importing this file gives the logic only.
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):          # installed extension / source tree
    if os.path.isdir(os.path.join(_candidate, "MRSuperResLib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)

_LOGIC_NAMES = ("BackgroundTask", "CompareResult", "MRSuperResLogic", "TrainingJob", "headless_scene", "load_volume")


def __getattr__(name):
    """`MRSuperRes.MRSuperResLogic` and friends, imported on first use: the library needs torch,
    which a fresh Slicer gets only when the panel first opens (ensure_dependencies)."""
    if name in _LOGIC_NAMES:
        from MRSuperResLib import slicer_logic
        return getattr(slicer_logic, name)
    raise AttributeError(f"module 'MRSuperRes' has no attribute '{name}'")


TORCH_REQUIREMENT = ">=2.4"
PIP_REQUIREMENTS = ("nibabel", "pynrrd", "scikit-image", "safetensors", "matplotlib", "onnx")
SETTINGS = "MRSuperRes"
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
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                               ScriptedLoadableModuleWidget)
    from slicer.util import VTKObservationMixin
    HAVE_APP = hasattr(slicer, "app")
except ImportError:                      # plain Python with slicer-core: the logic only
    HAVE_APP = False


def ensure_dependencies(ask: bool = True) -> bool:
    """torch through the PyTorch extension, the rest by pip after one confirmation; Slicer's
    own numpy, SimpleITK and requests are never replaced. True when everything is importable."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("MRSuperRes needs PyTorch: install the PyTorch extension from the "
                                     "Extensions Manager, restart Slicer and open MRSuperRes again.")
            return False
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask,
                                                         torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    missing = [p for p in PIP_REQUIREMENTS
               if importlib.util.find_spec({"pynrrd": "nrrd", "scikit-image": "skimage"}.get(p, p)) is None]
    if missing:
        if ask and not slicer.util.confirmOkCancelDisplay(
                f"MRSuperRes needs these Python packages: {', '.join(missing)}. Install them now?"):
            return False
        # --no-deps for packages that would otherwise pull their own numpy over Slicer's
        slicer.util.pip_install(" ".join(missing) + " --upgrade-strategy only-if-needed")
    return True


if HAVE_APP:
    class MRSuperRes(ScriptedLoadableModule):
        def __init__(self, parent):
            ScriptedLoadableModule.__init__(self, parent)
            parent.title = "MRSuperRes"
            parent.categories = ["Filtering"]
            parent.dependencies = []
            parent.contributors = ["MRSuperRes developers"]
            parent.helpText = (
                "Super-resolution of MRI volumes slice by slice with a 1-channel Real-ESRGAN generator; "
                "ground-truth comparison with metrics in linked views; training and fine-tuning in the "
                "background. See <a href='https://github.com/mrsuperres/SlicerMRSuperRes'>the documentation</a>.")
            parent.acknowledgementText = (
                "Real-ESRGAN (Wang et al. 2021, BSD-3); MRI super-resolution with ESRGAN-style networks "
                "(seed papers in the README); Colin27 sample (BSD-3).")

    class MRSuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
        """The panel. It only reads controls, calls the logic and shows what comes back."""

        AXES = {"auto": "auto", "i (sagittal for RAS volumes)": 0, "j (coronal)": 1, "k (axial)": 2}

        def __init__(self, parent=None):
            ScriptedLoadableModuleWidget.__init__(self, parent)
            VTKObservationMixin.__init__(self)
            self.logic = None
            self.task = None
            self.job = None
            self.timer = None

        def setup(self):
            ScriptedLoadableModuleWidget.setup(self)
            widget = slicer.util.loadUI(self.resourcePath("UI/MRSuperRes.ui"))
            self.layout.addWidget(widget)
            self.ui = slicer.util.childWidgetVariables(widget)
            widget.setMRMLScene(slicer.mrmlScene)
            if not ensure_dependencies():
                self.ui.enhanceButton.enabled = self.ui.compareButton.enabled = False
                self.ui.startTrainingButton.enabled = False
                return
            from MRSuperResLib.slicer_logic import MRSuperResLogic
            self.logic = MRSuperResLogic()
            prefix = self.logic.TRAINING_PARAMETER_PREFIX
            self.CONTROLS = {**self.GENERAL_CONTROLS,
                             **{name: prefix + option for name, option in TRAINING_CONTROLS.items()}}
            self.timer = qt.QTimer()
            self.timer.setInterval(250)
            self.timer.connect("timeout()", self.onTimer)
            for combo in (self.ui.axisComboBox, self.ui.compareAxisComboBox):
                combo.clear()
                combo.addItems(list(self.AXES))
            for combo in (self.ui.deviceComboBox, self.ui.compareDeviceComboBox, self.ui.trainDeviceComboBox):
                combo.clear()
                combo.addItems(["auto", "cpu", "cuda"])
            self.ui.degradationComboBox.addItems(["bilinear", "bicubic", "kspace"])
            choices = self.logic.trainingChoices()
            self.ui.stageComboBox.addItems(choices["stage"])
            self.ui.presetComboBox.addItems(choices["preset"])
            self.refreshModels()
            self.restoreSettings()                         # last session's choices ...
            self.connectControls()
            self.updateParameterNodeFromGUI()             # ... become this scene's state
            self.ui.enhanceButton.connect("clicked()", self.onEnhance)
            self.ui.compareButton.connect("clicked()", self.onCompare)
            self.ui.importModelButton.connect("clicked()", self.onImportModel)
            self.ui.openModelsFolderButton.connect("clicked()", self.onOpenModelsFolder)
            self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
            self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
            self.ui.axisComboBox.connect("currentIndexChanged(int)", self.onInputChanged)
            self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
            self.ui.startTrainingButton.connect("clicked()", self.onStartTraining)
            self.ui.stopTrainingButton.connect("clicked()", self.onStopTraining)
            self.ui.resumeTrainingButton.connect("clicked()", self.onResumeTraining)
            self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneClose)
            self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneImported)
            slicer.app.connect("aboutToQuit()", self.onSceneClose)
            self.onDeviceChanged()
            self.onInputChanged()

        # State: the scene's parameter node (saved with the scene) mirrors every control; the
        # same values persist between Slicer runs in QSettings.
        GENERAL_CONTROLS = {"modelComboBox": "model", "axisComboBox": "axis", "deviceComboBox": "device",
                    "detailSlider": "detail", "selfEnsembleCheckBox": "selfEnsemble", "anchorCheckBox": "anchor",
                    "scaleSpinBox": "scale", "degradationComboBox": "degradation",
                    "compareModelComboBox": "compareModel", "compareAxisComboBox": "compareAxis",
                    "compareDeviceComboBox": "compareDevice", "outputDirectoryButton": "outputFolder"}
        NODE_CONTROLS = {"inputSelector": "InputVolume", "groundTruthSelector": "GroundTruthVolume"}

        def _get(self, widget):
            if hasattr(widget, "currentText"):
                return widget.currentText
            if hasattr(widget, "directory"):
                return widget.directory
            if hasattr(widget, "checked"):
                return "true" if widget.checked else "false"
            return str(widget.value)

        def _set(self, widget, value):
            if hasattr(widget, "currentText"):
                if widget.findText(value) >= 0:
                    widget.currentIndex = widget.findText(value)
                elif widget.editable:
                    widget.setEditText(value)
            elif hasattr(widget, "directory"):
                widget.directory = value
            elif hasattr(widget, "checked"):
                widget.checked = value == "true"
            elif value:
                widget.value = float(value)

        def connectControls(self):
            for name in self.CONTROLS:
                widget = getattr(self.ui, name)
                signal = ("currentIndexChanged(int)" if hasattr(widget, "currentText") else
                          "directoryChanged(QString)" if hasattr(widget, "directory") else
                          "toggled(bool)" if hasattr(widget, "checked") else "valueChanged(double)"
                          if name == "detailSlider" else "valueChanged(int)")
                widget.connect(signal, self.updateParameterNodeFromGUI)
            for name in self.NODE_CONTROLS:
                getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)

        def updateGUIFromParameterNode(self, *_):
            node = self.logic.getParameterNode()
            self._updating = True
            try:
                for name, key in self.CONTROLS.items():
                    self._set(getattr(self.ui, name), node.GetParameter(key))
                for name, ref in self.NODE_CONTROLS.items():
                    getattr(self.ui, name).setCurrentNode(node.GetNodeReference(ref))
            finally:
                self._updating = False

        def updateParameterNodeFromGUI(self, *_):
            if getattr(self, "_updating", False) or self.logic is None:
                return
            node = self.logic.getParameterNode()
            wasModified = node.StartModify()
            for name, key in self.CONTROLS.items():
                node.SetParameter(key, self._get(getattr(self.ui, name)))
            for name, ref in self.NODE_CONTROLS.items():
                current = getattr(self.ui, name).currentNode()
                node.SetNodeReferenceID(ref, current.GetID() if current else None)
            node.EndModify(wasModified)

        def restoreSettings(self):
            s = qt.QSettings()
            for name, key in self.CONTROLS.items():
                value = s.value(f"{SETTINGS}/{key}")
                if value not in (None, ""):
                    self._set(getattr(self.ui, name), str(value))

        def saveSettings(self):
            s = qt.QSettings()
            for name, key in self.CONTROLS.items():
                s.setValue(f"{SETTINGS}/{key}", self._get(getattr(self.ui, name)))

        def onSceneImported(self, *_):
            """A loaded scene brings its own parameter node: show its values."""
            self.refreshModels()
            self.updateGUIFromParameterNode()

        # models
        def refreshModels(self):
            self.models = self.logic.listModels()
            for combo in (self.ui.modelComboBox, self.ui.compareModelComboBox, self.ui.initModelComboBox):
                current = combo.currentText
                combo.clear()
                if combo is self.ui.initModelComboBox:
                    combo.addItems(["realesrgan", "scratch"])
                for card in self.models:
                    combo.addItem(card["name"])
                if current and combo.findText(current) >= 0:
                    combo.currentIndex = combo.findText(current)
            self.onModelChanged()

        def onModelChanged(self, *_):
            card = next((c for c in self.models if c["name"] == self.ui.modelComboBox.currentText), None)
            if card is None:
                self.ui.modelInfoLabel.text = ""
                return
            metrics = card.get("metrics") or {}
            facts = [f"x{card.get('scale', '?')}", f"data: {str(card.get('training_data') or 'unknown')[:80]}"]
            if isinstance(metrics, dict) and metrics:
                facts.append("metrics: " + ", ".join(f"{k} {v}" for k, v in list(metrics.items())[:4]))
            self.ui.modelInfoLabel.text = "\n".join(facts)
            self.ui.detailSlider.enabled = bool(card.get("detail_partner"))

        def detailValue(self):
            """The detail slider's value when the chosen model has a GAN partner, else None."""
            card = next((c for c in self.models if c["name"] == self.ui.modelComboBox.currentText), {})
            return float(self.ui.detailSlider.value) if card.get("detail_partner") else None

        def onImportModel(self):
            path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import a model",
                                                  "", "Weights (*.safetensors *.pth *.param)")
            if path:
                with slicer.util.tryWithErrorDisplay("Could not import the model", waitCursor=True):
                    name = self.logic.importModel(path)
                    self.refreshModels()
                    self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.findText(name)

        def onOpenModelsFolder(self):
            from MRSuperResLib.catalog import cache_dir
            cache_dir().mkdir(parents=True, exist_ok=True)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(cache_dir())))

        def onInputChanged(self, *_):
            node = self.ui.inputSelector.currentNode()
            self.ui.autoAxisLabel.text = ""
            if node is None or self.AXES.get(self.ui.axisComboBox.currentText) != "auto":
                return
            try:
                from MRSuperResLib import geometry
                from MRSuperResLib.slicer_logic import volume_from_node
                volume = volume_from_node(node)
                axis = geometry.choose_axis("auto", volume.affine, volume.data.shape)
                self.ui.autoAxisLabel.text = f"auto: slices along {geometry.AXIS_NAMES[axis]}"
            except Exception as exc:
                self.ui.autoAxisLabel.text = str(exc)

        def onDeviceChanged(self, *_):
            import torch
            note = ""
            if not torch.cuda.is_available():
                note = "No CUDA GPU found: running on the CPU (bf16 where the CPU has it)."
            else:
                gib = torch.cuda.get_device_properties(0).total_memory / 2**30
                if gib < 6:
                    note = f"The GPU has {gib:.1f} GiB: large slices will be tiled automatically."
            self.ui.deviceNoteLabel.text = note

        # enhance and compare run on a worker thread; the timer polls them
        def onEnhance(self):
            self.startTask("enhance", self.ui.enhanceButton, lambda: self.logic.enhance(
                self.ui.inputSelector.currentNode(), model=self.ui.modelComboBox.currentText or None,
                axis=self.AXES[self.ui.axisComboBox.currentText], device=self.ui.deviceComboBox.currentText,
                detail=self.detailValue(), selfEnsemble=self.ui.selfEnsembleCheckBox.checked,
                anchor=self.ui.anchorCheckBox.checked, waitForCompletion=False))

        def onCompare(self):
            self.startTask("compare", self.ui.compareButton, lambda: self.logic.compare(
                self.ui.groundTruthSelector.currentNode(), model=self.ui.compareModelComboBox.currentText or None,
                scale=self.ui.scaleSpinBox.value, degradation=self.ui.degradationComboBox.currentText,
                axis=self.AXES[self.ui.compareAxisComboBox.currentText],
                device=self.ui.compareDeviceComboBox.currentText, anchor=self.ui.anchorCheckBox.checked,
                waitForCompletion=False))

        def startTask(self, kind, button, launch):
            """Apply starts `launch()` (a BackgroundTask) and becomes Cancel; pressed again, it cancels."""
            if self.task is not None:
                self.task.cancel()
                return
            self.saveSettings()
            with slicer.util.tryWithErrorDisplay(f"{kind.capitalize()} failed"):
                self.task = launch()
                self.taskKind = kind
                button.text = "Cancel"
                self.timer.start()

        def onTimer(self):
            if self.task is not None:
                bar = self.ui.progressBar if self.taskKind == "enhance" else self.ui.compareProgressBar
                label = self.ui.progressLabel if self.taskKind == "enhance" else self.ui.compareStatusLabel
                bar.maximum = max(1, self.task.total)
                bar.value = self.task.done
                left = self.task.secondsLeft
                label.text = f"{self.task.done}/{self.task.total} slices" + (f", {left:.0f} s left" if left else "")
                status = self.task.poll()
                if status != "running":
                    self.onTaskFinished(status)
            if self.job is not None:
                status = self.job.poll()
                it, iters, eta = self.job.progress
                self.ui.trainingProgressBar.maximum = max(1, iters)
                self.ui.trainingProgressBar.value = it
                self.ui.trainingStatusLabel.text = (f"{status}: iteration {it}/{iters}"
                                                    + (f", {eta / 60:.0f} min left" if eta else ""))
                if status != "running":
                    self.onTrainingFinished(status)
            if self.task is None and self.job is None:
                self.timer.stop()

        def onTaskFinished(self, status):
            task, kind, self.task = self.task, self.taskKind, None
            self.ui.enhanceButton.text = "Apply"
            self.ui.compareButton.text = "Apply"
            if status == "failed":
                slicer.util.errorDisplay(f"{kind.capitalize()} failed: {task.error}")
            elif status == "cancelled":
                slicer.util.showStatusMessage(f"{kind} cancelled; nothing was added to the scene", 3000)
            elif kind == "compare":
                self.logic.showComparison(task.result)
                m = task.result.metrics
                self.ui.compareStatusLabel.text = "\n".join(
                    f"{method}: SSIM {v['ssim'][0]:.3f}, PSNR {v['psnr'][0]:.2f} dB, VIF {v['vif'][0]:.3f}"
                    for method, v in m.items())

        # training runs as a child process; its event log drives the tables and plots
        def onStartTraining(self, resume=False):
            self.saveSettings()
            nodes = self.ui.trainingVolumesSelector.checkedNodes()
            val = self.ui.validationVolumesSelector.checkedNodes()
            with slicer.util.tryWithErrorDisplay("Could not start training"):
                self.job = self.logic.train(nodes, self.ui.outputDirectoryButton.directory,
                                            validationNodes=val, **{**self.logic.trainingOptions(), "resume": resume})
                plot = slicer.app.layoutManager().plotWidget(0)
                if plot is not None:
                    plot.mrmlPlotViewNode().SetPlotChartNodeID(self.job.lossChart.GetID())
                self.ui.startTrainingButton.enabled = self.ui.resumeTrainingButton.enabled = False
                self.ui.stopTrainingButton.enabled = True
                self.timer.start()

        def onResumeTraining(self):
            self.onStartTraining(resume=True)

        def onStopTraining(self):
            if self.job is not None:
                self.job.stop()
                self.ui.trainingStatusLabel.text = "stopping: saving a checkpoint and the model..."

        def onTrainingFinished(self, status):
            job, self.job = self.job, None
            self.ui.startTrainingButton.enabled = self.ui.resumeTrainingButton.enabled = True
            self.ui.stopTrainingButton.enabled = False
            if status == "failed":
                slicer.util.errorDisplay(job.message)
            else:
                self.refreshModels()
                self.ui.trainingStatusLabel.text = f"{status}: model '{job.registeredModel}' added to the list"

        def onSceneClose(self, *_):
            if self.task is not None:
                self.task.cancel()
            if self.job is not None:
                self.job.stop(timeout=60)

        def cleanup(self):
            self.onSceneClose()
            self.removeObservers()
            if self.timer:
                self.timer.stop()

    class MRSuperResTest(ScriptedLoadableModuleTest):
        """Loads a small volume, enhances it with a tiny model and compares (Slicer's self-test)."""

        def setUp(self):
            slicer.mrmlScene.Clear()

        def runTest(self):
            self.setUp()
            self.test_enhance_and_compare()

        def test_enhance_and_compare(self):
            import tempfile

            import numpy as np
            import torch

            from MRSuperResLib.rrdbnet import RRDBNet
            from MRSuperResLib.slicer_logic import MRSuperResLogic
            from MRSuperResLib.weights import save_model

            self.delayDisplay("Loading the bundled Colin27 sample")
            path = os.path.join(os.path.dirname(_HERE), "Resources", "SampleData", "colin27_t1_brain_slab.nii.gz")
            if not os.path.exists(path):
                path = os.path.join(_HERE, "Resources", "SampleData", "colin27_t1_brain_slab.nii.gz")
            node = slicer.util.loadVolume(path)
            torch.manual_seed(0)
            with tempfile.TemporaryDirectory() as tmp:
                model = os.path.join(tmp, "tiny.safetensors")
                save_model(RRDBNet(1, 1, scale=4, num_feat=8, num_block=1, num_grow_ch=4), model,
                           {"training_data": "random (self-test)", "iterations": 0})
                logic = MRSuperResLogic()
                self.delayDisplay("Enhancing 4 slices")
                small = slicer.util.addVolumeFromArray(slicer.util.arrayFromVolume(node)[20:24].copy(),
                                                       name="slab")
                sr = logic.enhance(small, model=model, axis=2)
                self.assertEqual(slicer.util.arrayFromVolume(sr).shape, (4, 184 * 4, 148 * 4))
                self.delayDisplay("Comparing against bicubic")
                result = logic.compare(small, model=model, scale=4, axis=2)
                logic.showComparison(result)
                self.assertEqual(result.metricsTable.GetNumberOfRows(), 3)
                self.assertTrue(np.isfinite(result.metrics["Bicubic"]["psnr"][0]))
            self.delayDisplay("Test passed")
