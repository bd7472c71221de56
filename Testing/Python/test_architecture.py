"""The package's layout, checked by reading its source: no import circle (imports inside functions
count), at most 8 import layers, at least six subpackages, no library file over 500 lines, every
choice list and default declared once (in MRSuperResLib.options), and a public API that importing
a submodule cannot shadow."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT

import MRSuperResLib
from MRSuperResLib import options

PKG = ROOT / "MRSuperResLib"
MAX_LAYERS = 8
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the package it imports}, from every import statement, at any depth."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return {name: graph[name] for name in modules}


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """A module's layer: one above the highest module it imports (1: imports none)."""
    found: dict[str, int] = {}

    def layer(name: str, path: tuple = ()) -> int:
        if name in path:
            raise AssertionError(f"import circle: {' -> '.join(path[path.index(name):] + (name,))}")
        if name not in found:
            found[name] = 1 + max((layer(m, path + (name,)) for m in graph[name]), default=0)
        return found[name]

    for name in graph:
        layer(name)
    return found


def test_no_import_circle_and_at_most_eight_layers():
    found = layers(import_graph())                   # raises on a circle, naming it
    deepest = max(found.values())
    assert deepest <= MAX_LAYERS, sorted((v, k) for k, v in found.items() if v > MAX_LAYERS)


def test_the_lowest_modules_import_nothing_of_the_package():
    graph = import_graph()
    for name in ("MRSuperResLib.errors", "MRSuperResLib.options", "MRSuperResLib.files"):
        assert graph[name] == set(), (name, graph[name])


def test_lower_packages_never_import_upper_ones():
    """scans < models < engine < pipeline < evaluation, training < slicer, cli (errors, options,
    files, progress and events below them all)."""
    rank = {"scans": 1, "models": 2, "engine": 3, "pipeline": 4, "evaluation": 5, "training": 5, "shipping": 6, "in_slicer": 6,
            "cli": 6}
    for name, imported in import_graph().items():
        here = name.split(".")[1] if name.count(".") else ""
        for other in imported:
            there = other.split(".")[1] if other.count(".") else ""
            if here in rank and there in rank:
                assert rank[there] <= rank[here], f"{name} imports {other}"


def test_at_least_six_subpackages_and_small_files():
    subpackages = [p.parent.name for p in PKG.glob("*/__init__.py")]
    assert len(subpackages) >= 6, subpackages
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


CHOICE_LISTS = {name: value for name, value in vars(options).items()
                if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, str) for v in value)}
DEFAULT_STRINGS = {options.MRI_DEFAULT_MODEL, options.THICK_DEFAULT_MODEL, options.REALESRGAN_MODEL}


def source_files() -> list[Path]:
    return [p for top in ("MRSuperResLib", "MRSuperRes", "scripts") for p in (ROOT / top).rglob("*.py")
            if p != PKG / "options.py"]


def restated(path: Path) -> list[str]:
    """Literal tuples, lists or sets of strings equal to one of options' choice lists, and the
    default models' names or the home folder outside docstrings and comments."""
    found = []
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            values = {e.value for e in node.elts}
            found += [f"{path.name}:{node.lineno}: {name}" for name, choice in CHOICE_LISTS.items()
                      if values == set(choice)]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in DEFAULT_STRINGS and "scripts" not in path.parts:   # scripts name the models they check
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
            if node.value == ".cache":
                found.append(f"{path.name}:{node.lineno}: the home folder")
    return found


def test_every_choice_list_and_default_is_declared_once():
    found = [hit for path in source_files() for hit in restated(path)
             # vgg.py names torch's own cache (TORCH_HOME), not MRSuperRes's home folder
             if not (hit.startswith("vgg.py") and hit.endswith("the home folder"))]
    assert not found, found


def test_the_check_finds_a_restated_list(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('CHOICES = ("through-plane", "auto", "in-plane")\nMODEL = "mri-x4-fidelity"\n'
                      'def f():\n    """mri-x4-fidelity in a docstring is prose."""\n')
    assert restated(sample) == ["sample.py:1: DIRECTIONS", "sample.py:2: 'mri-x4-fidelity'"]


def every_submodule() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(MRSuperResLib.__path__, "MRSuperResLib.")
                  if not m.name.endswith("__main__"))


def test_no_public_name_is_also_a_submodule():
    for name in MRSuperResLib.__all__:
        assert not (PKG / f"{name}.py").exists() and not (PKG / name).is_dir(), name
    for init in PKG.glob("*/__init__.py"):                # nor is a name a subpackage defines
        defined = {n.name for n in ast.parse(init.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        submodules = {p.stem for p in init.parent.glob("*.py")} | {p.parent.name for p in init.parent.glob("*/__init__.py")}
        assert not defined & submodules, (init, defined & submodules)


def test_the_console_script_entry_point_is_the_function():
    importlib.import_module("MRSuperResLib.cli.commands")          # its submodules loaded first
    from MRSuperResLib.cli import main

    assert callable(main) and not isinstance(main, types.ModuleType)
    assert 'mrsuperres = "MRSuperResLib.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_public_names_are_still_what_they_say_after_every_submodule_is_imported():
    for name in every_submodule():
        importlib.import_module(name)
    for name in MRSuperResLib.__all__:
        value = getattr(MRSuperResLib, name)
        assert not isinstance(value, types.ModuleType) and callable(value), name
        home = importlib.import_module(f"MRSuperResLib.{MRSuperResLib._HOMES[name]}")
        assert getattr(home, name) is value, name


@pytest.mark.slow
def test_a_new_users_import_works_after_the_library_imported_its_submodules():
    """The order a user meets: load_model imports much of the package first, then `evaluate` is
    called as the function it is (it once was the module of the same name)."""
    code = ("import MRSuperResLib.evaluation.protocol, MRSuperResLib.pipeline.enhance\n"
            "from MRSuperResLib import evaluate, enhance_volume, load_model, super_resolve_slices\n"
            "import inspect\n"
            "assert all(inspect.isfunction(f) for f in (evaluate, enhance_volume, load_model, super_resolve_slices))\n"
            "print(evaluate.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "MRSuperResLib.evaluation.protocol"


def test_importing_the_options_needs_no_torch_or_numpy():
    code = "import sys, MRSuperResLib.options; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("name", ["DIRECTIONS", "CONSISTENCY_MODES", "PRECISIONS", "ENGINES"])
def test_the_command_line_offers_each_choice_list_as_declared(name):
    from MRSuperResLib.cli.commands import build_parser

    flag = {"DIRECTIONS": "--direction", "CONSISTENCY_MODES": "--consistency", "PRECISIONS": "--precision",
            "ENGINES": "--engine"}[name]
    enhance = next(a for a in build_parser()._subparsers._group_actions[0].choices["enhance"]._actions
                   if flag in a.option_strings)
    assert tuple(enhance.choices) == getattr(options, name)
