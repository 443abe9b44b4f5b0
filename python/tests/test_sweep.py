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


def test_classifier_cv_runs_the_sweep_and_refits_the_best(tmp_path):
    from bilevel import BilevelClassifier, BilevelClassifierCV

    table = np.loadtxt(DATA / "breast_cancer.csv", delimiter=",", skiprows=1)
    X, y = table[:, :-1].astype(np.float32), table[:, -1].astype(int)
    decays = [0.2, 0.02, 0.002, 0.0002]
    base = dict(local_steps=0, global_lr=0.05, global_steps=300, standardize=True, device="cpu")
    search = BilevelClassifierCV(
        param_grid={"global_weight_decay": decays}, cv=FOLDS, **base
    ).fit(X, y)
    results = search.cv_results_
    assert len(results["params"]) == 4
    assert results["rank_test_score"][search.best_index_] == 1
    assert search.best_score_ == max(results["mean_test_score"])
    assert [len(results[f"split{f}_test_score"]) for f in range(FOLDS)] == [4] * FOLDS

    # The command line's sweep of the same grid: the same folds, the same scores.
    report = tmp_path / "sweep.json"
    args = [str(CLI), "sweep", str(DATA / "breast_cancer.csv"), "--backend", "cpu"]
    args += ["--standardize", "--local-steps", "0", "--global-lr", "0.05", "--global-steps", "300"]
    args += ["--folds", str(FOLDS), "--report", str(report)]
    args += ["--grid", "global-weight-decay=" + ",".join(str(d) for d in decays)]
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    cli = json.loads(report.read_text())
    assert list(search.fold_of_row_) == cli["fold_of_row"]
    assert cli["best"] == search.best_index_
    for c, config in enumerate(cli["configurations"]):
        assert abs(-config["metric_mean"] - results["mean_test_score"][c]) < 1e-6

    # The refit is the best configuration trained on all rows.
    best = BilevelClassifier(**base, **search.best_params_).fit(X, y)
    assert np.array_equal(search.coef_, best.coef_)
    assert np.array_equal(search.predict_proba(X), best.predict_proba(X))
    assert search.score(X, y) > 0.97


def test_classifier_cv_on_the_gpu_matches_the_cpu_reference():
    from bilevel import BilevelClassifierCV

    table = np.loadtxt(DATA / "breast_cancer.csv", delimiter=",", skiprows=1)
    X, y = table[:, :-1].astype(np.float32), table[:, -1].astype(int)
    grid = {"global_lr": [0.02, 0.1], "local_params": ["bias", "features:0..5"]}
    common = dict(param_grid=grid, cv=3, standardize=True, global_steps=60, refit=False)
    gpu = BilevelClassifierCV(**common).fit(X, y)
    cpu = BilevelClassifierCV(**common, device="cpu").fit(X, y)
    np.testing.assert_allclose(
        gpu.cv_results_["mean_test_score"], cpu.cv_results_["mean_test_score"], rtol=1e-4
    )
    assert not hasattr(gpu, "coef_")


def test_classifier_cv_sweeps_sparse_x_as_it_sweeps_dense_x():
    import scipy.sparse as sp

    from bilevel import BilevelClassifierCV

    rng = np.random.default_rng(5)
    X = sp.random(300, 60, density=0.05, format="csr", random_state=6, dtype=np.float32)
    w = rng.normal(size=60)
    y = (X @ w + 0.3 * rng.normal(size=300) > 0).astype(int)
    grid = {"global_lr": [0.02, 0.2], "global_weight_decay": [0.0, 0.01]}
    common = dict(param_grid=grid, cv=3, global_steps=80, local_steps=10, refit=True)
    sparse = BilevelClassifierCV(**common).fit(X, y)
    dense = BilevelClassifierCV(**common).fit(X.toarray(), y)
    # The same folds and models; sparse and dense X step through different kernels, so the
    # scores agree to rounding.
    assert list(sparse.fold_of_row_) == list(dense.fold_of_row_)
    np.testing.assert_allclose(
        sparse.cv_results_["mean_test_score"], dense.cv_results_["mean_test_score"], rtol=1e-4
    )
    assert sparse.best_params_ == dense.best_params_
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X.toarray()), atol=1e-4)


def test_classifier_cv_refuses_bad_searches_clearly():
    import pytest

    from bilevel import BilevelClassifierCV

    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    cases = [
        (dict(scoring="f1"), "scoring"),
        (dict(cv=1), "cv=1"),
        (dict(param_grid={"global_lrr": [0.1]}), "global_lrr"),
        (dict(param_grid={"device": ["cpu", "gpu"]}), "cannot vary"),
        (dict(validation_fraction=0.2), "validation_fraction"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            BilevelClassifierCV(device="cpu", **params).fit(X, y)
