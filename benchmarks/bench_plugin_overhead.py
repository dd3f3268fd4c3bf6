"""What installing pytest-joules costs a test suite that does not use it.

Generates a suite of ordinary tests (500 by default) in a temporary directory and times
`pytest -q` on it with the plugin loaded (installed, --joules off) and with `-p no:joules`,
interleaved, several repetitions each; prints the medians and their ratio.

    python benchmarks/bench_plugin_overhead.py [--tests 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST_FILE = '''
import pytest


@pytest.mark.parametrize("x", range({per_param}))
def test_param(x):
    assert x >= 0


{plain}
'''


def make_suite(root: Path, tests: int, files: int = 10) -> None:
    """`files` modules, each half parametrized cases and half plain functions."""
    per_file = tests // files
    per_param = per_file // 2
    for i in range(files):
        plain = "\n\n".join(f"def test_plain_{j}():\n    assert {j} + 1 > {j}" for j in range(per_file - per_param))
        (root / f"test_suite_{i:02d}.py").write_text(TEST_FILE.format(per_param=per_param, plain=plain))
    (root / "pytest.ini").write_text("[pytest]\n")


def run(root: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500, help="number of tests in the generated suite")
    parser.add_argument("--repeat", type=int, default=7, help="runs per variant (median reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="joules-bench-") as tmp:
        root = Path(tmp)
        make_suite(root, args.tests)
        run(root, [])  # warm the file system cache and the bytecode of both variants
        run(root, ["-p", "no:joules"])
        on, off = [], []
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            on.append(run(root, []))
            off.append(run(root, ["-p", "no:joules"]))
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"{args.tests} tests, {args.repeat} runs each (median; min..max)")
    print(f"  plugin installed, --joules off: {m_on:.3f} s  ({min(on):.3f}..{max(on):.3f})")
    print(f"  -p no:joules                  : {m_off:.3f} s  ({min(off):.3f}..{max(off):.3f})")
    print(f"  ratio: {m_on / m_off:.3f}  (overhead {m_on - m_off:+.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
