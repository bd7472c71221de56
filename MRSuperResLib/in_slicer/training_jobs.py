"""Training from Slicer: `mrsuperres train` as a child job whose event log fills a loss table, a
validation table and their charts, and whose finished model joins the model list."""
from __future__ import annotations

from pathlib import Path

from ..errors import MRSuperResError
from .jobs import Job, check_child_packages, python_executable
from ..files import safe_name
from .nodes import fill_table, new_node, remove_nodes, volume_from_node

LOSS_KEYS = ("l1", "perceptual", "gan", "total_g", "d_real", "d_fake")
SELF_SUPERVISED_SET = ("axis", "scale", "degrade", "stage", "preset", "data", "val")
STOP_GRACE = 120.0      # seconds a stopped run has to save its checkpoint and model before it is ended


class TrainingJob(Job):
    """A training run in a child process. `poll()` -> running, done, stopped (a graceful stop:
    checkpoint and model saved), cancelled (ended before it could save) or failed; `modelPath`
    and `registeredModel` once it has a model; `cancel()`/`stop()` ask for a graceful stop."""

    def __init__(self, cmd: list[str], run: Path, scene):
        self.runFolder = Path(run)
        base = self.runFolder.parent.name or "training"
        self.lossTable = new_node(scene, "vtkMRMLTableNode", f"{base} losses")
        self.validationTable = new_node(scene, "vtkMRMLTableNode", f"{base} validation")
        self.lossChart = new_node(scene, "vtkMRMLPlotChartNode", f"{base} loss curves")
        self.validationChart = new_node(scene, "vtkMRMLPlotChartNode", f"{base} validation")
        self.nodes = [self.lossTable, self.validationTable, self.lossChart, self.validationChart]
        self.modelPath, self.registeredModel = None, None
        self._losses, self._validation = {}, {}
        self._connect_charts(scene, base)
        try:
            super().__init__(cmd, self.runFolder, finish=self._register, on_events=self._update_tables,
                             log=self.runFolder / "train.log", grace=STOP_GRACE, stopped_means_cancelled=False)
        except BaseException:
            remove_nodes(self.nodes)
            raise

    @property
    def message(self) -> str:
        return self.error or ""

    def poll(self) -> str:
        was = self.status
        status = super().poll()
        if was == "running" and status == "failed":
            self.error = f"training failed (exit {self.process.returncode}): {self.error}"
            if not any(e.get("event") == "progress" for e in self.events):
                remove_nodes(self.nodes)            # nothing to show: leave the scene as it was
        return status

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: the run checkpoints, exports its model and exits; with `timeout`,
        waits that long and then ends the process tree."""
        self.cancel()
        if timeout is not None:
            try:
                self.wait(timeout=timeout)
            except MRSuperResError:
                self.terminate()

    def wait(self, poll_seconds: float = 1.0, timeout: float | None = None):
        try:
            super().wait(poll_seconds, timeout)
        except MRSuperResError:
            if self.status == "running":
                raise
        return self.status

    def _register(self, last: dict) -> Path:
        self.modelPath = Path(last["model"])
        if self.modelPath.exists():
            from ..models.catalog import register_model

            self.registeredModel = register_model(self.modelPath, safe_name(self.runFolder.parent.name))
        return self.modelPath

    def _update_tables(self, new: list[dict]) -> None:
        for e in new:
            if e.get("event") == "progress":
                for k in LOSS_KEYS:
                    if k in e.get("losses", {}):
                        self._losses.setdefault("iteration", {})[e["iter"]] = e["iter"]
                        self._losses.setdefault(k, {})[e["iter"]] = e["losses"][k]
            elif e.get("event") == "validation":
                for who in ("model", "generator", "bicubic"):
                    if who not in e:
                        continue
                    for k in ("psnr", "ssim", "vif"):
                        self._validation.setdefault(f"{who}_{k}", {})[e["iter"]] = (e.get(who) or {}).get(k)
                self._validation.setdefault("iteration", {})[e["iter"]] = e["iter"]
        for table, data in ((self.lossTable, self._losses), (self.validationTable, self._validation)):
            if data:
                iters = sorted(data["iteration"])
                fill_table(table, {k: [v.get(i) for i in iters] for k, v in data.items()})

    def _connect_charts(self, scene, base: str) -> None:
        for chart, table, columns, title in (
                (self.lossChart, self.lossTable, ("l1", "perceptual", "gan", "total_g"), "loss"),
                (self.validationChart, self.validationTable, ("model_psnr", "bicubic_psnr"), "PSNR (dB)")):
            chart.SetXAxisTitle("iteration")
            chart.SetYAxisTitle(title)
            for col in columns:
                series = new_node(scene, "vtkMRMLPlotSeriesNode", f"{base} {col}")
                self.nodes.append(series)
                series.SetAndObserveTableNodeID(table.GetID())
                series.SetXColumnName("iteration")
                series.SetYColumnName(col)
                series.SetPlotType(series.PlotTypeScatter)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())


def panel_default(option: str):
    """The panel's starting value of a training option (TrainConfig), or None."""
    from ..training.config import panel_defaults
    return panel_defaults().get(option)


def launch_training(scene, volumeNodes, outputFolder, validationNodes=None, python=None,
                    self_supervised: bool = False, **options) -> TrainingJob:
    """Check the options, write the volumes and the config, start the run (see MRSuperResLogic.train)."""
    from ..training.config import build_config, check_options, write_config_file
    from ..scans.volumes import write_volume

    if python is None:
        check_child_packages()
    nodes = list(volumeNodes or [])
    if not nodes:
        raise MRSuperResError("no training volume chosen")
    out = Path(outputFolder)
    volumes = [volume_from_node(n, "training volume") for n in nodes]
    if self_supervised:
        if len(nodes) != 1 or validationNodes:
            raise MRSuperResError("fine-tuning on a volume takes exactly one (thick-slice) volume and no validation "
                                  "volumes: it validates on its own held-out slices")
        from ..pipeline.plan import choose_direction
        choose_direction(volumes[0], "through-plane")       # thick slices, or one clear error
        # the volume decides these (self_supervised.py); the panel's starting model, iterations and
        # patch are the panel's defaults, not the user's choice, so the fine-tune's own apply
        options = {k: v for k, v in options.items() if k not in SELF_SUPERVISED_SET
                   and not (k in ("init", "iters", "patch") and v == panel_default(k))}
        check_options({**options, "scale": 1, "degrade": "thick"})
    else:
        check_options(options)              # a bad option: one clear error, nothing written
    val_volumes = [volume_from_node(n, "validation volume") for n in (validationNodes or [])]
    run = out / "run"
    if run.exists() and any(run.iterdir()) and not options.get("resume"):
        raise MRSuperResError(f"{run} already holds a run: choose another output folder, or resume it")
    data_dir = out / "data"
    made_data_dir = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_volume(v, data_dir / f"{safe_name(n.GetName())}.nii.gz") for v, n in zip(volumes, nodes)]
    val_paths = [write_volume(v, data_dir / f"val_{safe_name(n.GetName())}.nii.gz")
                 for v, n in zip(val_volumes, validationNodes or [])]
    if self_supervised:                     # its options come from the volume (self_supervised.py)
        try:
            config = build_config({**options, "fine_tune_on": str(paths[0]), "out": str(run)})
        except MRSuperResError:                 # nothing half-written: the volume and a folder made for it go
            paths[0].unlink(missing_ok=True)
            if made_data_dir:
                data_dir.rmdir()
            raise
    else:
        config = build_config({**options, "data": [str(p) for p in paths], "val": [str(p) for p in val_paths],
                               "out": str(run)})
    run.mkdir(parents=True, exist_ok=True)
    config_file = write_config_file(config, run / "train_config.json")
    cmd = [python or python_executable(), "-m", "MRSuperResLib", "train", "--config", str(config_file)]
    return TrainingJob(cmd, run, scene)
