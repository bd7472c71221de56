"""The comparison layout: linked slice views GT | LR | SR | Bicubic | Bilinear with the
metrics table and per-slice plot, in Slicer's views or (headless) in slice logics made as
Slicer's layout manager makes them; and a picture of what the views show.

Slicer started with --no-main-window has no views: showing the layout then refuses with a
message, and the picture is rendered by the headless route (it needs no views).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MRSuperResError
from .nodes import CompareResult
from .scene import application_logic, layout_manager, require_slicer

COMPARE_LAYOUT_ID = 6301                       # a custom layout id, above Slicer's built-in ones
COMPARE_VIEWS = (("groundTruth", "GT", "Ground truth", "#808080"),
                 ("lowResolution", "LR", "Low resolution", "#F34A33"),
                 ("superResolved", "SR", "Super-resolved", "#6EB04B"),
                 ("bicubic", "Bicubic", "Bicubic", "#EDD54C"),
                 ("bilinear", "Bilinear", "Bilinear", "#4C7FED"))


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


NO_VIEWS = ("the comparison layout needs Slicer's views, and this Slicer runs without a main window "
            "(--no-main-window): the comparison's volumes and metrics table are in the scene, and "
            "saveComparisonPicture draws the views without one")


def show_comparison(scene, result: CompareResult, orientation: str | None = None) -> list:
    """Linked slice views GT | LR | SR | Bicubic | Bilinear (same window/level, same
    orientation) and the metrics table and per-slice plot; returns the slice nodes."""
    if hasattr(require_slicer(), "app") and layout_manager() is None:
        raise MRSuperResError(NO_VIEWS)
    return arrange_views(scene, result, orientation)


def arrange_views(scene, result: CompareResult, orientation: str | None = None) -> list:
    """The comparison layout in Slicer's layout manager, or (none there) in slice logics of our own."""
    orientation = orientation or orientation_of(result.groundTruth, result.axis)
    layout = layout_node(scene)
    if not layout.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout.AddLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(orientation))
    else:
        layout.SetLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(orientation))
    manager = layout_manager()
    if manager is not None:
        manager.setLayout(COMPARE_LAYOUT_ID)
    else:
        layout.SetViewArrangement(COMPARE_LAYOUT_ID)
    window, level = window_level(result.groundTruth)
    slice_nodes = []
    for key, tag, _, _ in COMPARE_VIEWS:
        volume = getattr(result, key)
        logic = slice_logic(scene, f"MRSuperRes{tag}")
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
    gt_logic = slice_logic(scene, "MRSuperResGT")
    offset = gt_logic.GetSliceOffset()
    for node in slice_nodes[1:]:
        slice_logic(scene, node.GetLayoutName()).SetSliceOffset(offset)
    for view in require_slicer().util.getNodesByClass("vtkMRMLPlotViewNode"):
        if view.GetLayoutName() == "MRSuperResPlot":
            view.SetPlotChartNodeID(result.plotChart.GetID())
    for view in require_slicer().util.getNodesByClass("vtkMRMLTableViewNode"):
        if view.GetLayoutName() == "MRSuperResTable":
            view.SetTableNodeID(result.metricsTable.GetID())
    return slice_nodes

def view_images(scene, result: CompareResult) -> dict[str, np.ndarray]:
    """What each comparison view shows now, as window/levelled RGB arrays (no GL needed)."""
    from vtk.util.numpy_support import vtk_to_numpy
    images = {}
    for _, tag, title, _ in COMPARE_VIEWS:
        logic = slice_logic(scene, f"MRSuperRes{tag}")
        producer = logic.GetImageDataConnection().GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(0)
        w, h, _ = image.GetDimensions()
        rgba = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)
        images[title] = rgba[::-1, :, :3].copy()
    return images

def save_comparison_picture(scene, result: CompareResult, path) -> Path:
    """A labelled PNG of the comparison views with each method's mean SSIM / PSNR / VIF; its
    text chunk names the model (`Description: model=NAME`), so a picture says what made it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_path
    if layout_manager() is None:            # no views (plain Python, --no-main-window): our own
        arrange_views(scene, result)
    images = view_images(scene, result)
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
        fig.savefig(tmp, format="png", metadata={"Software": "MRSuperRes",
                                                 "Description": f"model={result.modelName}"})
    plt.close(fig)
    return path


def layout_node(scene):
    slicer = require_slicer()
    manager = layout_manager()
    if manager is not None:
        return manager.layoutLogic().GetLayoutNode()
    logic = getattr(scene, "MRSuperResLayoutLogic", None)
    if logic is None:
        logic = slicer.vtkMRMLLayoutLogic()
        logic.SetMRMLScene(scene)
        scene.MRSuperResLayoutLogic = logic
    return logic.GetLayoutNode()


def slice_logic(scene, layout_name: str):
    """The slice logic of a view: the app's, or (headless) one made and registered with the
    application logic, as Slicer's layout manager does, so that linked control works."""
    slicer = require_slicer()
    manager = layout_manager()
    if manager is not None:
        return manager.sliceWidget(layout_name).sliceLogic()
    app = application_logic(scene)
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
    logic.SetMRMLScene(scene)
    logic.SetSliceNode(node)
    node.SetDimensions(256, 256, 1)
    logics.AddItem(logic)
    return logic


def orientation_of(node, axis: int) -> str:
    """The slice view orientation whose normal is closest to the slicing axis in RAS."""
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    direction = np.abs([m.GetElement(r, axis) for r in range(3)])
    return ("Sagittal", "Coronal", "Axial")[int(np.argmax(direction))]


def window_level(node) -> tuple[float, float]:
    """Window/level from the 0.5-99.5 percentiles of the ground truth (shared by all views)."""
    slicer = require_slicer()
    data = slicer.util.arrayFromVolume(node)
    lo, hi = np.percentile(data, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
    return float(hi - lo), float((hi + lo) / 2)
