"""The GPU run rehearsed on the CPU, so that a lent GPU's few minutes are not spent finding its bugs:
the same command (scripts/maintainers/gpu_run.sh) with a tiny network, a tiny budget and a temporary
results folder returns the same files, the weights' parts join to the sha256 they were split from,
and the joined model enhances a volume; the pack restores its volumes bit for bit and the size check
stops a travelling tree over the device machine's 64 MiB."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE, tiny_model, write_nifti

from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.weights import save_model
from MRSuperResLib.shipping import gpu_pack, gpu_run
from MRSuperResLib.shipping.split_files import join_file, split_file

SHIPPED_X4 = ROOT / "Resources" / "Models" / "mri-x4-fidelity.safetensors"


@pytest.mark.slow
def test_the_gpu_run_rehearsed_on_the_cpu_returns_its_files_and_a_model_that_enhances(tmp_path):
    from MRSuperResLib import enhance_volume, load_generator, read_volume
    from MRSuperResLib.models.checkpoints import checkpoint_generator

    init = tmp_path / "tiny.safetensors"
    save_model(tiny_model(4).half(), init, {"training_data": "random init (test)", "iterations": 0})
    out, work = tmp_path / "out", tmp_path / "work"
    half = init.stat().st_size // 2 + 64                # the tiny weights come back in two parts, as the real ones do
    cmd = ["bash", str(ROOT / "scripts" / "maintainers" / "gpu_run.sh"), "--out", str(out), "--work", str(work),
           "--pack", str(tmp_path / "no-pack"), "--device", "cpu", "--budget", "50", "--check-seconds", "18",
           "--rank-seconds", "6", "--finish-seconds", "6", "--stop-grace", "20", "--init", str(init),
           "--train", str(SAMPLE), "--val", str(ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"),
           "--batch", "2", "--patch", "32", "--checkpoint-every", "2", "--keep", "3", "--rank-every", "4",
           "--rank-last", "2", "--part-bytes", str(half),
           "--check-args", "--slices 2 --big-slices 1 --big-size 32 --train-iters 1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHON": sys.executable})
    # 2: weights returned, the checks cut short by their deadline (as a GPU run's may be)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]

    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(files) == {*gpu_run.FIXED, gpu_run.LOG, "model.safetensors.part1", "model.safetensors.part2"}
    assert len(files) <= gpu_run.MAX_FILES and max(files.values()) <= gpu_run.MAX_FILE
    checks = json.loads((out / gpu_run.CHECKS).read_text())
    assert checks["finished"] is False and checks["steps"]["peak"]["ok"]
    assert "checks ended at its deadline" in (out / gpu_run.LOG).read_text()
    events = [json.loads(line) for line in (out / gpu_run.EVENTS).read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "stopped"
    assert events[0]["config"]["batch"] == 2 and events[0]["config"]["precision"] == "auto"

    manifest = json.loads((out / "model.safetensors.manifest.json").read_text())
    table = (out / gpu_run.TABLE).read_text()
    assert f"Best candidate: {manifest['candidate']}" in table
    assert table.count("| mri-x4-fidelity-gpu:") >= 2 and "| tiny.safetensors |" in table

    run = tmp_path / "run"
    assert gpu_run.main(["join", str(out), "--to", str(run)]) == 0
    joined = run / "model.safetensors"
    assert sha256_of(joined) == manifest["sha256"] == sha256_of(work / "export" / "model.safetensors")
    assert (run / "events.jsonl").read_bytes() == (out / gpu_run.EVENTS).read_bytes()

    model, card = load_generator(joined)                 # checks the file against its card's sha256
    assert card["training_data"] and card["sha256"] == manifest["sha256"]
    run_dir, it, weights = manifest["candidate"].rsplit(":", 2)
    chosen = checkpoint_generator(run_dir, int(it), weights)[0].half().float()
    for a, b in zip(model.state_dict().values(), chosen.state_dict().values()):
        assert torch.equal(a.float(), b)
    volume = read_volume(str(SAMPLE))
    volume.data = volume.data[40:72, 40:80, 20:22]
    hr, _ = enhance_volume(volume, model, axis=2, device="cpu")
    assert hr.data.shape == (128, 160, 2) and np.isfinite(hr.data).all() and hr.data.std() > 0


@pytest.mark.slow
def test_a_run_whose_training_fails_says_so_and_returns_no_weights(tmp_path):
    """Checks ended at once by their deadline and a trainer that refuses its options: the command
    still ends, within its budget, with the table and the log saying why, and exit status 1."""
    init = tmp_path / "tiny.safetensors"
    save_model(tiny_model(4), init, {"training_data": "random init (test)", "iterations": 0})
    out = tmp_path / "out"
    code = gpu_run.main(["--out", str(out), "--work", str(tmp_path / "work"), "--pack", str(tmp_path / "none"),
                         "--device", "cpu", "--budget", "40", "--check-seconds", "0.1", "--rank-seconds", "5",
                         "--finish-seconds", "5", "--init", str(init),
                         "--train", str(SAMPLE), "--val", str(SAMPLE), "--train-args", "--patch 7"])
    assert code == 1
    assert not list(out.glob("model.safetensors*"))
    assert "Best candidate: none" in (out / gpu_run.TABLE).read_text()
    log = (out / gpu_run.LOG).read_text()
    assert "checks ended at its deadline" in log and "--patch 7 must be a multiple of 8" in log
    assert "no weights returned" in log
    checks = json.loads((out / gpu_run.CHECKS).read_text())      # ended before its first step, still returned
    assert checks["steps"] == {} and checks["finished"] is False and checks["ended"] == "ended at its deadline"


def test_split_parts_fit_the_transfer_limit_and_join_bit_for_bit(tmp_path):
    manifest = split_file(SHIPPED_X4, tmp_path, gpu_run.MAX_PART, note="x")
    sizes = [p["size"] for p in manifest["parts"]]
    assert len(sizes) == 2 and max(sizes) < gpu_run.MAX_FILE and sum(sizes) == SHIPPED_X4.stat().st_size
    assert len(gpu_run.FIXED) + len(sizes) + 1 <= gpu_run.MAX_FILES          # the real run's files, log included
    joined = join_file(tmp_path / "mri-x4-fidelity.safetensors.manifest.json", tmp_path / "joined.safetensors")
    assert sha256_of(joined) == sha256_of(SHIPPED_X4) == manifest["sha256"]

    part = tmp_path / manifest["parts"][1]["name"]
    data = bytearray(part.read_bytes())
    data[1000] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(MRSuperResError, match="does not match its manifest"):
        join_file(tmp_path / "mri-x4-fidelity.safetensors.manifest.json", tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()


def test_the_pack_restores_each_volume_bit_for_bit_and_refuses_a_wrong_one(tmp_path):
    import nibabel as nib

    img = nib.load(str(SAMPLE))
    raw = write_nifti(tmp_path / "raw.nii", np.asarray(img.dataobj)[:, :, :8], img.affine)     # uncompressed: gzipped
    volumes = {"slab.nii.gz": SAMPLE, "raw.nii": raw}
    expected = {name: sha256_of(path) for name, path in volumes.items()}
    wheel = tmp_path / "reader-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    manifest = gpu_pack.pack(tmp_path / "pack", volumes, expected, [wheel])
    assert manifest["volumes"]["raw.nii"]["file"] == "raw.nii" + gpu_pack.PACKED
    assert (tmp_path / "pack" / "data" / ("raw.nii" + gpu_pack.PACKED)).stat().st_size < raw.stat().st_size
    assert manifest["volumes"]["slab.nii.gz"]["file"] == "slab.nii.gz"          # already compressed: as it is
    restored = gpu_pack.unpack(tmp_path / "pack", tmp_path / "work")
    assert {name: sha256_of(path) for name, path in restored.items()} == expected
    with pytest.raises(MRSuperResError, match="not the expected"):
        gpu_pack.pack(tmp_path / "pack2", volumes, {**expected, "raw.nii": "0" * 64}, [])


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="measures a git checkout")
def test_the_size_check_counts_the_checkout_and_the_pack_and_stops_over_the_limit(tmp_path):
    pack = tmp_path / "pack"
    (pack / "data").mkdir(parents=True)
    (pack / "data" / "v.nii.gz").write_bytes(b"x" * 5000)
    sizes = gpu_pack.travelling(ROOT, [pack])
    assert sizes["Resources/Models/mri-x4-fidelity.safetensors"] == SHIPPED_X4.stat().st_size
    assert sizes[str(pack / "data" / "v.nii.gz")] == 5000
    assert not any(name.startswith(".venv/") for name in sizes)               # ignored: never travels
    total = sum(sizes.values())
    assert gpu_pack.check_size(sizes, limit=total) == total
    with pytest.raises(MRSuperResError, match="largest: Resources/Models/"):
        gpu_pack.check_size(sizes, limit=total - 1)
    unused = gpu_pack.unneeded_weights(ROOT)
    assert "Resources/Models/mri-x4-gan.safetensors" in unused and SHIPPED_X4.name not in str(unused)
    lean = gpu_pack.travelling(ROOT, [pack], left_out=unused)
    assert total - sum(lean.values()) == sum((ROOT / name).stat().st_size for name in unused)
    with pytest.raises(MRSuperResError, match="over the 64 MiB limit"):         # the tracked weights alone are over it
        gpu_pack.check_size(sizes)


def test_park_and_unpark_put_back_what_they_took_and_refuse_a_changed_file(tmp_path):
    root, parked = tmp_path / "checkout", tmp_path / "parked"
    (root / "Resources" / "Models").mkdir(parents=True)
    names = ["Resources/Models/a.safetensors", "Resources/Models/b.safetensors"]
    for i, name in enumerate(names):
        (root / name).write_bytes(bytes([i]) * 1000)
    with pytest.raises(MRSuperResError, match="outside the checkout"):
        gpu_pack.park(root, names, root / "parked")
    record = gpu_pack.park(root, names, parked)
    assert not any((root / n).exists() for n in names) and set(record) == set(names)
    with pytest.raises(MRSuperResError, match="already holds"):
        gpu_pack.park(root, names, parked)
    (parked / names[0]).write_bytes(b"changed")
    with pytest.raises(MRSuperResError, match="changed while parked"):
        gpu_pack.unpark(root, parked)
    assert not (root / names[1]).exists()                                       # nothing restored
    (parked / names[0]).write_bytes(bytes([0]) * 1000)
    gpu_pack.unpark(root, parked)
    assert [(root / n).read_bytes()[:1] for n in names] == [b"\x00", b"\x01"]


def test_the_run_trains_the_recipes_fidelity_v2_stage_at_gpu_scale(tmp_path):
    """The recipe's volumes are the datasets' training and validation subjects, and the training
    command is the recipe's stage with only a GPU's batch, patch, measured precision and deadline
    changed (as the real `mrsuperres train` parser reads it: the last of a repeated option wins)."""
    from MRSuperResLib.cli.commands import build_parser
    from MRSuperResLib.models.datasets import TRAINING, validation_files

    args = gpu_pack.recipe()
    volumes = gpu_pack.recipe_volumes(args)
    assert volumes == {"data": list(TRAINING), "val": validation_files()}
    paths = {name: tmp_path / name for group in volumes.values() for name in group}
    options = gpu_run.parser().parse_args(["--out", str(tmp_path)])
    cmd = gpu_run.training_command(options, paths, tmp_path / "run")
    assert cmd[:4] == [sys.executable, "-m", "MRSuperResLib", "train"]
    parsed = build_parser().parse_args(cmd[3:])
    assert parsed.data == [str(paths[n]) for n in volumes["data"]]
    assert parsed.val == [str(paths[n]) for n in volumes["val"]]
    assert (parsed.batch, parsed.patch, parsed.precision, parsed.device) == (16, 128, "auto", "cuda")
    assert (parsed.init, parsed.lr, parsed.stage, parsed.hr_noise) == ("mri-x4-fidelity", 5e-5, "psnr", 0.5)
    assert parsed.axis == "all"
    assert parsed.degrade == args[args.index("--degrade") + 1]


def test_the_budget_keeps_the_ranking_and_packing_time_whatever_the_checks_take():
    d = gpu_run.parser().parse_args(["--out", "x"])
    budget = gpu_run.Budget(d.budget, d.check_seconds, d.rank_seconds, d.finish_seconds, start=1000.0)
    assert (budget.checks, budget.train, budget.rank) == (1200.0, 1410.0, 1485.0)
    assert d.budget <= 540 - 30                      # the call's limit keeps room for startup and overruns
    short = gpu_run.Budget(60, checks=210, rank=10, finish=5, start=0.0)
    assert short.checks == 45 and short.train == 45 and short.rank == 55      # checks never eat the ranking
    with pytest.raises(MRSuperResError, match="leaves no time to train"):
        gpu_run.Budget(40, checks=10, rank=75, finish=25)
