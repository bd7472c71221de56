"""Training options have one declaration (TrainConfig): the flags, the config files, the checks,
the Slicer panel and the Slicer logic all follow it; and the one progress reporter."""
from __future__ import annotations

import ast
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import fields

import pytest
from conftest import ROOT

from MRSuperResLib.cli import main
from MRSuperResLib.cli.commands import build_parser
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.progress import Progress
from MRSuperResLib.training.config import (TrainConfig, build_config, check_options, choices_of,
                                           coerce, defaults, flag, load_config_file, panel_defaults)


def train_parser():
    sub = build_parser()._subparsers._group_actions[0]
    return sub.choices["train"]


def help_blocks(text: str) -> dict[str, str]:
    """{--flag: its help text} from argparse's help output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s{2}(--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith(" " * 10):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_every_option_is_a_flag_with_its_default_in_the_help(capsys):
    actions = {a.dest: a for a in train_parser()._actions if a.dest not in ("help", "debug")}   # --debug: every command has it
    assert set(actions) == set(TrainConfig.option_names())          # no flag without an option, and back
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    blocks = help_blocks(capsys.readouterr().out)
    for f in fields(TrainConfig):
        text = blocks[flag(f.name)]
        assert f.metadata["help"].split("%%")[0][:30] in text.replace("%", "")
        assert actions[f.name].default is None                       # a config file can fill every option
        if f.metadata["shown"] != "":
            assert "(default:" in text, f.name
    assert "(default: 1000)" in blocks["--iters"] and "(default: 0.005,0.03)" in blocks["--hr-noise-sigma"]
    assert "(default: 23, or the init model's)" in blocks["--blocks"]


def test_flags_and_config_files_give_the_same_config(tmp_path):
    every = {"stage": "gan", "preset": "thesis", "iters": 7, "batch": 2, "patch": 64, "hr_noise": 0.5,
             "hr_noise_sigma": [0.002, 0.03], "degrade": "bilinear,mri", "axis": "all", "lr": 5e-5,
             "l1_weight": 0.5, "val_every": 3, "device": "cpu", "precision": "fp32", "seed": 3}
    argv = ["train", "--data", "a.nii.gz", "b.nii.gz", "--out", "run"]
    for k, v in every.items():
        argv += [flag(k), ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    args = build_parser().parse_args(argv)
    from_flags = build_config({k: getattr(args, k) for k in TrainConfig.option_names()})
    toml = tmp_path / "c.toml"
    toml.write_text("data = ['a.nii.gz', 'b.nii.gz']\nout = 'run'\n" + "".join(
        f"{k.replace('_', '-')} = {json.dumps(v)}\n" for k, v in every.items()))
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"data": ["a.nii.gz", "b.nii.gz"], "out": "run", **every}))
    for path in (toml, as_json):
        from_file = build_config({"config": str(path)})
        assert {**vars(from_file), "config": None} == {**vars(from_flags), "config": None}
    assert from_flags.iters == 7 and from_flags.hr_noise_sigma == [0.002, 0.03] and from_flags.lr == 5e-5
    (tmp_path / "bad.json").write_text(json.dumps({"itres": 3}))
    with pytest.raises(MRSuperResError, match="unknown option"):
        load_config_file(str(tmp_path / "bad.json"))


def test_the_checks_follow_the_declared_choices_and_limits():
    base = {"data": ["a.nii.gz"], "out": "run"}
    for f in fields(TrainConfig):
        if f.metadata["choices"]:
            with pytest.raises(MRSuperResError, match=re.escape(flag(f.name)) + " must be one of"):
                build_config({**base, f.name: "nonsense" if isinstance(f.metadata["choices"][0], str) else 3})
        if f.metadata["minimum"] is not None:
            with pytest.raises(MRSuperResError, match=re.escape(flag(f.name)) + " must be at least 1"):
                build_config({**base, f.name: 0})
    for scale in (1, 8):                                     # x1 has no grid to refine; x16 is not built
        with pytest.raises(MRSuperResError, match=f"--supersample 2 needs an in-plane --scale .* --scale {scale}"):
            build_config({**base, "scale": scale, "supersample": 2,
                          **({"degrade": "thick"} if scale == 1 else {})})
    assert build_config({**base, "scale": 2, "supersample": 2}).supersample == 2
    with pytest.raises(MRSuperResError, match="unknown training option"):
        check_options({"iterations": 10})                    # the panel's old name for iters
    with pytest.raises(MRSuperResError, match="--iters must be an integer"):
        check_options({"iters": "ten"})
    assert check_options({"iters": "12", "stage": "gan", "patch": "64"}).iters == 12     # text, as a panel gives
    assert coerce("resume", "true") is True and coerce("hr_noise_sigma", "0.01,0.02") == "0.01,0.02"


def panel_module():
    """The widget file's module-level declarations, read without Qt."""
    tree = ast.parse((ROOT / "MRSuperRes" / "MRSuperRes.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("TRAINING_CONTROLS", "TRAINING_FIXED"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def test_the_panel_offers_the_declared_options_with_their_defaults():
    panel = panel_module()
    controls, fixed = panel["TRAINING_CONTROLS"], panel["TRAINING_FIXED"]
    assert set(controls.values()) | set(fixed) == set(panel_defaults())
    assert set(panel_defaults()) <= set(TrainConfig.option_names())
    ui = ET.parse(ROOT / "MRSuperRes" / "Resources" / "UI" / "MRSuperRes.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    assert set(controls) <= names                                    # every control exists in the .ui
    assert panel_defaults()["iters"] == defaults()["iters"] == 1000
    assert panel_defaults()["init"] == "realesrgan" and panel_defaults()["axis"] == "all"
    assert choices_of("stage") == ("psnr", "gan")


def test_the_slicer_logic_checks_options_before_writing_anything(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene

    scene = headless_scene()
    logic = MRSuperResLogic()
    node = logic.getParameterNode()
    for option, value in panel_defaults().items():
        assert node.GetParameter(logic.TRAINING_PARAMETER_PREFIX + option) == str(value)
    options = logic.trainingOptions()
    assert options == panel_defaults() and isinstance(options["iters"], int)
    assert logic.trainingChoices()["preset"][0] == "realesrgan"          # the default first
    import numpy as np
    volume = slicer.util.addVolumeFromArray(np.random.rand(8, 64, 64).astype(np.float32), name="v")
    count = scene.GetNumberOfNodes()
    for bad, message in (({"stage": "bogus"}, "--stage must be one of psnr, gan"),
                         ({"itres": 3}, "unknown training option"),
                         ({"patch": 36}, "multiple of 8")):
        with pytest.raises(MRSuperResError, match=re.escape(message)):
            logic.train([volume], tmp_path / "out", **bad)
        assert not (tmp_path / "out").exists() and scene.GetNumberOfNodes() == count


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere():
    log = io.StringIO()
    quiet = Progress("enhance", 10, stream=log, every=3600)
    for i in range(1, 11):
        quiet(i, 10)
    assert log.getvalue() == ""                                      # a short job in a log: silent
    log = io.StringIO()
    chatty = Progress("train", 100, "it", initial=20, stream=log, every=0)
    chatty.update(50, loss=0.25)
    chatty.update(100)
    chatty.close()                                                   # already said: no second last line
    lines = log.getvalue().splitlines()
    assert re.fullmatch(r"train: 50/100 it \(50%\), [\d.e+]+ it/s, \d+ s left, loss 0.25", lines[0]), lines
    assert lines[-1].startswith("train: 100/100 it (100%)") and len(lines) == 2
    term = io.StringIO()
    bar = Progress("enhance", 4, stream=term, terminal=True)
    for i in range(1, 5):
        bar(i, 4)
    assert "enhance" in term.getvalue() and "4/4" in term.getvalue() and "\r" in term.getvalue()
    off = io.StringIO()
    Progress("x", 2, stream=off, every=0, enabled=False).update(2)
    assert off.getvalue() == ""
