"""What MRSuperRes needs in Slicer's Python, and installing it on first use.

Pure functions (no Qt, no slicer) say exactly what would be installed and with which pip
arguments, so a plain-Python test can check them; `ensure_dependencies` does the install in
the application. Importing this module imports no torch, and of MRSuperResLib only the torch-free
`options`, when asked for the home folder.
"""
from __future__ import annotations

import os
import sys

try:                                     # the Slicer application; None in plain Python (tests set it)
    import slicer
except ImportError:
    slicer = None



TORCH_REQUIREMENT = ">=2.4"
# pyproject.toml's dependencies except torch, with its ranges (Testing/Python/in_slicer/test_slicer_panel.py
# fails when the two disagree)
PIP_REQUIREMENTS = ("numpy>=1.24,<3", "scipy>=1.10,<2", "nibabel>=5.0,<6", "pynrrd>=1.0,<2",
                    "scikit-image>=0.21,<0.27", "safetensors>=0.4,<1", "matplotlib>=3.7,<4", "tqdm>=4.60,<5",
                    "onnx>=1.14,<2", "SimpleITK>=2.2,<3")
# Slicer's own packages: never installed or upgraded by MRSuperRes, held at their installed
# versions through a pip constraints file so that no dependency can replace them
SLICER_PACKAGES = ("numpy", "scipy", "SimpleITK", "requests", "pillow")


def split_requirement(requirement: str) -> tuple:
    """("scikit-image", ">=0.21,<0.27") from "scikit-image>=0.21,<0.27"."""
    for i, c in enumerate(requirement):
        if c in "<>=!~ ":
            return requirement[:i], requirement[i:].strip()
    return requirement, ""


def version_key(version: str) -> tuple:
    """(2, 5, 1) from "2.5.1+cu121" or "2.5.1rc1": enough to compare against our release ranges."""
    key = []
    for part in version.split("+")[0].split("."):
        digits = ""
        for c in part:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        key.append(int(digits))
        if len(digits) < len(part):          # "1rc1": stop after the number
            break
    return tuple(key)


def satisfies(version, spec: str) -> bool:
    """Whether an installed `version` (None: not installed) meets a ">=a,<b" range."""
    if version is None:
        return False
    have = version_key(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op = next(o for o in (">=", "<=", "==", "!=", ">", "<") if clause.startswith(o))
        want = version_key(clause[len(op):].strip())
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        if not {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, "<": a < b}[op]:
            return False
    return True


def installed_version(name: str):
    """The installed distribution's version, or None (read from metadata: nothing is imported)."""
    import importlib.metadata

    for candidate in (name, name.lower(), name.replace("-", "_")):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_versions() -> dict:
    """{distribution: version or None} for torch, our requirements and Slicer's own packages."""
    names = ["torch"] + [split_requirement(r)[0] for r in PIP_REQUIREMENTS] + list(SLICER_PACKAGES)
    return {name: installed_version(name) for name in dict.fromkeys(names)}


def torch_problem(version):
    """None when the installed torch is recent enough, else what is wrong (for the user)."""
    if version is None:
        return "PyTorch is not installed"
    if not satisfies(version, TORCH_REQUIREMENT):
        return f"PyTorch {version} is too old: MRSuperRes needs PyTorch {TORCH_REQUIREMENT}"
    return None


def packages_to_install(versions: dict) -> list:
    """The requirements pip must install: missing or out of range, never one of Slicer's own."""
    out = []
    for r in PIP_REQUIREMENTS:
        name, spec = split_requirement(r)
        if name not in SLICER_PACKAGES and not satisfies(versions.get(name), spec):
            out.append(r)
    return out


def slicer_package_problems(versions: dict) -> list:
    """Slicer's own packages that miss our range: only a newer Slicer can fix those."""
    problems = []
    for r in PIP_REQUIREMENTS:
        name, spec = split_requirement(r)
        if name in SLICER_PACKAGES and not satisfies(versions.get(name), spec):
            found = versions.get(name)
            problems.append(f"Slicer's {name} {found} is outside {spec}" if found else f"Slicer's {name} is missing")
    return problems


def constraints_text(versions: dict) -> str:
    """A pip constraints file holding Slicer's own packages at their installed versions."""
    return "".join(f"{name}=={versions[name]}\n" for name in SLICER_PACKAGES if versions.get(name))


def pip_takes_constraints(pip_install) -> bool:
    """Whether slicer.util.pip_install has a `constraints` argument (Slicer 5.12+; it forwards
    **kwargs to slicer.packaging.pip_install there). Older ones take pip's arguments only."""
    import inspect

    try:
        parameters = inspect.signature(pip_install).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "constraints" or p.kind is p.VAR_KEYWORD for p in parameters)


def pip_install_call(requirements: list, constraints_file: str, takes_constraints: bool) -> tuple:
    """(args, kwargs) for slicer.util.pip_install. A list, not one string: older Slicers
    shlex-split a string, which would eat the backslashes of a Windows constraints path."""
    if takes_constraints:
        return list(requirements), {"constraints": str(constraints_file)}
    return list(requirements) + ["-c", str(constraints_file)], {}


def dependency_lines(versions: dict) -> list:
    """What is missing, one line each, for the panel and the confirmation."""
    problem = torch_problem(versions.get("torch"))
    lines = [problem] if problem else []
    for r in packages_to_install(versions):
        found = versions.get(split_requirement(r)[0])
        lines.append(f"{r} (installed: {found})" if found else r)
    return lines + slicer_package_problems(versions)


def default_home_dir():
    """MRSuperRes's per-user folder (MRSuperResLib.options.home_dir: a module without torch, which
    the panel must not need before the first Apply)."""
    from MRSuperResLib.options import home_dir

    return home_dir()


def training_output_folder(chosen: str, runs_root, resume: bool, stamp: str):
    """Where a training run goes. Resume: the chosen folder. Start: the chosen folder, except
    when it is empty, the runs folder itself, or a run already inside the runs folder: then a new
    `run-<stamp>` folder there, so that Start never trips over an earlier run."""
    from pathlib import Path

    root = Path(runs_root)
    folder = Path(chosen) if chosen else root
    if resume:
        return folder
    holds_run = (folder / "run").is_dir() and any((folder / "run").iterdir())
    if folder == root or (holds_run and root in folder.parents):
        return root / f"run-{stamp}"
    return folder


class DependencyError(Exception):
    """An install that did not happen, with the one line to show the user."""


def ensure_dependencies(ask: bool = True) -> bool:
    """True when torch and every package is there; otherwise, outside testing mode, installs
    them after one confirmation: torch through the PyTorch extension, the rest by pip with
    Slicer's own packages held. Never raises: a failure is shown in one message."""
    import logging

    try:
        versions = installed_versions()
        missing = dependency_lines(versions)
        if not missing:
            return True
        if slicer.app.testingEnabled():              # tests must not change the environment
            logging.info("MRSuperRes: testing mode, not installing: %s", "; ".join(missing))
            return False
        blocked = slicer_package_problems(versions)
        if blocked:
            raise DependencyError("; ".join(blocked) + ". Use a newer Slicer.")
        pytorch_utils = _pytorch_utils() if torch_problem(versions.get("torch")) else None
        if ask and not slicer.util.confirmOkCancelDisplay(
                "MRSuperRes needs:\n  " + "\n  ".join(missing) + "\n\nInstall now? (Slicer's numpy, scipy, "
                "SimpleITK, requests and pillow stay as they are.)", "MRSuperRes: install dependencies"):
            return False
        torch_before = "torch" in sys.modules
        if pytorch_utils is not None:
            torch = pytorch_utils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                   torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise DependencyError("PyTorch was not installed")
        to_install = packages_to_install(versions)
        if to_install:
            _pip_install(to_install, versions)
        import importlib
        importlib.invalidate_caches()
        versions = installed_versions()
        still = dependency_lines(versions)
        if still:
            raise DependencyError("still missing after the install: " + "; ".join(still))
        if torch_before and not satisfies(getattr(sys.modules["torch"], "__version__", "0"), TORCH_REQUIREMENT):
            raise DependencyError(f"PyTorch {versions['torch']} is installed, but an older one is already "
                                  "loaded: restart Slicer to use it")
        return True
    except Exception as exc:
        if isinstance(exc, DependencyError):
            text = str(exc)
            logging.error("MRSuperRes: %s", text)
        else:
            text = f"{type(exc).__name__}: {exc}"
            logging.exception("MRSuperRes: installing dependencies failed")
        slicer.util.errorDisplay(f"MRSuperRes could not install its dependencies: {text}\n\n"
                                 "The panel stays usable; try again with 'Install dependencies'.")
        return False


def _pytorch_utils():
    """The PyTorch extension's module, which installs the torch build that fits the GPU driver."""
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError("PyTorch is installed through the PyTorch extension: install it from the "
                              "Extensions Manager and restart Slicer") from None
    return PyTorchUtils


def _pip_install(requirements: list, versions: dict) -> None:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="mrsuperres-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(constraints_text(versions))
        args, kwargs = pip_install_call(requirements, path, pip_takes_constraints(slicer.util.pip_install))
        slicer.util.pip_install(args, **kwargs)
    finally:
        os.remove(path)
