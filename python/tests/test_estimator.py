"""BilevelClassifier against the command line (bit for bit), scikit-learn's LogisticRegression,
and scikit-learn's conventions: targets, errors, pickling, pipelines and search."""

import json
import logging
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as scipy_sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn.utils.estimator_checks import parametrize_with_checks

import bilevel
from bilevel import BilevelClassifier
from bilevel import load as bilevel_load

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def load_csv(name):
    """A test data set's features (float32) and last column (the label)."""
    table = np.loadtxt(DATA / name, delimiter=",", skiprows=1)
    return table[:, :-1].astype(np.float32), table[:, -1]


def breast_cancer():
    """scikit-learn's breast-cancer data, standardised (float32)."""
    X, y = load_csv("breast_cancer.csv")
    return StandardScaler().fit_transform(X).astype(np.float32), y.astype(int)


def read_safetensors(path):
    """The tensors of a safetensors file (all f32 here), by name."""
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    data = raw[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def cli():
    """The command line built beside the package (BILEVEL_BIN, or target/debug/bilevel)."""
    path = Path(os.environ.get("BILEVEL_BIN", ROOT / "target" / "debug" / "bilevel"))
    if not path.exists():
        pytest.fail(f"{path} not found: build it with `cargo build` (or set BILEVEL_BIN)")
    return path


@pytest.mark.parametrize("standardize", [False, True])
def test_coefficients_equal_the_command_lines_bit_for_bit(tmp_path, standardize):
    X, y = breast_cancer()
    # Unstandardised features for the standardising run: it standardises them itself.
    X = X * 3.0 + 1.0 if standardize else X
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y.astype(np.float32))
    flags = ["--local-steps", "20", "--global-steps", "60", "--global-lr", "0.1", "--seed", "3"]
    flags += ["--validation", "0.2", "--batch-size", "128"]
    flags += ["--standardize"] if standardize else []
    model = tmp_path / "model.safetensors"
    subprocess.run(
        [cli(), "train", tmp_path / "X.npy", "--y", tmp_path / "y.npy", *flags, "-o", model],
        check=True,
        capture_output=True,
    )
    want = read_safetensors(model)
    clf = BilevelClassifier(
        local_steps=20,
        global_steps=60,
        global_lr=0.1,
        random_state=3,
        validation_fraction=0.2,
        batch_size=128,
        standardize=standardize,
    ).fit(X, y)
    assert clf.coef_.dtype == np.float32
    np.testing.assert_array_equal(clf.coef_, want["weight"])
    np.testing.assert_array_equal(clf.intercept_, want["bias"])
    # Both phases ran and reported a validation loss at their checks.
    assert [p["name"] for p in clf.history_] == ["local", "global"]
    assert clf.n_iter_.tolist() == [80]
    assert all(c["val_loss"] is not None for c in clf.history_[1]["checks"])
    # Predictions standardise X as `bilevel predict` does.
    cli_p = predict_with_cli(model, tmp_path / "X.npy")
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], cli_p[:, 0], rtol=1e-4, atol=1e-6)


def test_binary_log_loss_near_logistic_regression():
    X, y = breast_cancer()
    reference = LogisticRegression(C=1e4, max_iter=10_000).fit(X, y)
    want = log_loss(y, reference.predict_proba(X))
    clf = BilevelClassifier(global_steps=3000, global_lr=0.2).fit(X, y)
    got = log_loss(y, clf.predict_proba(X))
    assert got <= want * 1.02 + 1e-3, f"bilevel {got:.5f} against LogisticRegression {want:.5f}"
    assert clf.score(X, y) >= reference.score(X, y) - 0.01
    assert clf.predict(X).dtype == y.dtype
    assert clf.predict_proba(X).shape == (len(y), 2)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)


def test_multiclass_accuracy_near_logistic_regression():
    X, y = load_csv("digits.csv")
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    reference = LogisticRegression(max_iter=5_000).fit(X_train, y_train)
    clf = BilevelClassifier(global_steps=600, global_lr=0.05).fit(X_train, y_train)
    assert clf.coef_.shape == (10, 64)
    np.testing.assert_array_equal(clf.classes_, np.arange(10.0))
    got, want = clf.score(X_test, y_test), reference.score(X_test, y_test)
    assert got >= want - 0.01, f"bilevel {got:.4f} against LogisticRegression {want:.4f}"
    assert set(np.unique(clf.predict(X_test))) <= set(clf.classes_)


def test_multilabel_targets_train_one_output_each():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5]).astype(int)
    clf = BilevelClassifier(global_steps=300, global_lr=0.1).fit(X, Y)
    assert clf.coef_.shape == (3, 8)
    assert clf.predict(X).shape == Y.shape
    assert clf.predict_proba(X).shape == Y.shape
    assert (clf.predict(X) == Y).mean() > 0.9


def test_sparse_input_trains_as_sparse_data_like_dense():
    X, y = load_csv("digits.csv")
    X = X / 16.0
    options = dict(local_steps=10, global_steps=60)
    dense = BilevelClassifier(**options).fit(X, y)
    for layout in ("csr", "csc"):
        sparse = BilevelClassifier(**options).fit(scipy_sparse.csr_matrix(X).asformat(layout), y)
        # The sums run in other orders: close, not equal.
        np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(
            sparse.predict(scipy_sparse.csr_matrix(X)), sparse.predict(X)
        )


def test_cpu_reference_and_gpu_agree():
    X, y = breast_cancer()
    options = dict(local_steps=10, global_steps=40)
    gpu = BilevelClassifier(**options).fit(X, y)
    cpu = BilevelClassifier(device="cpu", **options).fit(X, y)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y), "NaN"),
        (lambda X, y: (X, np.linspace(0, 1, len(y))), "Unknown label type"),
        (lambda X, y: (X, np.zeros(len(y), dtype=int)), "at least 2 classes"),
        (lambda X, y: (X[:, 0], y), "2D array"),
        (lambda X, y: (X, y[:-1]), "inconsistent numbers of samples"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    X, y = change(*breast_cancer())
    with pytest.raises(ValueError, match=message):
        BilevelClassifier(global_steps=5).fit(X, y)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(device="no such adapter"), "device 'no such adapter': no adapter's name"),
        (dict(global_optimizer="lbfgs"), "lbfgs"),
        (dict(local_params="features:9..3"), "feature range 9..3"),
        (dict(class_weight="even"), "class_weight"),
        (dict(class_weight={0: -1.0}), "positive"),
        (dict(class_weight="balanced", pos_weight=[2.0]), "not both"),
    ],
)
def test_bad_options_raise_value_error(options, message):
    X, y = breast_cancer()
    with pytest.raises(ValueError, match=message):
        BilevelClassifier(global_steps=5, **options).fit(X, y)


def test_pickled_estimator_predicts_the_same():
    X, y = breast_cancer()
    clf = BilevelClassifier(global_steps=50).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.decision_function(X), clf.decision_function(X))


def test_pipeline_in_a_grid_search_and_repeatable_cross_validation():
    X, y = load_csv("breast_cancer.csv")
    y = y.astype(int)
    pipeline = make_pipeline(StandardScaler(), BilevelClassifier(local_steps=10, global_steps=60))
    search = GridSearchCV(pipeline, {"bilevelclassifier__global_lr": [0.01, 0.1]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["bilevelclassifier__global_lr"] in (0.01, 0.1)
    assert search.best_score_ > 0.9
    first = cross_val_score(pipeline, X, y, cv=3)
    second = cross_val_score(pipeline, X, y, cv=3)
    np.testing.assert_array_equal(first, second)


# Row weights other than uniform are refused (the engine weighs outputs, not rows): the checks
# that fit with other weights fail on that documented ValueError.
ROW_WEIGHT_CHECKS = {
    name: "sample_weight other than uniform is refused with a ValueError (documented)"
    for name in [
        "check_sample_weight_equivalence_on_dense_data",
        "check_sample_weight_equivalence_on_sparse_data",
        "check_sample_weights_not_overwritten",
        "check_classifiers_one_label_sample_weights",
    ]
}


@parametrize_with_checks(
    [BilevelClassifier(local_steps=10, global_steps=100)],
    expected_failed_checks=lambda estimator: ROW_WEIGHT_CHECKS,
    xfail_strict=True,
)
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def test_sample_weights_uniform_or_a_clear_error():
    X, y = breast_cancer()
    plain = BilevelClassifier(global_steps=30).fit(X, y)
    uniform = BilevelClassifier(global_steps=30).fit(X, y, sample_weight=np.full(len(y), 2.0))
    np.testing.assert_array_equal(uniform.coef_, plain.coef_)
    weights = np.ones(len(y))
    weights[0] = 3.0
    with pytest.raises(ValueError, match="only uniform positive weights"):
        BilevelClassifier(global_steps=30).fit(X, y, sample_weight=weights)
    with pytest.raises(ValueError, match="sample_weight"):
        BilevelClassifier(global_steps=30).fit(X, y, sample_weight=np.ones(3))


def test_class_weights_move_the_decision():
    X, y = breast_cancer()
    plain = BilevelClassifier(global_steps=100).fit(X, y)
    heavy = BilevelClassifier(global_steps=100, class_weight={0: 1.0, 1: 50.0}).fit(X, y)
    # Weighing the positives up predicts more of them, and "balanced" is negatives/positives.
    assert heavy.predict(X).sum() > plain.predict(X).sum()
    assert heavy._pos_weight(None) == [50.0]


def predict_with_cli(model, data):
    """``bilevel predict``'s probabilities (one column per output)."""
    out = subprocess.run([cli(), "predict", model, data], check=True, capture_output=True)
    return np.loadtxt(out.stdout.decode().splitlines()[1:], delimiter=",", ndmin=2)


def test_saved_models_are_the_command_lines_and_load_back(tmp_path):
    import pandas as pd

    X, y = breast_cancer()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    labels = np.where(y == 1, "malignant", "benign")
    clf = BilevelClassifier(global_steps=50, class_weight={"benign": 1.0, "malignant": 2.0})
    clf.fit(frame, labels)
    path = tmp_path / "model.safetensors"
    clf.save(path)
    # The command line reads it: the same probabilities (its logits are f32 on the GPU).
    np.save(tmp_path / "X.npy", X)
    cli_p = predict_with_cli(path, tmp_path / "X.npy")
    np.testing.assert_allclose(cli_p[:, 0], clf.predict_proba(frame)[:, 1], rtol=1e-5, atol=1e-6)
    again = bilevel_load(path)
    assert again.get_params() == clf.get_params()
    np.testing.assert_array_equal(again.classes_, clf.classes_)
    np.testing.assert_array_equal(again.feature_names_in_, clf.feature_names_in_)
    np.testing.assert_array_equal(again.predict(frame), clf.predict(frame))
    tensors = read_safetensors(path)
    np.testing.assert_array_equal(tensors["weight"], clf.coef_)


def test_command_line_models_load_with_their_standardisation(tmp_path):
    path = tmp_path / "model.safetensors"
    subprocess.run(
        [cli(), "train", DATA / "breast_cancer.csv", "--standardize", "--global-steps", "50",
         "-o", path],
        check=True,
        capture_output=True,
    )
    clf = bilevel_load(path)
    X, y = load_csv("breast_cancer.csv")
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    cli_p = predict_with_cli(path, DATA / "breast_cancer.csv")
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], cli_p[:, 0], rtol=1e-4, atol=1e-6)
    assert clf.score(X, y.astype(int)) > 0.95


INTERRUPTED_FIT = """
import os, signal, sys, threading, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_estimator import breast_cancer
from bilevel import BilevelClassifier

X, y = breast_cancer()
sent = []
def interrupt():
    time.sleep(1.5)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt).start()
clf = BilevelClassifier(global_steps=10**8)
try:
    clf.fit(X, y)
    print("finished")
except KeyboardInterrupt:
    print("interrupted", time.monotonic() - sent[0], hasattr(clf, "coef_"))
# A refit on other labels and features, interrupted: the first fit stays whole.
first = BilevelClassifier(global_steps=5).fit(X, y)
coef, classes = first.coef_.copy(), first.classes_.copy()
threading.Thread(target=interrupt).start()
try:
    first.set_params(global_steps=10**8).fit(X[:, :5], np.where(y == 1, "m", "b"))
except KeyboardInterrupt:
    kept = (first.coef_ == coef).all() and (first.classes_ == classes).all()
    print("kept" if kept and first.n_features_in_ == X.shape[1] else "changed")
"""


def test_ctrl_c_interrupts_training_within_a_second():
    import sys

    script = INTERRUPTED_FIT.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    words = out.stdout.decode().split()
    assert words[:1] == ["interrupted"], out.stdout.decode() + out.stderr.decode()
    assert float(words[1]) < 1.0, f"KeyboardInterrupt {words[1]} s after the signal"
    assert words[2] == "False", "the estimator must stay unfitted"
    assert words[3:] == ["kept"], "an interrupted refit must keep the previous fit"


def test_devices_and_the_self_check():
    adapters = bilevel.devices()
    assert sum(a["chosen"] for a in adapters) == 1, adapters
    chosen = next(a for a in adapters if a["chosen"])
    assert chosen["name"] and chosen["max_storage_binding"] > 0 and chosen["plans"]
    # An adapter by part of its name: the same run as wgpu's own choice here.
    part = chosen["name"].split()[0]
    named = BilevelClassifier(global_steps=20, device=part).fit(*breast_cancer())
    default = BilevelClassifier(global_steps=20).fit(*breast_cancer())
    np.testing.assert_array_equal(named.coef_, default.coef_)
    report = bilevel.check()
    assert report["passed"], [c for c in report["checks"] if not c["pass"]]
    assert chosen["name"] in report["adapter"]
    assert any("sparse" in c["what"] for c in report["checks"])
    assert len(report["checks"]) > 20


def test_progress_goes_to_logging_and_with_verbose_to_stderr(caplog, capsys):
    X, y = breast_cancer()
    with caplog.at_level(logging.DEBUG, logger="bilevel"):
        BilevelClassifier(local_steps=10, global_steps=20, check_every=5).fit(X, y)
    messages = [r.getMessage() for r in caplog.records if r.name == "bilevel"]
    assert messages[0] == "phase local: at most 10 steps", messages
    assert any(m.startswith("phase global step 20: loss ") for m in messages), messages
    assert messages[-1].startswith("phase global: 20 steps, loss "), messages
    assert capsys.readouterr().err == ""
    BilevelClassifier(local_steps=10, global_steps=20, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "global" in err and "20/20" in err, err


def test_breast_cancer_csv_gives_the_command_lines_coefficients(tmp_path):
    # The CSV as both read it (Rust's f32 parse against numpy's, then standardised by the
    # same library code): the same bits.
    X, y = load_csv("breast_cancer.csv")
    model = tmp_path / "model.safetensors"
    flags = ["--standardize", "--local-steps", "30", "--global-steps", "100", "--balance"]
    subprocess.run(
        [cli(), "train", DATA / "breast_cancer.csv", *flags, "-o", model],
        check=True,
        capture_output=True,
    )
    want = read_safetensors(model)
    clf = BilevelClassifier(
        local_steps=30, global_steps=100, class_weight="balanced", standardize=True
    ).fit(X, y.astype(int))
    np.testing.assert_array_equal(clf.coef_, want["weight"])
    np.testing.assert_array_equal(clf.intercept_, want["bias"])


def test_float32_c_order_input_is_read_in_place(monkeypatch):
    from bilevel import _native

    X, y = breast_cancer()
    seen = []
    fit = _native.fit

    def spy(x, *args):
        seen.append(x)
        return fit(x, *args)

    monkeypatch.setattr(_native, "fit", spy)
    before = _native.copied_bytes()
    in_place = BilevelClassifier(global_steps=20).fit(X, y)
    assert np.shares_memory(seen[-1], X)
    assert _native.copied_bytes() == before, "float32 C-order X was copied"
    # Another layout is converted once (by numpy), still not by the engine: the same bits.
    other = BilevelClassifier(global_steps=20).fit(np.asfortranarray(X), y)
    assert not np.shares_memory(seen[-1], X)
    assert _native.copied_bytes() == before
    np.testing.assert_array_equal(other.coef_, in_place.coef_)
    # Standardising changes the values: the engine copies them first, the caller's stay.
    kept = X.copy()
    BilevelClassifier(global_steps=20, standardize=True).fit(X, y)
    assert _native.copied_bytes() == before + X.nbytes
    np.testing.assert_array_equal(X, kept)
