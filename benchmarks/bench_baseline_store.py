"""What recording baselines costs when the store is large.

Generates a suite of energy tests (200 by default) on the simulated device (noise=0, 3 rounds,
no warm-up: the measuring itself takes milliseconds), then times, in a subprocess each:

  - recording them into an empty store (`--joules --joules-update-baselines`);
  - recording them into a store file of about 15 MB (filler entries of other tests, written in
    the store's own format; the file is restored before each run);
  - a gate run against that large store (`--joules`, nothing recorded).

The difference between the first two is what the store's size costs; divided by the number of
tests it is the cost per recorded test. Each run's store is checked afterwards: every recorded
test present, every filler entry kept, valid JSON.

    python benchmarks/bench_baseline_store.py [--tests 200] [--store-mb 15] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = '''
import pytest


@pytest.mark.parametrize("i", range({tests}))
@pytest.mark.energy(n_in=16, n_out=8)
def test_point(joules, i):
    joules()
'''

ARGS = ["--joules", "--joules-engine-option", "noise=0", "--joules-rounds", "3", "--joules-warmup", "0",
        "--joules-seed", "1", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q"]


def run(root: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", *ARGS, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return elapsed


def store_file(root: Path) -> Path:
    files = list((root / "baselines").glob("*/*.json"))
    files = [f for f in files if not f.name.endswith(".model.json")]
    if len(files) != 1:
        raise SystemExit(f"expected one baseline file, found {files}")
    return files[0]


def inflate(path: Path, megabytes: float) -> int:
    """Replace the recorded entries by filler entries of other tests until the file has `megabytes`."""
    data = json.loads(path.read_text())
    template = next(iter(data["entries"].values()))
    rounds = [float(f"{template['j_per_out_token'] * (1 + k / 1000):.6g}") for k in range(11)]

    def document(count: int) -> str:
        data["entries"] = {
            f"tests/test_filler_{i // 1000:03d}.py::test_filler[n_in={16 + i % 1000}-n_out=8]":
                {**template, "rounds": rounds, "j_per_out_token": rounds[5]}
            for i in range(count)
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    per_entry = (len(document(1100)) - len(document(100))) / 1000
    count = max(1, int((megabytes * 1e6 - len(document(0))) / per_entry))
    path.write_text(document(count))
    return count


def check(path: Path, tests: int, fillers: int) -> None:
    entries = json.loads(path.read_text())["entries"]
    recorded = sum(1 for k in entries if "test_point[" in k)
    if recorded != tests or len(entries) != tests + fillers:
        raise SystemExit(f"{path}: {recorded} of {tests} tests recorded, {len(entries) - recorded} of {fillers} fillers kept")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200, help="energy tests recorded per run")
    parser.add_argument("--store-mb", type=float, default=15.0, help="size of the large store file")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="joules-bench-store-") as tmp:
        root = Path(tmp)
        (root / "test_store.py").write_text(SUITE.format(tests=args.tests))
        (root / "pytest.ini").write_text("[pytest]\n")
        run(root, ["--joules-update-baselines"])  # warm caches; creates the file with this fingerprint
        path = store_file(root)
        fillers = inflate(path, args.store_mb)
        large = path.read_bytes()
        size_mb = len(large) / 1e6
        empty, full, gate = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(root / "baselines")
            empty.append(run(root, ["--joules-update-baselines"]))
            check(store_file(root), args.tests, 0)
            path.write_bytes(large)
            full.append(run(root, ["--joules-update-baselines"]))
            check(path, args.tests, fillers)
            gate.append(run(root, []))
    m_empty, m_full, m_gate = statistics.median(empty), statistics.median(full), statistics.median(gate)
    print(f"{args.tests} tests recorded (SIMULATED device), {args.repeat} runs each (median; min..max)")
    print(f"  into an empty store           : {m_empty:7.2f} s  ({min(empty):.2f}..{max(empty):.2f})")
    print(f"  into a {size_mb:.1f} MB store ({fillers} entries): {m_full:7.2f} s  ({min(full):.2f}..{max(full):.2f})")
    print(f"  gate run against that store   : {m_gate:7.2f} s  ({min(gate):.2f}..{max(gate):.2f})")
    print(f"  the large store costs {m_full - m_empty:+.2f} s, {(m_full - m_empty) / args.tests:.3f} s per recorded test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
