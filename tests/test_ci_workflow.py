"""examples/ci/energy.yml, the workflow users copy: valid YAML of GitHub Actions' shape, and every
`joules` and `pytest --joules` command in it is one this package accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pytest_joules.cli import SUBCOMMANDS, build_parser
from pytest_joules.plugin.options import FLAGS
from pytest_joules.report.comment import MARKER

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) reads the workflow")

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "ci" / "energy.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def commands(workflow: dict) -> list[list[str]]:
    """Each shell command of every `run:` step, `${{ ... }}` and $VARS made plain words."""
    out = []
    for step in workflow["jobs"]["energy"]["steps"]:
        script = step.get("run", "")
        script = re.sub(r"\$\{\{[^}]*\}\}", "X", script).replace("\\\n", " ")
        for line in script.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line.replace('"$MODEL_DIR"', "/models/m"), comments=True))
    return out


def test_the_workflow_has_github_actions_shape(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(on) == {"pull_request", "push"}
    assert workflow["permissions"]["pull-requests"] == "write"
    job = workflow["jobs"]["energy"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    assert job["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert workflow["concurrency"]["cancel-in-progress"] is False  # one GPU: queue, never share it
    for step in job["steps"]:
        assert ("run" in step) != ("uses" in step), step
        if "uses" in step:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
    names = [s.get("name") or s["uses"] for s in job["steps"]]
    assert names.index("Energy tests") < names.index("Pull-request comment") < names.index("Gate")


def test_every_joules_command_parses(workflow):
    parser = build_parser()
    seen = set()
    for argv in commands(workflow):
        if argv and argv[0] == "joules":
            assert argv[1] in SUBCOMMANDS, argv
            parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown option
            seen.add(argv[1])
    assert {"doctor", "report", "dashboard"} <= seen


def test_every_pytest_option_exists(workflow):
    known = {flag for flag, _, _ in FLAGS}
    runs = [argv for argv in commands(workflow) if argv and argv[0] == "pytest"]
    assert runs, "no pytest step"
    for argv in runs:
        for arg in argv[1:]:
            if arg.startswith("--joules"):
                assert arg in known, arg
        assert "--joules-autosave" in argv and "--joules" in argv


def test_the_comment_step_finds_the_reports_marker():
    assert MARKER in WORKFLOW.read_text()
