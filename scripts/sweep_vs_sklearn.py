"""`bilevel sweep` against scikit-learn's GridSearchCV(LogisticRegression()) on the same 5 × 4
grid and the same 5 folds: wall clock and the best held-out log-loss (BENCHMARKS.md, "Sweeps").

    python scripts/sweep_vs_sklearn.py [--rows 200000] [--features 256] [--bilevel PATH]

The grids correspond: LogisticRegression's C·Σ loss + ½|w|² has the minimiser of the mean loss
+ |w|² / (2·n·C), which is Adam's L2 weight decay 1 / (n·C) on a fold's n training rows
(bilevel also decays the bias), and class_weight {1: w} weighs positives as pos-weight w.
GridSearchCV runs on 2 CPU threads (n_jobs=2), bilevel on its default adapter.
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
CS = [0.01, 0.1, 1.0, 10.0, 100.0]
WEIGHTS = [1.0, 2.0, 4.0, 8.0]
FOLDS = 5


def sweep(cli, data, extra, n, report):
    decays = ",".join(f"{1.0 / (n * (FOLDS - 1) / FOLDS * c):.6g}" for c in CS)
    weights = ",".join(f"{w:g}" for w in WEIGHTS)
    args = [str(cli), "sweep", str(data), "--folds", str(FOLDS), "--local-steps", "0"]
    args += extra + ["--grid", f"global-weight-decay={decays}", "--grid", f"pos-weight={weights}"]
    args += ["--report", str(report)]
    start = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    result = json.loads(Path(report).read_text())
    best = result["configurations"][result["best"]]
    return seconds, best["settings"], best["metric_mean"], result["fold_of_row"], run.stderr


def grid_search(X, y, folds, standardize):
    model = LogisticRegression(max_iter=2000)
    estimator = make_pipeline(StandardScaler(), model) if standardize else model
    prefix = "logisticregression__" if standardize else ""
    grid = {
        prefix + "C": CS,
        prefix + "class_weight": [{0: 1.0, 1: w} for w in WEIGHTS],
    }
    start = time.perf_counter()
    search = GridSearchCV(
        estimator, grid, scoring="neg_log_loss", cv=PredefinedSplit(folds), n_jobs=2
    ).fit(X, y)
    seconds = time.perf_counter() - start
    params = search.best_params_
    return seconds, params, -search.best_score_


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--bilevel", default=str(ROOT / "target" / "debug" / "bilevel"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = tmp / "synthetic.libsvm"
        spec = f"{args.rows},{args.features},1,7"
        subprocess.run(
            [args.bilevel, "generate", "--synthetic", spec, "-o", str(synthetic)], check=True
        )
        table = np.loadtxt(ROOT / "tests" / "data" / "breast_cancer.csv", delimiter=",", skiprows=1)
        X_syn, y_syn = load_svmlight_file(str(synthetic), n_features=args.features)
        cases = [
            (
                "breast cancer (569 × 30)",
                ROOT / "tests" / "data" / "breast_cancer.csv",
                ["--standardize", "--global-lr", "0.05", "--global-steps", "600"],
                table[:, :-1],
                table[:, -1].astype(int),
                True,
            ),
            (
                f"synthetic ({args.rows:,} × {args.features})",
                synthetic,
                ["--global-lr", "0.05", "--global-steps", "200"],
                X_syn.toarray(),
                (y_syn > 0).astype(int),
                False,
            ),
        ]
        print(f"{'data':<28} {'tool':<12} {'seconds':>9}  {'best held-out log-loss':>22}  best")
        for name, path, extra, X, y, standardize in cases:
            secs, settings, loss, folds, log = sweep(
                args.bilevel, path, extra, len(y), tmp / "report.json"
            )
            print(f"{name:<28} {'bilevel':<12} {secs:>9.1f}  {loss:>22.5f}  {settings}")
            print("   ", log.strip().splitlines()[0])
            secs, params, loss = grid_search(X, y, np.array(folds), standardize)
            print(f"{name:<28} {'scikit-learn':<12} {secs:>9.1f}  {loss:>22.5f}  {params}")


if __name__ == "__main__":
    main()
