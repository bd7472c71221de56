"""The MRML scene MRSuperRes works in: Slicer's own, or (plain Python with slicer-core) one
made here with the application and module logics the desktop application would provide."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import MRSuperResError


def require_slicer():
    """The slicer module with a scene set, or one clear error saying how to get one."""
    try:
        import slicer
    except ImportError:
        raise MRSuperResError("the Slicer logic needs 3D Slicer or the slicer-core package "
                              "(pip install slicer-core)") from None
    if getattr(slicer, "mrmlScene", None) is None:
        raise MRSuperResError("slicer.mrmlScene is not set: in plain Python call "
                              "MRSuperResLib.in_slicer.scene.headless_scene() first")
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
    slicer = require_slicer()
    if not Path(path).exists():
        raise MRSuperResError(f"file not found: {path}")
    check_header(path)
    if hasattr(slicer, "app"):
        try:
            return slicer.util.loadVolume(str(path))
        except RuntimeError as exc:             # Slicer's reader failed: one clear line, as headless
            raise MRSuperResError(f"Slicer could not read {path} as a volume ({exc})") from None
    logic = application_logic(slicer.mrmlScene).GetModuleLogic("Volumes")
    node = logic.AddArchetypeVolume(str(path), name or Path(path).name.split(".")[0])
    if node is None:
        raise MRSuperResError(f"Slicer could not read {path} as a volume")
    return node


def check_header(path) -> None:
    """A NIfTI or NRRD file whose header cannot be read is refused in one line here, before
    Slicer's readers try every format and log a page of errors; other formats go to Slicer."""
    from ..scans.volumes import NIFTI_SUFFIXES, NRRD_SUFFIXES

    name = str(path).lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel

            nibabel.load(str(path))
        elif name.endswith(NRRD_SUFFIXES):
            import nrrd

            nrrd.read_header(str(path))
    except Exception as exc:
        kind = "NIfTI" if name.endswith(NIFTI_SUFFIXES) else "NRRD"
        raise MRSuperResError(f"{path} is not a readable {kind} file ({' '.join(str(exc).split())[:120]})") from None


def layout_manager():
    """Slicer's layout manager, or None: in plain Python, and in Slicer started with
    --no-main-window (batch), where the application has no views."""
    slicer = require_slicer()
    app = getattr(slicer, "app", None)
    return app.layoutManager() if app is not None else None
