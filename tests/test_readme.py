"""The README's set-up says what it installs (issue 13, fix 8)."""

from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()
SETUP = [
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e . && pytest --joules examples/',
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" && pytest',
]


def test_the_two_setup_commands_stay_as_they_run_here():
    for command in SETUP:
        assert f"\n{command}\n" in README


def test_the_public_torch_is_called_the_cuda_build_and_the_cpu_index_is_given():
    assert "torch's CPU build first" not in README  # the public index serves the CUDA build on Linux
    head = README[:README.index("Energy regression tests for LLM inference")]
    assert "is the CUDA build" in head
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in head
