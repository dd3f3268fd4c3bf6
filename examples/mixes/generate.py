"""How the example mixes were made: per-request rows as a serving log's export would hold them.

    python examples/mixes/generate.py   # rewrites chat.jsonl, rag.csv, code.csv beside this file

Lengths are drawn from log-normal distributions (request lengths in serving logs are heavy
tailed) with a fixed seed, rounded, and clipped to the stated ranges. Invented shapes, not
measured traffic: they stand for the three kinds of service the docs discuss.
"""

import csv
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).parent
ROWS = 200


def lognormal(rng, median, sigma, low, high):
    return int(min(high, max(low, round(median * math.exp(rng.gauss(0.0, sigma))))))


def main():
    rng = random.Random(20)
    # chat: a question and a little history in (short), an answer of a few hundred tokens out
    chat = [(lognormal(rng, 180, 0.8, 16, 2048), lognormal(rng, 320, 0.6, 16, 2048)) for _ in range(ROWS)]
    with open(HERE / "chat.jsonl", "w") as f:
        for n_in, n_out in chat:
            f.write(json.dumps({"prompt_tokens": n_in, "completion_tokens": n_out}) + "\n")
    # RAG: retrieved passages in (long), a short grounded answer out
    rag = [(lognormal(rng, 3000, 0.3, 1024, 6144), lognormal(rng, 140, 0.5, 32, 512)) for _ in range(ROWS)]
    # code completion: the file around the cursor in (medium), a few tokens out
    code = [(lognormal(rng, 1000, 0.5, 256, 4096), lognormal(rng, 24, 0.7, 4, 128)) for _ in range(ROWS)]
    for name, rows in (("rag.csv", rag), ("code.csv", code)):
        with open(HERE / name, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["n_in", "n_out"])
            out.writerows(rows)


if __name__ == "__main__":
    main()
