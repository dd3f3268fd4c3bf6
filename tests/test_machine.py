"""Machine and commit info in every results JSON (pytest_joules/machine.py)."""

import json
import platform
import shutil
import socket
import subprocess
import sys
import types

import pytest

from pytest_joules import __version__
from pytest_joules.cli import main
from pytest_joules.store.machine import git_info, machine_info
from pytest_joules.store.results import read_results, results_document

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_results_document_says_where_and_with_what_it_ran(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    doc = results_document([])
    m = doc["machine"]
    assert m["host"] == socket.gethostname()
    assert m["python"] == platform.python_version()
    assert m["cpu"] and m["cpu_count"] >= 1
    assert m["packages"]["pytest-joules"] == __version__


@needs_git
def test_git_commit_and_dirty_flag(repo, monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)
    assert machine_info()["git"] == {"commit": head, "branch": git_info()["branch"], "dirty": False}
    (repo / "untracked.json").write_text("{}")  # results files must not make every run dirty
    assert git_info()["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    assert git_info() == {"commit": head, "branch": git_info()["branch"], "dirty": True}


def test_no_git_or_no_repository_is_recorded_as_null(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert machine_info()["git"] is None  # outside a repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert machine_info()["git"] is None


def test_heavy_packages_are_reported_only_when_already_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt_llm", raising=False)
    assert "tensorrt_llm" not in machine_info()["packages"]
    assert "tensorrt_llm" not in sys.modules  # looking the version up imported nothing
    monkeypatch.setitem(sys.modules, "tensorrt_llm", types.SimpleNamespace(__version__="1.2.0"))
    assert machine_info()["packages"]["tensorrt_llm"] == "1.2.0"


def test_sweep_out_carries_machine_info(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["sweep", "--n-in", "128", "--n-out", "64", "--rounds", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["machine"]["host"] == socket.gethostname()
    assert read_results(out).machine == data["machine"]
