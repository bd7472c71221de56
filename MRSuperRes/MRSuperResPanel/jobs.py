"""The panel's Enhance and Compare sections: one child-process job per section, started by its
Apply (which then becomes its Cancel) and polled by the panel's timer.

A finished job is handled exactly once: the timer's callback is never re-entered (a modal dialog
or pip's output runs an event loop inside callbacks) and reads each job from `self.jobs` afresh.
No modal dialog opens inside the callback; an error shows in the status line at once and in a
dialog once the callback has returned.

A mixin of MRSuperResWidget (MRSuperRes.py), which owns `ui`, `logic`, `jobs`, `cancelling`,
`trainingJob`, `closedJobs`, `timer`, `_polling`, `AXES`, `ensureDependencies`, `updateButtons`,
`updateParameterNodeFromGUI`, `saveSettings`, `pollTraining`, `showMapsOf`, `modelFor` and
`detailValue`. Imported only inside the Slicer application.
"""
from __future__ import annotations

import logging

import qt
import slicer


class JobsPanel:
    # per section: the Apply button, its progress bar and its status label
    SECTIONS = {"enhance": ("enhanceButton", "progressBar", "progressLabel"),
                "compare": ("compareButton", "compareProgressBar", "compareStatusLabel")}

    def section(self, kind):
        return [getattr(self.ui, name) for name in self.SECTIONS[kind]]

    def onApply(self, kind):
        """Apply starts this section's job and becomes its Cancel; the other section is untouched."""
        button, bar, label = self.section(kind)
        job = self.jobs[kind]
        if job is not None:
            job.cancel()                      # asynchronous: the timer sees it end
            self.cancelling.add(kind)
            self.updateButtons()
            label.text = "cancelling..."
            return
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        self.saveSettings()
        bar.maximum, bar.value = 100, 0
        label.text = "starting..."
        try:
            self.jobs[kind] = self.launch(kind)
        except Exception as exc:              # bad input: one message, nothing started
            label.text = ""
            self.showErrorLater(f"{kind.capitalize()} failed: {exc}")
            return
        button.text = "Cancel"
        self.timer.start()

    def launch(self, kind):
        if kind == "enhance":
            node, axis = self.ui.inputSelector.currentNode(), self.AXES[self.ui.axisComboBox.currentText]
            plan = self.logic.plan(node, self.ui.directionComboBox.currentText, axis, self.spacingValue())
            through = plan.direction == "through-plane"
            return self.logic.enhance(
                node, model=self.modelFor(self.ui.modelComboBox, through), axis=axis, direction=plan.direction,
                device=self.ui.deviceComboBox.currentText, detail=None if through else self.detailValue(),
                selfEnsemble=self.ui.selfEnsembleCheckBox.checked and not through,
                consistency=self.ui.consistencyComboBox.currentText,
                maps=self.ui.mapsCheckBox.checked, plan=plan, waitForCompletion=False)
        thick = self.ui.degradationComboBox.currentText == "thick"
        return self.logic.compare(
            self.ui.groundTruthSelector.currentNode(), model=self.modelFor(self.ui.compareModelComboBox, thick),
            scale=self.ui.scaleSpinBox.value, degradation=self.ui.degradationComboBox.currentText,
            axis=self.AXES[self.ui.compareAxisComboBox.currentText],
            device=self.ui.compareDeviceComboBox.currentText, consistency=self.ui.consistencyComboBox.currentText,
            maps=self.ui.mapsCheckBox.checked, waitForCompletion=False)

    def onTimer(self):
        """One look at every job. Never re-entered (a nested call, from an event loop some
        callback below runs, returns at once), and a job is read from self.jobs each time, so
        that one finished meanwhile is not finished again."""
        if self._polling:
            return
        self._polling = True
        try:
            self.pollJobs()
        finally:
            self._polling = False

    def pollJobs(self):
        for kind in list(self.jobs):
            job = self.jobs[kind]
            if job is None:
                continue
            _, bar, label = self.section(kind)
            status = job.poll()
            if status == "running":
                bar.maximum, bar.value = max(1, job.total), job.done
                left = job.secondsLeft
                if job.total and kind not in self.cancelling:
                    label.text = f"{job.done}/{job.total} {getattr(job, 'unit', 'slices')}" + (f", {left:.0f} s left" if left else "")
            else:
                self.onJobFinished(kind, job, status)
        for job in list(self.closedJobs):           # polled so that one stuck past its grace is ended
            if job.poll() != "running":              # (a cancelled job adds nothing to the scene)
                self.closedJobs.remove(job)
        if self.trainingJob is not None:
            self.pollTraining()
        if not any(self.jobs.values()) and not self.closedJobs and self.trainingJob is None:
            self.timer.stop()

    def onJobFinished(self, kind, job, status):
        if self.jobs.get(kind) is not job:       # handled already
            return
        self.jobs[kind] = None
        self.cancelling.discard(kind)
        button, bar, label = self.section(kind)
        button.text = "Apply"
        self.updateButtons()
        bar.maximum, bar.value = 100, 0
        if status == "failed":
            label.text = f"failed: {job.error}"
            self.showErrorLater(f"{kind.capitalize()} failed: {job.error}")
        elif status == "cancelled":
            label.text = "cancelled; nothing was added to the scene"
        elif kind == "enhance":
            note = self.logic.resultNote(job.result)
            label.text = f"done: '{job.result.GetName()}' added to the scene" + (f"\n{note}" if note else "")
            self.showMapsOf(job.result, job.result.GetAttribute("MRSuperRes.map.consistency"))
        else:
            m = job.result.metrics
            label.text = "\n".join(f"{method}: SSIM {v['ssim'][0]:.3f}, PSNR {v['psnr'][0]:.2f} dB, "
                                   f"VIF {v['vif'][0]:.3f}" for method, v in m.items())
            try:
                self.logic.showComparison(job.result)
            except Exception as exc:           # no views (--no-main-window): the metrics still show
                logging.warning("MRSuperRes: cannot show the comparison: %s", exc)
            self.showMapsOf(job.result, job.result.maps)

    def showErrorLater(self, text):
        """A modal error dialog, opened once the current callback has returned: its event loop
        then runs the timer on a consistent panel (the status line already says it)."""
        qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(text))
