"""The maintainers' release: assets with their SHA256SUMS, a registry that keeps a version while
the weights stay and raises it when they change, and the Extensions Index tree: no weights, under
50 MB, and a full clone of it under the index's 100 MB."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import ROOT, tiny_model

from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.registry import check_registry
from MRSuperResLib.models.weights import save_model
from MRSuperResLib.shipping import release


def test_assets_and_versions(tmp_path):
    models = tmp_path / "Models"
    models.mkdir()
    save_model(tiny_model(4), models / "mri-x4-test.safetensors", {"name": "mri-x4-test"})
    first = release.build_registry("r1", models, previous=None)
    (entry,) = first["models"]
    assert entry["version"] == "1" and entry["urls"] == [f"{release.RELEASES_URL}/r1/mri-x4-test.safetensors"]
    check_registry(first)
    previous = tmp_path / "registry.json"
    release.write_registry(first, previous)
    assert release.build_registry("r2", models, previous)["models"][0] == entry          # same weights: kept
    save_model(tiny_model(4, seed=1), models / "mri-x4-test.safetensors", {"name": "mri-x4-test"})
    changed = release.build_registry("r2", models, previous)["models"][0]
    assert changed["version"] == "2" and changed["urls"][0].endswith("/r2/mri-x4-test.safetensors")
    out = release.build_assets(release.build_registry("r2", models, previous), tmp_path / "assets", models)
    sums = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sums == {f: sha256_of(out / f) for f in ("mri-x4-test.safetensors", "mri-x4-test.json")}


@pytest.mark.slow
def test_the_index_tree_has_no_weights_and_passes_the_index_rule(tmp_path):
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    figures = release.export_index_tree(tmp_path / "tree")
    assert figures["weights_left_out"] and figures["passes_index_rule"] and figures["meets_goal"], figures
    tracked = subprocess.run(["git", "ls-files"], cwd=tmp_path / "tree", capture_output=True, text=True).stdout.split()
    assert tracked and not any(release.is_weights(p) for p in tracked)
    assert "Resources/Models/registry.json" in tracked
    print(json.dumps({k: v for k, v in figures.items() if k != "weights_left_out"}))
