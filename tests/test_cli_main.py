"""The `joules` entry point itself: bare `joules`, the top-level help (issue 13, fix 11)."""

from __future__ import annotations

import importlib

import pytest

from pytest_joules.cli import SUBCOMMANDS, build_parser, main


def test_bare_joules_prints_the_help_not_an_error(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: joules") and "COMMAND" in out and err == ""


def test_the_top_level_help_lists_every_subcommand(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(f"pytest_joules.cli.{module}")  # none left out silently as "not built yet"
        assert f"\n    {name} " in out or f"\n    {name}\n" in out, name
