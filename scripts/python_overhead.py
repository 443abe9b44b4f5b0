"""What fitting from Python costs over the engine's own run: BilevelClassifier.fit's wall time
against the seconds its phases report (the time `bilevel train` spends training once its data
is loaded), median of repeats after a warm-up fit (the GPU context is built once a process).

    target/python-venv/bin/python scripts/python_overhead.py [--repeats 5]
"""

import argparse
import statistics
import time

import numpy as np

from bilevel import BilevelClassifier


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n, d in [(569, 30), (20_000, 256), (100_000, 64)]:
        X = rng.normal(size=(n, d)).astype(np.float32)
        y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(int)
        clf = BilevelClassifier(local_steps=50, global_steps=300)
        clf.fit(X, y)
        walls, engines = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            clf.fit(X, y)
            walls.append(time.perf_counter() - start)
            engines.append(sum(p["seconds"] for p in clf.history_))
        wall, engine = statistics.median(walls), statistics.median(engines)
        print(
            f"{n:>7} × {d:<4} fit {wall * 1e3:9.1f} ms   phases {engine * 1e3:9.1f} ms   "
            f"over: {(wall / engine - 1) * 100:5.1f} %"
        )


if __name__ == "__main__":
    main()
