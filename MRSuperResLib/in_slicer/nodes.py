"""Scene nodes <-> the library's volumes, tables and the comparison's node set; no Qt.

Every node is added only after the computation it shows succeeded, and a failure while making
a set of nodes removes those made so far, so the scene stays as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MRSuperResError
from .jobs import finish_steps
from .scene import require_slicer
from ..scans.volumes import Volume

METRIC_COLUMNS = ("ssim", "psnr", "nrmse", "rmse", "mae", "vif")


def volume_from_node(node, role: str = "input volume") -> Volume:
    """The node's voxels as (i, j, k) float32 and its IJK-to-RAS matrix; refuses what the
    network cannot take (no node, vector/RGB/4D, 2D, empty, NaN)."""
    slicer = require_slicer()
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
    from ..scans.volumes import check_voxels
    data = check_voxels(data, f"{role} '{name}'")
    return Volume(np.ascontiguousarray(data, dtype=np.float32), affine, {"path": name})


LANDING_BYTES = 1 << 27        # voxels copied into a node per step (128 MB: about 0.3 s on 2 cores)


def add_volume_node(volume: Volume, name: str, like=None):
    """A new scalar volume node holding `volume` (geometry exact), display copied from `like`."""
    return finish_steps(add_volume_node_steps(volume, name, like))


def add_volume_node_steps(volume: Volume, name: str, like=None, window: tuple | None = None):
    """add_volume_node as a generator: each step copies at most LANDING_BYTES of voxels, read
    straight from `volume.data` (a memory map of a job's output: one copy in all), so that Slicer's
    main thread, which runs one step per timer tick, never stalls for a whole large volume.
    `window` (low, high), or the volume's meta "display_window" (measured by the job's child):
    the display range, set before the voxels arrive, so that Slicer does not compute its
    automatic window over the whole volume here (1.4 s for 1024 x 1024 x 176). Returns the node
    (StopIteration.value); a failure removes it."""
    import vtk
    from vtk.util.numpy_support import get_vtk_array_type

    slicer = require_slicer()
    kji = volume.data.transpose(2, 1, 0)                    # Slicer's (K, J, I) order: a view, nothing read yet
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", slicer.mrmlScene.GenerateUniqueName(name))
    try:
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(volume.affine, dtype=float)))
        image = vtk.vtkImageData()
        image.SetDimensions(kji.shape[::-1])
        image.AllocateScalars(get_vtk_array_type(kji.dtype), 1)
        node.SetAndObserveImageData(image)
        target = slicer.util.arrayFromVolume(node)
        step = max(1, LANDING_BYTES // max(1, kji[0].nbytes))
        for k in range(0, kji.shape[0], step):
            target[k:k + step] = kji[k:k + step]
            if k + step < kji.shape[0]:
                yield
        window = window or volume.meta.get("display_window")
        if window is not None:
            fixed = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
            fixed.AutoWindowLevelOff()
            fixed.SetWindowLevelMinMax(float(window[0]), float(window[1]))
            node.SetAndObserveDisplayNodeID(fixed.GetID())
        slicer.util.arrayFromVolumeModified(node)
        node.CreateDefaultDisplayNodes()                    # none made above: Slicer's automatic window
        display = node.GetDisplayNode()
        source = like.GetDisplayNode() if like is not None else None
        if source is not None and source.GetColorNodeID():
            display.SetAndObserveColorNodeID(source.GetColorNodeID())
        elif display.GetColorNodeID() is None:
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    except BaseException:
        remove_nodes([node])
        raise
    return node


def remove_nodes(nodes) -> None:
    slicer = require_slicer()
    for node in nodes:
        if node is not None and slicer.mrmlScene.IsNodePresent(node):
            slicer.mrmlScene.RemoveNode(node)


def fill_table(table, columns: dict[str, list]) -> None:
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


def new_node(scene, cls: str, name: str):
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    if node is None:
        raise MRSuperResError(f"could not create a {cls}")
    return node

def folder(scene, name: str, nodes: list) -> int:
    sh = require_slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), name)
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder)
        else:
            sh.CreateItem(folder, node)
    return folder


# the maps' colours: signed residual blue (output darker than the scan) to red (brighter); spreads and errors hot
MAP_COLOURS = {"consistency": "vtkMRMLColorTableNodefMRI"}       # the others (spreads, |SR - GT|): Iron
MAP_TITLES = {"consistency": "consistency map", "uncertainty": "uncertainty map", "detail": "detail map",
              "error": "|SR - GT|"}
MAP_OPACITY = 0.5


def display_top(volume: Volume) -> float:
    """The top of a map's display window: the 99.5th percentile of |map| (1 where it is all 0)."""
    return float(np.percentile(np.abs(volume.data), 99.5)) or 1.0


def add_map_nodes(scene, parent, maps: dict[str, Volume]) -> dict:
    """{name: node} of `maps` as volumes under `parent` in the subject hierarchy, coloured (signed
    consistency centred on 0), each pointing to its parent and the parent to them."""
    return finish_steps(add_map_nodes_steps(scene, parent, maps))


def add_map_nodes_steps(scene, parent, maps: dict[str, Volume]):
    """add_map_nodes in landing steps (add_volume_node_steps); returns {name: node}."""
    slicer = require_slicer()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    made = {}
    try:
        for name, volume in maps.items():
            yield
            top = volume.meta.get("display_top") or display_top(volume)
            window = (-top, top) if name == "consistency" else (0.0, top)         # signed consistency: 0 centred
            node = yield from add_volume_node_steps(volume, f"{parent.GetName()} {MAP_TITLES.get(name, name)}",
                                                    window=window)
            made[name] = node
            display = node.GetDisplayNode()
            display.SetAndObserveColorNodeID(MAP_COLOURS.get(name, "vtkMRMLColorTableNodeIron"))
            node.SetAttribute("MRSuperRes.mapOf", parent.GetID())
            parent.SetAttribute(f"MRSuperRes.map.{name}", node.GetID())
            # the application makes an item for every node; slicer-core alone does not
            parent_item = sh.GetItemByDataNode(parent) or sh.CreateItem(sh.GetSceneItemID(), parent)
            item = sh.GetItemByDataNode(node)
            if item:
                sh.SetItemParent(item, parent_item)
            else:
                sh.CreateItem(parent_item, node)
    except BaseException:
        remove_nodes(made.values())
        raise
    return made


def show_map(scene, node, name: str | None, opacity: float = MAP_OPACITY) -> int:
    """Overlay `node`'s map `name` (None: no overlay) on every slice view showing `node`;
    returns how many views changed."""
    overlay = None
    if name is not None:
        overlay = scene.GetNodeByID(node.GetAttribute(f"MRSuperRes.map.{name}") or "")
        if overlay is None:
            raise MRSuperResError(f"{node.GetName()} has no {name} map (enhance or compare with maps=True makes them)")
    changed = 0
    for composite in require_slicer().util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        if composite.GetBackgroundVolumeID() == node.GetID():
            composite.SetForegroundVolumeID(overlay.GetID() if overlay is not None else None)
            composite.SetForegroundOpacity(opacity if overlay is not None else 0.0)
            changed += 1
    return changed


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
    maps: dict = None             # {"error", "consistency", "uncertainty": node} when compared with maps
    scale: int = None             # the factor simulated (thick: slices this many voxels apart)

    def nodes(self) -> list:
        return [self.lowResolution, self.superResolved, self.bicubic, self.bilinear, self.metricsTable,
                self.perSliceTable, self.plotChart, *(self.maps or {}).values()]


def comparison_nodes(scene, groundTruthNode, comp, model_name: str, scale: int, degradation: str) -> CompareResult:
    """The comparison's volumes, metrics tables and per-slice plot in a subject-hierarchy folder;
    on any failure the nodes made so far are removed."""
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
        table = new_node(scene, "vtkMRMLTableNode", f"{base} metrics")
        made.append(table)
        columns = {"Method": list(metrics)}
        for k in METRIC_COLUMNS:
            columns[f"{k.upper()} mean"] = [metrics[m][k][0] for m in metrics]
            columns[f"{k.upper()} std"] = [metrics[m][k][1] for m in metrics]
        fill_table(table, columns)
        per_slice = new_node(scene, "vtkMRMLTableNode", f"{base} per-slice SSIM and PSNR")
        made.append(per_slice)
        slices = sorted({r["slice"] for r in comp.per_slice})
        cols = {"slice": slices}
        for m in methods:
            by = {r["slice"]: r for r in comp.per_slice if r["method"] == m}
            cols[f"SSIM {m}"] = [by[s]["ssim"] for s in slices]
            cols[f"PSNR {m}"] = [by[s]["psnr"] for s in slices]
        fill_table(per_slice, cols)
        chart = new_node(scene, "vtkMRMLPlotChartNode", f"{base} per-slice SSIM")
        made.append(chart)
        chart.SetTitle("SSIM per slice")
        chart.SetXAxisTitle("slice")
        chart.SetYAxisTitle("SSIM")
        for m, label in methods.items():
            series = new_node(scene, "vtkMRMLPlotSeriesNode", f"SSIM {label}")
            made.append(series)
            series.SetAndObserveTableNodeID(per_slice.GetID())
            series.SetXColumnName("slice")
            series.SetYColumnName(f"SSIM {m}")
            series.SetPlotType(series.PlotTypeScatter)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        folder_id = folder(scene, f"{base} comparison x{scale} {degradation}", made)
        maps = add_map_nodes(scene, vols["model"], comp.maps)
        made += maps.values()
    except BaseException:
        remove_nodes(made)
        raise
    for node in made[:4]:
        node.SetAttribute("MRSuperRes.comparison", groundTruthNode.GetID())
    return CompareResult(groundTruthNode, lr, vols["model"], vols["bicubic"], vols["bilinear"], table,
                         per_slice, chart, folder_id, metrics, comp.axis, model_name, maps, scale)
