"""The panel's model list: the combos of models, the card of the chosen one, the detail slider,
importing a weights file and opening the models folder.

A mixin of MRSuperResWidget (MRSuperRes.py), which owns `ui`, `logic`, `models`, `_updating`
and `ensureDependencies`. Imported only inside the Slicer application.
"""
from __future__ import annotations

import qt
import slicer

from MRSuperResSetup.dependencies import default_home_dir


def card_named(models: list[dict], name: str):
    """The card of the listed model `name`, or None."""
    return next((c for c in models if c["name"] == name), None)


class ModelsPanel:
    def modelCombos(self):
        return [self.ui.modelComboBox, self.ui.compareModelComboBox]

    def modelFor(self, combo, through_plane):
        """The combo's model when it fits the direction (x1 across slices, x2-x8 in the plane),
        else None: the logic then takes the default model for that direction."""
        card = card_named(self.models, combo.currentText)
        if card is None or (card.get("scale") == 1) != through_plane:
            return None
        return combo.currentText or None

    def refreshModels(self):
        """Re-list the models, keeping each combo's choice; writes nothing to the parameter node."""
        self.models = self.logic.listModels()
        self._updating = True
        try:
            for combo in self.modelCombos() + [self.ui.initModelComboBox]:
                current = combo.currentText
                combo.clear()
                if combo is self.ui.initModelComboBox:
                    combo.addItems(["realesrgan", "scratch"])
                for card in self.models:
                    combo.addItem(card["name"])
                if current and combo.findText(current) >= 0:
                    combo.currentIndex = combo.findText(current)
                elif current and combo.editable:
                    combo.setEditText(current)
        finally:
            self._updating = False
        self.onModelChanged()

    def card(self):
        return card_named(self.models, self.ui.modelComboBox.currentText)

    def onModelChanged(self, *_):
        card = self.card()
        if card is None:
            self.ui.modelInfoLabel.text = ""
            return
        metrics = card.get("metrics") or {}
        facts = [f"x{card.get('scale', '?')}", f"data: {str(card.get('training_data') or 'unknown')[:80]}"]
        if isinstance(metrics, dict) and metrics:
            facts.append("metrics: " + ", ".join(f"{k} {v}" for k, v in list(metrics.items())[:4]))
        self.ui.modelInfoLabel.text = "\n".join(facts)
        self.ui.detailSlider.enabled = bool(card.get("detail_partner"))

    def onCompareModelChanged(self, *_):
        """Compare simulates the chosen in-plane model's own factor (an x2 model is compared at x2)."""
        card = card_named(self.models, self.ui.compareModelComboBox.currentText)
        if card and card.get("scale") in (2, 4, 8) and self.ui.degradationComboBox.currentText != "thick":
            self.ui.scaleSpinBox.value = card["scale"]

    def detailValue(self):
        """The detail slider's value when the chosen model has a GAN partner, else None."""
        card = self.card() or {}
        return float(self.ui.detailSlider.value) if card.get("detail_partner") else None

    def onImportModel(self):
        if not self.ensureDependencies():
            return
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import a model",
                                              "", "Weights (*.safetensors *.pth *.param)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not import the model", waitCursor=True):
                name = self.logic.importModel(path)
                self.refreshModels()
                self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.findText(name)

    def onOpenModelsFolder(self):
        folder = default_home_dir() / "models"
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))
