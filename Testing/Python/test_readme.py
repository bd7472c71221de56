"""The README's commands exist as written: every `mrsuperres` command line parses with the real
parser, every project file it names is there, the Python examples compile and call what exists,
and every link (README and docs/) resolves."""
from __future__ import annotations

import ast
import re
import shlex

import pytest
from conftest import ROOT

from MRSuperResLib.cli.commands import build_parser

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PROJECT_PATH = re.compile(r"^(scripts|Resources|MRSuperRes|MRSuperResLib|Testing|docs)/[\w./-]*[\w]$")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def shell_commands(text: str) -> list[list[str]]:
    """Each command of the bash blocks and of inline `mrsuperres ...` spans, as argv lists."""
    lines = []
    for block in code_blocks(text, "bash"):
        lines += block.replace("\\\n", " ").splitlines()
    commands = []
    for line in lines:
        line = line.split(" #")[0].strip()
        if line.startswith("for ") or not line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        argv = []
        for token in [*lexer, ";"]:
            if token in (";", "&&", "|", "||"):
                if argv:
                    commands.append(argv)
                argv = []
            else:
                argv.append(token)
    return commands


def code_spans(text: str) -> list[str]:
    """The prose's `code` spans (outside the fenced blocks)."""
    return re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))


def inline_commands(text: str) -> list[list[str]]:
    """`mrsuperres ...` spans in the prose: fragments, so only their command and flags are checked."""
    return [shlex.split(span) for span in code_spans(text) if span.startswith("mrsuperres ")]


def test_readme_has_the_sections_a_user_needs():
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    for needed in ("Install", "Quick start", "Three ways to use it", "Choosing a model", "Evaluate on your own data",
                   "Training", "Performance", "Troubleshooting", "Citation and licences"):
        assert needed in headings, needed
    assert len(text.split()) < 3000, "the README should read in about ten minutes"
    assert not re.search(r"seed 00\d|the issue|\bI could\b|\bwe measured\b", text, re.I)


def test_every_mrsuperres_command_parses():
    parser = build_parser()
    seen = set()
    for argv in shell_commands(README.read_text(encoding="utf-8")):
        if argv[0] != "mrsuperres":
            continue
        if argv[1:] == ["--version"]:
            continue
        argv = [a for a in argv[1:] if a != "..."]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: mrsuperres {' '.join(argv)}")
        seen.add(args.command)
    assert {"enhance", "degrade", "evaluate", "train"} <= seen
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for argv in inline_commands(README.read_text(encoding="utf-8")):
        if argv[1].startswith("--"):
            assert argv[1] in parser._option_string_actions, argv
            continue
        assert argv[1] in subparsers, argv
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert flag in subparsers[argv[1]]._option_string_actions, argv


def test_what_the_quick_start_writes_in_the_checkout_is_ignored_by_git():
    """The quick start's outputs never show up as untracked files."""
    import subprocess

    quick = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    outputs = [argv[argv.index("-o") + 1] for argv in shell_commands(quick) if "-o" in argv]
    assert outputs, "the quick start writes nothing?"
    written = outputs
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(written), done.stdout


def test_every_project_file_a_command_names_exists():
    named = set()
    for argv in shell_commands(README.read_text(encoding="utf-8")) + inline_commands(README.read_text(encoding="utf-8")):
        named |= {a for a in argv if PROJECT_PATH.match(a)}
    for span in code_spans(README.read_text(encoding="utf-8")):          # paths in the prose's code spans too
        named |= {t for t in span.split() if PROJECT_PATH.match(t)}
    assert "scripts/setup.sh" in named and "Resources/SampleData/colin27_t1_brain_slab.nii.gz" in named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_the_batch_command_calls_the_installed_entry_point():
    from MRSuperResLib.in_slicer import batch as slicer_batch

    text = README.read_text(encoding="utf-8")
    calls = re.findall(r'--python-code "import MRSuperResLib\.in_slicer\.batch as b; b\.main\((\[.*?\]), exit=True\)"', text)
    assert calls
    for call in calls:
        argv = ast.literal_eval(call)
        assert "--input" in argv and "--output" in argv
    assert callable(slicer_batch.main)


def test_python_examples_compile_and_use_names_that_exist():
    import MRSuperResLib
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic

    blocks = code_blocks(README.read_text(encoding="utf-8"), "python")
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "MRSuperResLib":
                for alias in node.names:
                    assert hasattr(MRSuperResLib, alias.name), alias.name
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "logic"):
                assert hasattr(MRSuperResLogic, node.attr), f"logic.{node.attr}"


def anchor_of(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}"
        if anchor and file.suffix == ".md":
            anchors = {anchor_of(h) for h in re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)}
            assert anchor in anchors, f"{page.name}: {target}"


def library_examples() -> list[tuple[str, str]]:
    """(where, code) of every Python example that uses the library without Slicer: the README's
    blocks that import from MRSuperResLib, and the package docstring's indented example."""
    import textwrap

    import MRSuperResLib

    found = [("README.md", block) for block in code_blocks(README.read_text(encoding="utf-8"), "python")
             if "from MRSuperResLib import" in block and "slicer" not in block]
    doc = MRSuperResLib.__doc__
    example = re.search(r"\n\n((?:    .*\n)+)", doc)
    found.append(("MRSuperResLib.__doc__", textwrap.dedent(example.group(1))))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("where,code", library_examples(), ids=lambda v: v if v.endswith(("md", "__doc__")) else "")
def test_the_library_examples_run_as_written(where, code, tmp_path, monkeypatch):
    """Each example runs unchanged on a real T1 (a small crop of the bundled sample saved as the
    t1.nii.gz it names) with the shipped default model, and writes the output it says."""
    import nibabel as nib
    import numpy as np
    from conftest import SAMPLE, write_nifti

    img = nib.load(str(SAMPLE))
    write_nifti(tmp_path / "t1.nii.gz", np.asarray(img.dataobj, np.float32)[40:72, 40:72, 20:22], img.affine)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {})
    out = nib.load(str(tmp_path / "t1_sr.nii.gz"))
    assert out.shape == (128, 128, 2)
    assert "MRSuperRes mri-x4-fidelity" in out.header["descrip"].tobytes().decode()
