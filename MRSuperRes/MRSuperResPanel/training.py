"""The panel's training section: a child process whose event log fills the tables and the curves.

A mixin of MRSuperResWidget (MRSuperRes.py), which owns `ui`, `logic`, `timer`, `trainingJob`,
`trainingStopping`, `ensureDependencies`, `updateButtons`, `showErrorLater`,
`updateParameterNodeFromGUI`, `saveSettings` and `refreshModels`. Imported only inside the Slicer application.
"""
from __future__ import annotations

import logging
import os
import time

import slicer

from MRSuperResSetup.dependencies import default_home_dir, training_output_folder


class TrainingPanel:
    def onStartTraining(self, resume=False):
        if self.trainingJob is not None or not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        self.saveSettings()
        bar, label = self.ui.trainingProgressBar, self.ui.trainingStatusLabel
        bar.maximum, bar.value = 100, 0
        label.text = ""
        with slicer.util.tryWithErrorDisplay("Could not start training"):
            folder = training_output_folder(self.ui.outputDirectoryButton.directory, default_home_dir() / "runs",
                                            resume, time.strftime("%Y%m%d-%H%M%S"))
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(str(folder), os.W_OK):
                raise PermissionError(f"cannot write to {folder}: choose another output folder")
            self.ui.outputDirectoryButton.directory = str(folder)      # Resume continues this run
            own = self.ui.selfSupervisedCheckBox.checked        # fine-tune on this (thick-slice) volume
            self.trainingJob = self.logic.train(
                self.ui.trainingVolumesSelector.checkedNodes(), str(folder),
                validationNodes=[] if own else self.ui.validationVolumesSelector.checkedNodes(),
                selfSupervised=own, **{**self.logic.trainingOptions(), "resume": resume})
            self.trainingStopping = False
            self.updateButtons()              # Start/Resume off, Stop on
            label.text = "starting..."
            self.timer.start()
            try:
                slicer.modules.plots.logic().ShowChartInLayout(self.trainingJob.lossChart)
            except Exception as exc:           # no layout (--no-main-window)
                logging.warning("MRSuperRes: cannot show the loss curves: %s", exc)

    def onStopTraining(self):
        if self.trainingJob is not None:
            self.trainingJob.stop()             # asks for a graceful stop; returns at once
            self.trainingStopping = True
            self.updateButtons()
            self.ui.trainingStatusLabel.text = "stopping: saving a checkpoint and the model..."

    def pollTraining(self):
        job = self.trainingJob
        status = job.poll()
        it, iters, eta = job.progress
        bar, label = self.ui.trainingProgressBar, self.ui.trainingStatusLabel
        if status == "running":
            bar.maximum, bar.value = max(1, iters), it
            if not self.trainingStopping and iters:
                label.text = f"iteration {it}/{iters}" + (f", {eta / 60:.0f} min left" if eta else "")
            return
        self.trainingJob = None
        self.trainingStopping = False
        self.updateButtons()
        bar.maximum, bar.value = 100, 0
        if status == "failed":
            label.text = f"failed: {job.message}"
            self.showErrorLater(job.message)
        elif status == "cancelled":
            label.text = "cancelled before a model was saved"
        else:
            self.refreshModels()
            label.text = (f"{status} at iteration {it}: model '{job.registeredModel}' added to the model list"
                          if job.registeredModel else f"{status}: no model was exported")

