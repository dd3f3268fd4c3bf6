"""Benchmark: the paper's 7x7 grid on the simulated H100, measured and fitted, end to end.

    pytest benchmarks/bench_sweep.py -p no:cacheprovider --benchmark-only

Runs `joules sweep` (engine and meter built through the registry, every point through
`measure.measure` with 3 rounds and 1 warm-up, then the three models fitted with LOO MAPE) for
Llama-3.1-8B on H100-SXM, requests=100, n_in and n_out in 64..4096.
"""

from __future__ import annotations

import json

from pytest_joules.cli import main

GRID = "64,128,256,512,1024,2048,4096"
ARGS = ["sweep", "--model", "Llama-3.1-8B", "--gpu", "H100-SXM", "--n-in", GRID, "--n-out", GRID,
        "--requests", "100", "--rounds", "3", "--json"]


def test_sweep_7x7_with_fits(benchmark, capsys):
    def sweep() -> dict:
        assert main(ARGS) == 0
        return json.loads(capsys.readouterr().out)

    doc = benchmark.pedantic(sweep, rounds=3, iterations=1, warmup_rounds=0)
    assert len(doc["results"]) == 49
    models = {m["name"]: m for m in doc["models"]}
    assert set(models) == {"flops", "memflops", "linear"}
    # the paper's model describes the physics; the linear model it argues against does not
    assert models["memflops"]["mape"] < 0.05 < models["linear"]["mape"]
