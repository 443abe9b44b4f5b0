"""`bilevel sweep` against scikit-learn's GridSearchCV: the same best regularisation."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CLI = Path(os.environ.get("BILEVEL_BIN", ROOT / "target" / "debug" / "bilevel"))

# LogisticRegression's C against Adam's L2 weight decay on the mean loss: C·Σ loss + ½|w|²
# has the minimiser of mean loss + |w|² / (2·n·C), which is weight decay 1 / (n·C) for the
# n training rows of a fold (bilevel also decays the bias; scikit-learn does not).
CS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
FOLDS = 5


def test_sweep_picks_the_regularisation_grid_search_picks(tmp_path):
    table = np.loadtxt(DATA / "breast_cancer.csv", delimiter=",", skiprows=1)
    X, y = table[:, :-1], table[:, -1].astype(int)
    n_train = len(y) * (FOLDS - 1) / FOLDS
    decays = [1.0 / (n_train * c) for c in CS]

    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000)),
        {"logisticregression__C": CS},
        scoring="neg_log_loss",
        cv=StratifiedKFold(FOLDS, shuffle=True, random_state=0),
    ).fit(X, y)
    sklearn_best = CS.index(search.best_params_["logisticregression__C"])

    report = tmp_path / "sweep.json"
    run = subprocess.run(
        [
            str(CLI),
            "sweep",
            str(DATA / "breast_cancer.csv"),
            "--standardize",
            "--backend",
            "cpu",
            "--local-steps",
            "0",
            "--global-lr",
            "0.05",
            "--global-steps",
            "600",
            "--folds",
            str(FOLDS),
            "--grid",
            "global-weight-decay=" + ",".join(f"{w:.6g}" for w in decays),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(report.read_text())
    bilevel_best = result["best"]
    means = [c["metric_mean"] for c in result["configurations"]]
    sklearn_means = -search.cv_results_["mean_test_score"]
    assert abs(bilevel_best - sklearn_best) <= 1, (
        f"bilevel picks C={CS[bilevel_best]} (held-out log-loss {means}), "
        f"GridSearchCV C={CS[sklearn_best]} ({list(sklearn_means)})"
    )
    # And the best held-out log-loss is comparable.
    assert abs(min(means) - min(sklearn_means)) < 0.02, (min(means), min(sklearn_means))
