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


def test_the_readme_says_what_the_tool_is_before_its_first_command():
    first_code = README.index("```")
    intro = README[:first_code]
    assert "pytest plugin" in intro and "joules per output token" in intro
    assert README[first_code:].startswith("```bash\n# 1.")  # the two set-up commands come first


def test_links_stay_inside_the_repository():
    import re

    root = Path(__file__).parent.parent
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "../shared" not in text, doc
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if target.startswith(("http://", "https://")):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(root.resolve()) and path.exists(), (doc.name, target)
