"""MRSuperResLogic on real MRML (slicer-core, no Qt): enhance, compare, the linked layout,
background training, bad input; and the extension's files (UI names, CMake lists)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, nearest_model, tiny_model, write_nifti

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRSuperResLib.scans import geometry  # noqa: E402
from MRSuperResLib.errors import MRSuperResError  # noqa: E402
from MRSuperResLib.in_slicer.layout import COMPARE_VIEWS  # noqa: E402
from MRSuperResLib.in_slicer.logic import MRSuperResLogic  # noqa: E402
from MRSuperResLib.in_slicer.scene import headless_scene, load_volume  # noqa: E402

REAL_LR = ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"


@pytest.fixture
def scene():
    return headless_scene()


@pytest.fixture
def models(save_tiny):
    return {"near": save_tiny(nearest_model(4), "near"), "tiny": save_tiny(tiny_model(4), "tiny4"),
            "x2": save_tiny(tiny_model(2), "tiny2")}


def ijk_to_ras(node) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def small_gt(scene, tmp_path, slices=slice(22, 26)):
    """Four axial slices of the real Colin27 sample, loaded by Slicer's reader."""
    img = nib.load(str(SAMPLE))
    data = np.asarray(img.dataobj)[:, :, slices]
    path = write_nifti(tmp_path / "gt.nii.gz", data, img.affine)
    return load_volume(path, "gt")


def test_logic_imports_in_a_plain_python_with_slicer_core():
    code = ("import sys; sys.path.insert(0, 'MRSuperRes'); import slicer; "
            "from MRSuperResLib.in_slicer.scene import headless_scene; headless_scene(); "
            "import MRSuperRes; logic = MRSuperRes.MRSuperResLogic(); "
            "print(type(logic).__name__, slicer.mrmlScene is not None, MRSuperRes.HAVE_APP)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["MRSuperResLogic", "True", "False"]


@pytest.mark.slow
def test_enhance_a_real_volume_lands_on_the_core_grid(scene, models):
    node = load_volume(REAL_LR, "aniso")
    before = ijk_to_ras(node)
    assert np.allclose(before, nib.load(str(REAL_LR)).affine, atol=1e-4)     # Slicer reads what nibabel reads
    sr = MRSuperResLogic().enhance(node, model=str(models["near"]), axis=2, precision="fp32")
    assert np.allclose(ijk_to_ras(sr), geometry.resample_affine(before, 2, 4), atol=1e-6)
    arr = slicer.util.arrayFromVolume(sr)                  # (K, J, I)
    lr = slicer.util.arrayFromVolume(node)
    assert arr.shape == (lr.shape[0], lr.shape[1] * 4, lr.shape[2] * 4)
    assert np.allclose(arr[:, ::4, ::4], lr, atol=1e-3 * np.abs(lr).max())   # nearest model: same values, units
    assert sr.GetName().startswith("aniso near x4") and sr.GetDisplayNode() is not None
    auto = MRSuperResLogic().enhance(node, model=str(models["near"]), axis="auto", precision="fp32")
    assert np.allclose(ijk_to_ras(auto), ijk_to_ras(sr))   # auto picks the 5 mm axis, as the core does
    # the panel's self-ensemble: same grid; the nearest model is symmetric, so the same values too
    ens = MRSuperResLogic().enhance(node, model=str(models["near"]), axis=2, precision="fp32", selfEnsemble=True)
    assert np.allclose(ijk_to_ras(ens), ijk_to_ras(sr), atol=1e-6)
    assert np.allclose(slicer.util.arrayFromVolume(ens), arr, atol=1e-4 * np.abs(lr).max())
    assert json.loads(ens.GetAttribute("MRSuperRes.facts"))["self_ensemble"] is True
    # auto by default: anchoring, as the model's card names no step (its output already has its
    # input's brightness)
    assert json.loads(sr.GetAttribute("MRSuperRes.facts"))["consistency"] == "anchor"
    raw = MRSuperResLogic().enhance(node, model=str(models["near"]), axis=2, precision="fp32", consistency="none")
    assert json.loads(raw.GetAttribute("MRSuperRes.facts"))["consistency"] == "none"
    assert np.allclose(slicer.util.arrayFromVolume(raw), arr, atol=1e-4 * np.abs(lr).max())
    assert MRSuperResLogic().getParameterNode().GetParameter("consistency") == "auto"


@pytest.mark.slow
def test_compare_makes_the_volumes_table_layout_and_links_the_views(scene, tmp_path, models):
    gt = small_gt(scene, tmp_path)
    logic = MRSuperResLogic()
    result = logic.compare(gt, model=str(models["tiny"]), scale=4, degradation="bilinear", axis=2)
    gt_affine = ijk_to_ras(gt)
    assert np.allclose(ijk_to_ras(result.lowResolution), geometry.resample_affine(gt_affine, 2, 0.25), atol=1e-6)
    for node in (result.superResolved, result.bicubic, result.bilinear):
        assert np.allclose(ijk_to_ras(node), gt_affine, atol=1e-6)
        assert slicer.util.arrayFromVolume(node).shape == slicer.util.arrayFromVolume(gt).shape
    table = result.metricsTable
    assert table.GetNumberOfRows() == 3
    methods = [table.GetTable().GetValueByName(r, "Method").ToString() for r in range(3)]
    assert methods == ["MRSuperRes (tiny4)", "Bicubic", "Bilinear"]
    for col in ("SSIM mean", "PSNR mean", "NRMSE mean", "RMSE mean", "MAE mean", "VIF mean", "VIF std"):
        assert np.isfinite(table.GetTable().GetValueByName(1, col).ToDouble())
    # the same numbers as the command line's protocol on the same data
    from MRSuperResLib.evaluation.protocol import evaluate
    ref = evaluate([str(tmp_path / "gt.nii.gz")], None, scale=4, degradation="bilinear", axis=2)
    for metric in ("ssim", "psnr", "vif"):
        assert result.metrics["Bicubic"][metric][0] == pytest.approx(ref["methods"]["bicubic"][metric]["mean"], abs=1e-6)
    assert result.perSliceTable.GetNumberOfRows() == 4 and result.plotChart.GetNumberOfPlotSeriesNodes() == 3
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    children = [sh.GetItemDataNode(sh.GetItemByPositionUnderParent(result.folderItemID, i))
                for i in range(sh.GetNumberOfItemChildren(result.folderItemID))]
    assert {n.GetID() for n in children} >= {result.lowResolution.GetID(), result.superResolved.GetID(),
                                              result.bicubic.GetID(), result.bilinear.GetID()}

    views = logic.showComparison(result)
    assert len(views) == len(COMPARE_VIEWS) >= 4
    composites = {c.GetLayoutName(): c for c in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")}
    shown = [composites[v.GetLayoutName()].GetBackgroundVolumeID() for v in views]
    assert len(set(shown)) == len(views) and gt.GetID() == shown[0]
    assert all(composites[v.GetLayoutName()].GetLinkedControl() for v in views)
    levels = {(getattr(result, key).GetDisplayNode().GetWindow(), getattr(result, key).GetDisplayNode().GetLevel())
              for key, *_ in COMPARE_VIEWS}
    assert len(levels) == 1                               # one window/level in every view
    images = logic.viewImages(result)                     # what the views show: real images
    assert len(images) == len(views) and all(im.std() > 0 for t, im in images.items() if t != "Super-resolved")
    gt_logic = logic._slice_logic(views[0].GetLayoutName())
    target = gt_logic.GetSliceOffset() + 1.0
    gt_logic.StartSliceOffsetInteraction()
    gt_logic.SetSliceOffset(target)
    gt_logic.EndSliceOffsetInteraction()
    assert [logic._slice_logic(v.GetLayoutName()).GetSliceOffset() for v in views] == pytest.approx([target] * len(views))


@pytest.mark.slow
def test_bad_input_leaves_the_scene_as_it_was(scene, tmp_path, models):
    logic = MRSuperResLogic()
    gt = small_gt(scene, tmp_path)
    flat = slicer.util.addVolumeFromArray(np.random.rand(1, 40, 40).astype(np.float32), name="flat")
    rgb = slicer.util.addVolumeFromArray(np.random.rand(4, 40, 40, 3).astype(np.float32), name="rgb",
                                         nodeClassName="vtkMRMLVectorVolumeNode")
    four_d = slicer.util.addVolumeFromArray(np.random.rand(4, 40, 40, 7).astype(np.float32), name="dwi",
                                            nodeClassName="vtkMRMLVectorVolumeNode")
    nan = slicer.util.addVolumeFromArray(np.full((4, 40, 40), np.nan, np.float32), name="nan")
    tiny_gt = slicer.util.addVolumeFromArray(np.random.rand(4, 20, 20).astype(np.float32), name="small")
    count = node_count(scene)
    cases = [
        (lambda: logic.enhance(None, model=str(models["tiny"])), "no input volume chosen"),
        (lambda: logic.enhance(flat, model=str(models["tiny"])), "2D image"),
        (lambda: logic.enhance(rgb, model=str(models["tiny"])), "RGB, vector or 4D"),
        (lambda: logic.enhance(four_d, model=str(models["tiny"])), "7 values per voxel"),
        (lambda: logic.enhance(nan, model=str(models["tiny"])), "NaN"),
        (lambda: logic.enhance(gt, model=str(tmp_path / "missing.safetensors")), "not found"),
        (lambda: logic.compare(gt, model=str(models["x2"]), scale=4, axis=2), "x2, but x4"),
        (lambda: logic.compare(tiny_gt, model=str(models["tiny"]), scale=4, axis=2), "too small for x4"),
        (lambda: logic.compare(None, model=str(models["tiny"])), "no ground-truth volume chosen"),
        (lambda: logic.train([], tmp_path / "run"), "no training volume chosen"),
    ]
    for call, message in cases:
        with pytest.raises(MRSuperResError, match=re.escape(message)):
            call()
        assert node_count(scene) == count, message
    # a cancelled background task adds nothing either
    task = logic.enhance(gt, model=str(models["tiny"]), axis=2, waitForCompletion=False)
    task.cancel()
    while task.poll() == "running":
        time.sleep(0.1)
    assert task.status in ("cancelled", "done")
    if task.status == "cancelled":
        assert node_count(scene) == count


@pytest.mark.slow
def test_compare_follows_the_models_scale(scene, tmp_path, models):
    """Without a scale, the comparison takes the model's own: an x2 model is compared at x2."""
    gt = small_gt(scene, tmp_path)
    result = MRSuperResLogic().compare(gt, model=str(models["x2"]), axis=2, precision="fp32")
    assert result.scale == 2
    lr, sr = (slicer.util.arrayFromVolume(n).shape for n in (result.lowResolution, result.superResolved))
    assert lr[0] == sr[0] and (lr[1] * 2, lr[2] * 2) == sr[1:]


@pytest.mark.slow
def test_background_enhance_reports_progress_then_adds_the_node(scene, tmp_path, models):
    gt = small_gt(scene, tmp_path)
    task = MRSuperResLogic().enhance(gt, model=str(models["tiny"]), axis=2, waitForCompletion=False)
    node = task.wait()
    assert task.status == "done" and task.done == task.total == 4
    assert slicer.mrmlScene.IsNodePresent(node)


@pytest.mark.slow
def test_training_job_runs_as_a_child_process_and_registers_its_model(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    gt = small_gt(scene, tmp_path, slice(10, 40))
    logic = MRSuperResLogic()
    job = logic.train([gt], tmp_path / "mytraining", waitForCompletion=True, stage="psnr", iters=4, batch=2,
                      patch=32, blocks=1, features=8, growth=4, checkpoint_every=2, log_every=1, device="cpu",
                      precision="fp32")
    assert job.status == "done", job.message
    sent = json.loads((tmp_path / "mytraining" / "run" / "train_config.json").read_text())
    assert sent["iters"] == 4 and sent["blocks"] == 1 and sent["data"][0].endswith("gt.nii.gz")   # one config file
    assert job.process.args[-2:] == ["--config", str(tmp_path / "mytraining" / "run" / "train_config.json")]
    assert job.lossTable.GetNumberOfRows() == 4
    l1 = [job.lossTable.GetTable().GetValueByName(r, "l1").ToDouble() for r in range(4)]
    assert all(np.isfinite(l1)) and job.validationTable.GetNumberOfRows() >= 1
    assert job.registeredModel == "mytraining"
    from MRSuperResLib.models.catalog import default_model
    listed = [m["name"] for m in logic.listModels()]
    assert "mytraining" in listed and listed[0] == default_model()        # the panel starts on the default
    columns = {job.validationTable.GetTable().GetColumnName(i) for i in range(job.validationTable.GetNumberOfColumns())}
    assert {"model_psnr", "generator_psnr", "bicubic_psnr", "model_vif", "bicubic_vif"} <= columns
    sr = logic.enhance(gt, model="mytraining", axis=2)
    assert slicer.util.arrayFromVolume(sr).shape[1] == 4 * slicer.util.arrayFromVolume(gt).shape[1]


@pytest.mark.slow
def test_a_crashing_training_process_gives_a_message_and_no_nodes(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    gt = small_gt(scene, tmp_path)
    count = node_count(scene)
    with pytest.raises(MRSuperResError, match="training failed"):
        MRSuperResLogic().train([gt], tmp_path / "bad", waitForCompletion=True, iters=2, patch=4096)
    assert node_count(scene) == count


@pytest.mark.slow
def test_batch_script_runs_in_plain_python_with_slicer_core(tmp_path, models):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "slicer_enhance.py"), "--input", str(REAL_LR),
                          str(tmp_path / "missing.nii.gz"), "--output", str(tmp_path / "out"),
                          "--model", str(models["near"]), "--axis", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "missing.nii.gz: file not found" in out.stderr
    result = nib.load(str(tmp_path / "out" / "aniso_vox_sr.nii.gz"))
    assert result.shape == (232, 232, 24)
    assert np.allclose(result.affine, geometry.resample_affine(nib.load(str(REAL_LR)).affine, 2, 4), atol=1e-4)


def test_every_widget_the_code_uses_is_in_the_ui_file():
    ui = (ROOT / "MRSuperRes" / "Resources" / "UI" / "MRSuperRes.ui").read_text()
    code = "".join(p.read_text() for p in [ROOT / "MRSuperRes" / "MRSuperRes.py",
                                            *(ROOT / "MRSuperRes" / "MRSuperResPanel").glob("*.py")])
    names = set(re.findall(r'name="(\w+)"', ui))
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    used |= set(re.findall(r'"(\w+(?:ComboBox|SpinBox|Button|Selector|Label|Bar))"', code))
    assert len(used) > 30
    assert used <= names, f"missing from the .ui: {sorted(used - names)}"


def test_cmake_lists_every_shipped_file():
    tracked = subprocess.run(["git", "ls-files", "MRSuperRes", "MRSuperResLib", "Resources"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    shipped = [f for f in tracked if not f.startswith("Resources/Screenshots/") and not f.endswith(".safetensors")]
    if not shipped:
        pytest.skip("not a git checkout")
    top = (ROOT / "CMakeLists.txt").read_text()
    module = (ROOT / "MRSuperRes" / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "MRSuperRes")
    listed = set(re.findall(r"^\s+(\S+\.\w+)\s*$", top, re.M))
    listed |= {"MRSuperRes/" + f for f in re.findall(r"^\s+(\S+\.\w+)\s*$", module, re.M)}
    missing = [f for f in shipped if f not in listed and not f.endswith("CMakeLists.txt")]
    assert not missing, f"shipped files missing from the CMake lists: {missing}"
    assert 'EXTENSION_DEPENDS "PyTorch"' in top and "WITH_GENERIC_TESTS" in module
    entry = json.loads((ROOT / "MRSuperRes.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"] and entry["scm_url"].endswith(".git")


def install_list() -> list[str]:
    """Every file the extension's CMake installs: the module's scripts and resources, the library's."""
    top = (ROOT / "CMakeLists.txt").read_text()
    module = (ROOT / "MRSuperRes" / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "MRSuperRes")
    listed = re.findall(r"^\s+(\S+\.\w+)\s*$", top, re.M)
    return listed + ["MRSuperRes/" + f for f in re.findall(r"^\s+(\S+\.\w+)\s*$", module, re.M)]


def test_the_extension_package_carries_the_registry_and_no_weights_under_5_mb():
    files = install_list()
    assert "Resources/Models/registry.json" in files
    weights = [f for f in files if f.lower().endswith((".safetensors", ".pth", ".pt", ".bin", ".onnx"))]
    assert weights == []
    size = sum((ROOT / f).stat().st_size for f in files)
    assert size < 5 * 2**20, f"{size / 2**20:.1f} MB"


def test_the_extension_catalog_shows_the_projects_name_and_pictures_of_a_shipped_model():
    """What the Extensions Index shows: the contributors (the same in the module), and screenshots
    that are files of this repository; the comparison layout's names the shipped model that made
    it in its PNG text (not the unadapted network, which scores below bicubic on MRI)."""
    from PIL import Image

    from MRSuperResLib.options import SHIPPED_MODELS_DIR

    top = (ROOT / "CMakeLists.txt").read_text()
    contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', top).group(1)
    assert f'parent.contributors = ["{contributors}"]' in (ROOT / "MRSuperRes" / "MRSuperRes.py").read_text()
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', top).group(1).split()
    pictures = [ROOT / url.split("/main/", 1)[1] for url in urls]
    assert pictures and all(p.is_file() and p.suffix == ".png" for p in pictures), pictures
    shipped = {p.stem for p in SHIPPED_MODELS_DIR.glob("*.safetensors")}
    layout = Image.open(ROOT / "Resources" / "Screenshots" / "compare_layout.png")
    assert layout.text.get("Description", "").removeprefix("model=") in shipped, layout.text


@pytest.mark.slow
def test_the_api_on_a_scene_set_up_by_the_caller(tmp_path, models):
    """As a user of slicer-core would: own scene and application logic, vtkSlicerVolumesLogic."""
    import vtk
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    volumes.SetMRMLApplicationLogic(app)
    img = nib.load(str(SAMPLE))
    path = write_nifti(tmp_path / "gt.nii.gz", np.asarray(img.dataobj)[:, :, 20:23], img.affine)
    node = volumes.AddArchetypeVolume(str(path), "gt")
    logic = MRSuperResLogic()
    sr = logic.enhance(node, model=str(models["tiny"]), axis=2)
    assert np.allclose(ijk_to_ras(sr), geometry.resample_affine(ijk_to_ras(node), 2, 4), atol=1e-6)
    result = logic.compare(node, model=str(models["tiny"]), scale=4, degradation="bilinear", axis=2)
    assert result.metricsTable.GetNumberOfRows() == 3
    views = logic.showComparison(result)
    composites = {c.GetLayoutName(): c for c in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")}
    assert len({composites[v.GetLayoutName()].GetBackgroundVolumeID() for v in views}) >= 4
    assert all(composites[v.GetLayoutName()].GetLinkedControl() for v in views)


def test_the_parameter_node_holds_the_panel_state_and_is_saved_with_the_scene(scene, tmp_path):
    logic = MRSuperResLogic()
    node = logic.getParameterNode()
    assert logic.getParameterNode() is node and node.GetParameter("scale") == "4"    # singleton, defaults
    gt = small_gt(scene, tmp_path)
    node.SetParameter("axis", "k (axial)")
    node.SetParameter("train_iters", "77")                # a panel setting that differs from its default
    node.SetParameter("train_stage", "gan")
    node.SetNodeReferenceID("GroundTruthVolume", gt.GetID())
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    again = headless_scene()
    again.SetURL(str(tmp_path / "scene.mrml"))
    assert again.Import()
    restored = MRSuperResLogic().getParameterNode()
    assert restored.GetParameter("axis") == "k (axial)"
    assert restored.GetParameter("train_iters") == "77" and restored.GetParameter("train_stage") == "gan"
    assert MRSuperResLogic().trainingOptions()["iters"] == 77          # what Start would train with
    assert restored.GetNodeReference("GroundTruthVolume").GetName() == "gt"


@pytest.mark.slow
def test_without_views_the_layout_refuses_and_the_picture_still_works(scene, tmp_path, models, monkeypatch):
    """Slicer --no-main-window: an application, but no layout manager."""
    import types
    gt = small_gt(scene, tmp_path)
    logic = MRSuperResLogic()
    result = logic.compare(gt, model=str(models["tiny"]), scale=4, axis=2)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(layoutManager=lambda: None), raising=False)
    with pytest.raises(MRSuperResError, match="without a main window"):
        logic.showComparison(result)
    picture = logic.saveComparisonPicture(result, tmp_path / "compare.png")
    assert picture.exists() and picture.stat().st_size > 10000


def thick_node(tmp_path, name="thick"):
    """A real 1 mm slab made into 4 mm axial slices, loaded by Slicer's reader."""
    from MRSuperResLib.scans.slice_profile import simulate_thick

    img = nib.load(str(SAMPLE))
    affine = geometry.resample_affine(img.affine, 2, 0.25, along=(2,))
    thick = simulate_thick(np.asarray(img.dataobj, np.float32)[:, :, :48], 2, 4.0)
    return load_volume(write_nifti(tmp_path / f"{name}.nii.gz", thick, affine), name), img.affine


@pytest.mark.slow
def test_thick_slices_are_planned_enhanced_and_compared_through_the_plane(scene, tmp_path, save_tiny):
    from MRSuperResLib.models.rrdbnet import RRDBNet

    x1 = save_tiny(RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4, input_skip=True), "x1")
    node, fine_affine = thick_node(tmp_path)
    logic = MRSuperResLogic()
    plan = logic.plan(node)
    assert plan.direction == "through-plane" and plan.factor == 4 and plan.output_shape[2] == 48
    assert any("through-plane" in w for w in logic.plan(node, direction="in-plane").warnings)
    sr = logic.enhance(node, model=str(x1), precision="fp32", maps=True)
    assert np.allclose(ijk_to_ras(sr)[:3], fine_affine[:3], atol=1e-4)
    assert slicer.util.arrayFromVolume(sr).shape[0] == 48 and "through-plane x4" in sr.GetName()
    assert json.loads(sr.GetAttribute("MRSuperRes.facts"))["direction"] == "through-plane"
    for name in ("consistency", "uncertainty"):                # the maps, on the fine grid, under the result
        map_node = scene.GetNodeByID(sr.GetAttribute(f"MRSuperRes.map.{name}"))
        assert np.allclose(ijk_to_ras(map_node), ijk_to_ras(sr), atol=1e-9)
        assert slicer.util.arrayFromVolume(map_node).shape == slicer.util.arrayFromVolume(sr).shape
    gt = small_gt(scene, tmp_path, slice(0, 40))
    count = node_count(scene)
    with pytest.raises(MRSuperResError, match="not thicker than the plane"):
        logic.enhance(gt, model=str(x1), direction="through-plane")
    assert node_count(scene) == count
    result = logic.compare(gt, model=str(x1), scale=5, degradation="thick", axis=2, precision="fp32", maps=True)
    assert slicer.util.arrayFromVolume(result.lowResolution).shape[0] == 8
    assert set(result.maps) == {"error", "consistency", "uncertainty"}
    for out in (result.superResolved, result.bicubic, result.bilinear, *result.maps.values()):
        assert np.allclose(ijk_to_ras(out), ijk_to_ras(gt), atol=1e-6)
        assert slicer.util.arrayFromVolume(out).shape == slicer.util.arrayFromVolume(gt).shape
    assert result.metricsTable.GetNumberOfRows() == 3


@pytest.mark.slow
def test_fine_tuning_on_a_thick_volume_runs_self_supervised_and_registers(scene, tmp_path, monkeypatch, save_tiny):
    from MRSuperResLib.models.rrdbnet import RRDBNet

    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    start = save_tiny(RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4, input_skip=True), "x1")
    node, _ = thick_node(tmp_path, "patient")
    logic = MRSuperResLogic()
    with pytest.raises(MRSuperResError, match="exactly one"):
        logic.train([node, node], tmp_path / "two", selfSupervised=True)
    assert not (tmp_path / "two").exists()
    job = logic.train([node], tmp_path / "ft", waitForCompletion=True, selfSupervised=True, init=str(start),
                      iters=2, batch=2, patch=32, device="cpu", precision="fp32", axis="all")
    assert job.status == "done", job.message
    sent = json.loads((tmp_path / "ft" / "run" / "train_config.json").read_text())
    assert sent["scale"] == 1 and sent["degrade"] == "thick" and sent["slice_factors"] == [4.0, 4.0]
    assert sent["axis"] == "2" and sent["iters"] == 2 and sent["init"] == str(start)
    assert job.registeredModel == "ft"


@pytest.mark.slow
def test_maps_are_volumes_under_the_result_and_overlay_in_the_linked_views(scene, tmp_path, models):
    gt = small_gt(scene, tmp_path)
    logic = MRSuperResLogic()
    lr = logic.compare(gt, model=str(models["near"]), scale=4, degradation="bilinear", axis=2).lowResolution
    before = node_count(scene)
    sr = logic.enhance(lr, model=str(models["tiny"]), axis=2, precision="fp32", maps=True, consistency="exact")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    under = [sh.GetItemDataNode(sh.GetItemByPositionUnderParent(sh.GetItemByDataNode(sr), i))
             for i in range(sh.GetNumberOfItemChildren(sh.GetItemByDataNode(sr)))]
    assert {n.GetName() for n in under} == {f"{sr.GetName()} consistency map", f"{sr.GetName()} uncertainty map"}
    for node in under:                                       # on the result's exact grid
        assert np.allclose(ijk_to_ras(node), ijk_to_ras(sr), atol=1e-9)
        assert slicer.util.arrayFromVolume(node).shape == slicer.util.arrayFromVolume(sr).shape
    assert node_count(scene) - before >= 3
    facts = json.loads(sr.GetAttribute("MRSuperRes.facts"))
    assert facts["consistency"] == "exact" and facts["data_consistency"]["output"]["rms"] < 1e-5
    # the overlay toggles on the views that show the result, and off again
    logic.showComparison(logic.compare(gt, model=str(models["near"]), scale=4, axis=2))   # slice views, no Qt
    composite = [c for c in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
                 if c.GetLayoutName() == "MRSuperResGT"][0]
    composite.SetBackgroundVolumeID(sr.GetID())
    assert logic.showMap(sr, "consistency") >= 1
    assert composite.GetForegroundVolumeID() == sr.GetAttribute("MRSuperRes.map.consistency")
    assert composite.GetForegroundOpacity() > 0
    logic.showMap(sr, None)
    assert composite.GetForegroundVolumeID() is None
    plain = logic.enhance(lr, model=str(models["tiny"]), axis=2, precision="fp32")
    with pytest.raises(MRSuperResError, match="no uncertainty map"):
        logic.showMap(plain, "uncertainty")
    # compare with maps: |SR - GT| and both maps under the SR volume, overlaid in the SR view
    result = logic.compare(gt, model=str(models["tiny"]), scale=4, degradation="bilinear", axis=2, maps=True)
    assert set(result.maps) == {"error", "consistency", "uncertainty"}
    for node in result.maps.values():
        assert np.allclose(ijk_to_ras(node), ijk_to_ras(result.superResolved), atol=1e-9)
    error = slicer.util.arrayFromVolume(result.maps["error"])
    assert np.allclose(error, np.abs(slicer.util.arrayFromVolume(result.superResolved)
                                     - slicer.util.arrayFromVolume(gt)[:, :error.shape[1], :error.shape[2]]),
                       atol=1e-3 * np.ptp(slicer.util.arrayFromVolume(gt)))
    views = logic.showComparison(result)
    assert logic.showMap(result, "error") == 1                # the SR view, linked with the others
    sr_view = [c for c in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")
               if c.GetLayoutName() == views[2].GetLayoutName()][0]
    assert sr_view.GetForegroundVolumeID() == result.maps["error"].GetID() and sr_view.GetLinkedControl()


def test_a_bright_voxel_scan_is_stretched_and_the_result_says_so(scene, tmp_path, models):
    """Real MRML: the Colin27 sample with one voxel 8 times its maximum (a strongly enhancing vessel)."""
    img = nib.load(str(SAMPLE))
    data = np.asarray(img.dataobj, dtype=np.float32)[:, :, 22:26].copy()
    plain = MRSuperResLogic().enhance(load_volume(write_nifti(tmp_path / "gt.nii.gz", data, img.affine), "gt"),
                                      model=str(models["near"]), axis=2, precision="fp32")
    assert MRSuperResLogic.resultNote(plain) == ""
    data[70, 90, 1] = 8 * data.max()
    node = load_volume(write_nifti(tmp_path / "hot.nii.gz", data, img.affine), "hot")
    sr = MRSuperResLogic().enhance(node, model=str(models["near"]), axis=2, precision="fp32", consistency="none")
    facts = json.loads(sr.GetAttribute("MRSuperRes.facts"))
    assert 0.05 <= facts["network_ceiling"] < 0.5
    note = MRSuperResLogic.resultNote(sr)
    assert "brighter voxels were interpolated" in note and f"{int(100 * facts['network_ceiling'])}%" in note
    out = slicer.util.arrayFromVolume(sr)                  # (K, J, I): the tissue as nearest gives it
    lr = slicer.util.arrayFromVolume(node)
    np.testing.assert_allclose(out[0, ::4, ::4], lr[0], rtol=1e-4, atol=1e-3)
