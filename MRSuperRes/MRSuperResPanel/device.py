"""The note under the panel's device choice: whether a CUDA GPU is there and how much memory it
has, found out by a child process (MRSuperResLib.in_slicer.device_probe), so that Slicer's own
process never imports torch or initialises CUDA.

A mixin of MRSuperResWidget (MRSuperRes.py), which owns `ui`, `logic`, `missing` and `deviceProbe`.
Imported only inside the Slicer application.
"""
from __future__ import annotations

import qt


class DevicePanel:
    def onDeviceChanged(self, *_):
        """Asked once, shown when the child answers."""
        if self.logic is None or self.missing:    # torch not there yet: the dependency line says what
            self.ui.deviceNoteLabel.text = ""
            return
        if self.deviceProbe is None:
            from MRSuperResLib.in_slicer.device_probe import DeviceProbe
            self.deviceProbe = DeviceProbe()
            qt.QTimer.singleShot(500, self.showDeviceNote)
        elif self.deviceProbe.note is not None:
            self.ui.deviceNoteLabel.text = self.deviceProbe.note

    def showDeviceNote(self):
        note = self.deviceProbe.poll() if self.deviceProbe is not None else ""
        if note is None:                      # still starting torch in the child: look again
            qt.QTimer.singleShot(500, self.showDeviceNote)
            return
        self.ui.deviceNoteLabel.text = note
