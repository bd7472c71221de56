"""The panel's map overlay: the newest result with maps (enhance or compare with *Maps*) and the
*Overlay on the result* choice shown over it, in colour, in the views that show it.

A mixin of MRSuperResWidget (MRSuperRes.py), which owns `ui`, `logic` and `lastResult`. Imported only inside the Slicer application.
"""
from __future__ import annotations

import slicer


class MapsPanel:
    def showMapsOf(self, result, made):
        """A new result with maps becomes the one the overlay choice applies to, at once."""
        if made:
            self.lastResult = result
            if self.ui.mapOverlayComboBox.currentIndex > 0:
                self.onMapOverlay()

    def onMapOverlay(self, *_):
        """Overlay the chosen map of the newest result on the views showing it (or none)."""
        name = self.ui.mapOverlayComboBox.currentText
        if self.lastResult is None or self.logic is None:
            return
        with slicer.util.tryWithErrorDisplay("Cannot show the map"):
            self.logic.showMap(self.lastResult, None if name == "no overlay" else name)
