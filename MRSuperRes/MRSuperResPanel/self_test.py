"""Slicer's self-test of the module (Reload & Test, and CTest's py_MRSuperRes): MRSuperRes.py imports
`MRSuperResTest` from here, so the test runner finds it in the module. Imported only inside the
Slicer application."""
from __future__ import annotations

import os
import sys
import unittest

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MRSuperResSetup.dependencies import dependency_lines, installed_versions

_MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # MRSuperRes/, beside Resources
SAMPLE_NAME = "colin27_t1_brain_slab.nii.gz"


def sample_path() -> str:
    """The bundled sample: beside the module in a source tree, or in its Resources when installed."""
    for folder in (os.path.join(os.path.dirname(_MODULE_DIR), "Resources", "SampleData"),
                   os.path.join(_MODULE_DIR, "Resources", "SampleData")):
        if os.path.exists(os.path.join(folder, SAMPLE_NAME)):
            return os.path.join(folder, SAMPLE_NAME)
    raise FileNotFoundError(f"the bundled sample {SAMPLE_NAME} is missing")


class MRSuperResTest(ScriptedLoadableModuleTest):
    """Two parts. `test_panel_without_torch` needs only Slicer: the panel, its logic, the
    parameter node round trip, the plan line and the dependency check; it runs on every Slicer,
    the factory's included. `test_enhance_and_compare` runs a tiny model and is skipped where the
    dependencies are missing, as testing never installs them."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Reload & Test calls this directly, outside unittest's runner: a skip is said as a
        skip here instead of surfacing as a failed test."""
        for test in (self.test_panel_without_torch, self.test_enhance_and_compare):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skip:
                self.delayDisplay(f"{test.__name__} skipped: {skip}")

    def test_panel_without_torch(self):
        torch_before = "torch" in sys.modules
        slicer.util.selectModule("MRSuperRes")
        widget = slicer.modules.mrsuperres.widgetRepresentation().self()
        self.assertIs(slicer.util.getModuleLogic("MRSuperRes"), widget.logic)
        self.assertIsNotNone(widget.logic)                          # with or without the dependencies

        self.delayDisplay("The dependency check")
        missing = dependency_lines(installed_versions())
        self.assertEqual(widget.missing, missing)
        self.assertEqual(widget.ui.installDependenciesButton.isHidden(), not missing)

        self.delayDisplay("The parameter node round trip")
        node = widget.parameterNode()
        combo = widget.ui.consistencyComboBox
        combo.currentIndex = combo.findText("exact")
        self.assertEqual(node.GetParameter("consistency"), "exact")
        node.SetParameter("consistency", "none")
        widget.updateGUIFromParameterNode()
        self.assertEqual(combo.currentText, "none")

        self.delayDisplay("The plan line of the bundled sample")
        volume = slicer.util.loadVolume(sample_path())
        widget.ui.inputSelector.setCurrentNode(volume)
        self.assertIn("in-plane x", widget.ui.autoAxisLabel.text)
        self.assertEqual(node.GetNodeReferenceID("InputVolume"), volume.GetID())
        if not torch_before:
            self.assertNotIn("torch", sys.modules)               # the panel never imports it
        self.delayDisplay("Panel test passed")

    def test_enhance_and_compare(self):
        missing = dependency_lines(installed_versions())
        if missing:
            self.skipTest("MRSuperRes's dependencies are not installed: " + "; ".join(missing))
        import tempfile

        import numpy as np
        import torch

        from MRSuperResLib.in_slicer.logic import MRSuperResLogic
        from MRSuperResLib.models.rrdbnet import RRDBNet
        from MRSuperResLib.models.weights import save_model

        self.delayDisplay("Loading the bundled Colin27 sample")
        node = slicer.util.loadVolume(sample_path())
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
