"""The command line explains itself: --version, help and a shown default on every option, methods named."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import MRSuperResLib
from MRSuperResLib.cli import main
from MRSuperResLib.cli.commands import build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def command_help(name: str) -> str:
    return subcommands(build_parser())[name].format_help()


def test_version_names_the_package_and_torch(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"mrsuperres {re.escape(MRSuperResLib.__version__)} \(torch \S+, Python 3\.\d+\.\d+\)\n", out)


def test_the_installed_command_reports_the_same_version():
    out = subprocess.run([sys.executable, "-m", "MRSuperResLib", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(f"mrsuperres {MRSuperResLib.__version__} ")


@pytest.mark.parametrize("name", sorted(subcommands(build_parser())))
def test_every_option_has_help_and_shows_its_default(name):
    parser = subcommands(build_parser())[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help, f"{name} {flag} has no help"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
            shown = formatter._get_help_string(action) % {"default": action.default}
            assert "default" in shown.lower(), f"{name} {flag}: help shows no default: {shown}"
    assert "(default: " in parser.format_help() or name in ("models", "fetch", "import-weights")


def test_help_speaks_of_methods_by_name_not_internal_labels():
    texts = [build_parser().format_help()] + [p.format_help() for p in subcommands(build_parser()).values()]
    joined = "\n".join(texts)
    assert not re.search(r"seed 00\d|the issue|README", joined, re.I)
    assert "Rashid et al." in command_help("evaluate")


def test_debug_is_accepted_before_and_after_the_command(tmp_path, capsys):
    missing = str(tmp_path / "missing.nii.gz")
    for argv in (["--debug", "degrade", missing, "-o", str(tmp_path / "lr.nii.gz")],
                 ["degrade", missing, "-o", str(tmp_path / "lr.nii.gz"), "--debug"]):
        args = build_parser().parse_args(argv)
        assert args.debug is True
    assert build_parser().parse_args(["degrade", missing, "-o", "x.nii.gz"]).debug is False


def test_the_test_session_keeps_out_of_the_users_home():
    """Caches, downloads and settings of this session live in a temporary home, never the real one."""
    from pathlib import Path

    from conftest import REAL_HOME, TEST_HOME

    from MRSuperResLib.models.catalog import cache_dir
    from MRSuperResLib.options import home_dir
    from MRSuperResLib.training.vgg import _torch_hub_dir as torch_hub_dir

    assert TEST_HOME != REAL_HOME and Path.home() == TEST_HOME
    for where in (home_dir(), cache_dir(), torch_hub_dir()):
        assert where.is_relative_to(TEST_HOME) and not where.is_relative_to(REAL_HOME), where
