"""Slicer's self-test of the module (Reload & Test, and CTest's py_MRSuperRes): MRSuperRes.py imports
`MRSuperResTest` from here, so the test runner finds it in the module. Imported only inside the
Slicer application."""
from __future__ import annotations

import os

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from MRSuperResSetup.dependencies import dependency_lines, installed_versions

_MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # MRSuperRes/, beside Resources


class MRSuperResTest(ScriptedLoadableModuleTest):
    """Loads a small volume, enhances it with a tiny model and compares (Slicer's self-test,
    registered with CTest); skipped where torch is not installed, as testing never installs."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_enhance_and_compare()

    def test_enhance_and_compare(self):
        missing = dependency_lines(installed_versions())
        if missing:
            self.skipTest("MRSuperRes's dependencies are not installed: " + "; ".join(missing))
        import tempfile

        import numpy as np
        import torch

        from MRSuperResLib.models.rrdbnet import RRDBNet
        from MRSuperResLib.in_slicer.logic import MRSuperResLogic
        from MRSuperResLib.models.weights import save_model

        self.delayDisplay("Loading the bundled Colin27 sample")
        path = os.path.join(os.path.dirname(_MODULE_DIR), "Resources", "SampleData", "colin27_t1_brain_slab.nii.gz")
        if not os.path.exists(path):
            path = os.path.join(_MODULE_DIR, "Resources", "SampleData", "colin27_t1_brain_slab.nii.gz")
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
