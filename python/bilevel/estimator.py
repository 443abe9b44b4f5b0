"""`BilevelClassifier`: the engine's two-level run as a scikit-learn classifier."""

import json
import os

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from . import _native
from .progress import Progress


def _csr_arrays(X):
    """A scipy sparse matrix as the native module takes it: its shape and canonical CSR
    arrays (sorted, no duplicates; 64-bit indices, f32 values)."""
    X = X.tocsr()
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return (
        X.shape,
        X.indptr.astype(np.int64, copy=False),
        X.indices.astype(np.int64, copy=False),
        X.data.astype(np.float32, copy=False),
    )


# The parameters that are the engine's two-level run options (`config::TwoLevel`) as named.
_RUN_OPTIONS = (
    "local_optimizer",
    "local_params",
    "local_lr",
    "local_momentum",
    "local_dampening",
    "local_weight_decay",
    "local_steps",
    "global_optimizer",
    "global_lr",
    "global_betas",
    "global_eps",
    "global_weight_decay",
    "global_steps",
    "batch_size",
    "tol",
    "check_every",
    "patience",
)


class BilevelClassifier(ClassifierMixin, BaseEstimator):
    """Logistic regression (one output per class or label) trained in two levels.

    A *local* phase updates a subset of the parameters (by default SGD on the biases), then a
    *global* phase updates all of them (by default Adam), starting where the local phase
    ended — on the GPU through wgpu, or on the CPU reference. The parameters carry the names
    of ``bilevel train``'s options in snake case; ``None`` takes the engine's default, and the
    same options give the same coefficients as the command line, bit for bit.

    Binary ``y`` trains one output; multi-class ``y`` one output per class (one-vs-rest,
    ``predict`` takes the most probable); a 2-D 0/1 indicator matrix one output per label,
    trained jointly (multi-label).

    Parameters
    ----------
    local_optimizer, global_optimizer : {"sgd", "adam", "adamw"}
        The phases' optimizers (``torch.optim``'s update rules).
    local_params : str
        What the local phase trains: ``all``, ``bias``, ``weights``, ``features:A..B`` or
        ``outputs:A..B``.
    local_lr, local_momentum, local_dampening, local_nesterov, local_weight_decay : optional
        The local phase's SGD (or Adam) settings.
    local_steps, global_steps : int
        Each phase's most steps (0 skips the phase).
    global_lr, global_betas, global_eps, global_weight_decay, global_amsgrad : optional
        The global phase's Adam (or SGD) settings.
    batch_size : int, optional
        Minibatch size of both phases (default: full batch).
    tol : float, optional
        Stop a phase once the relative loss change stays below this for 3 checks.
    check_every : int, optional
        Steps between checks (default 10).
    patience : int, optional
        Early stopping of the global phase after this many checks without a better
        validation loss (needs ``validation_fraction``).
    validation_fraction : float, optional
        Rows held out (shuffled by ``random_state``) to report a validation loss on.
    pos_weight : array of float, optional
        PyTorch's ``pos_weight``: one factor on the positives' loss per output.
    class_weight : "balanced" or dict, optional
        ``"balanced"``: each output's positives weighed by its negatives ÷ positives in the
        training rows (``bilevel train --balance``). A dict ``{class: weight}`` (binary and
        multi-class ``y``): each output's positives weighed by their class's weight over the
        mean weight of its negatives — for binary ``y`` exactly the class-weighted loss up to
        a constant factor; for one-vs-rest outputs the negatives' classes share one weight.
    standardize : bool
        Z-score the features with the training rows' statistics, as ``bilevel train
        --standardize`` (a scipy.sparse X is scaled, not centred). ``coef_`` and ``intercept_``
        then apply to the standardised features; predictions standardise X first.
    random_state : int, optional
        Seed of the shuffles (minibatches, the validation split); default 0.
    verbose : int
        0: progress only through the ``bilevel`` logger (phases at INFO, checks at DEBUG); 1:
        also a progress bar per phase on stderr (tqdm's where it is installed).
    device : "gpu", "cpu" or str
        ``"gpu"``: the wgpu adapter wgpu's conventions choose (``WGPU_ADAPTER_NAME``,
        ``WGPU_POWER_PREF``); ``"cpu"``: the CPU reference (f64); another string: the first
        adapter whose name contains it (``bilevel.devices()`` lists them).

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_outputs, n_features)
    intercept_ : ndarray of shape (1,) or (n_outputs,)
    classes_ : ndarray: the class labels, or the label indices for multi-label ``y``
    n_features_in_, feature_names_in_ : as scikit-learn sets them
    n_iter_ : ndarray of shape (1,): the steps taken over both phases
    history_ : list of dict: every phase's name, optimizer, steps, checks (step, loss,
        gradient norm, validation loss), stop reason and seconds
    """

    def __init__(
        self,
        *,
        local_optimizer="sgd",
        local_params="bias",
        local_lr=0.1,
        local_momentum=None,
        local_dampening=None,
        local_nesterov=False,
        local_weight_decay=None,
        local_steps=50,
        global_optimizer="adam",
        global_lr=0.05,
        global_betas=None,
        global_eps=None,
        global_weight_decay=None,
        global_amsgrad=False,
        global_steps=300,
        batch_size=None,
        tol=None,
        check_every=None,
        patience=None,
        validation_fraction=None,
        pos_weight=None,
        class_weight=None,
        standardize=False,
        random_state=None,
        verbose=0,
        device="gpu",
    ):
        self.local_optimizer = local_optimizer
        self.local_params = local_params
        self.local_lr = local_lr
        self.local_momentum = local_momentum
        self.local_dampening = local_dampening
        self.local_nesterov = local_nesterov
        self.local_weight_decay = local_weight_decay
        self.local_steps = local_steps
        self.global_optimizer = global_optimizer
        self.global_lr = global_lr
        self.global_betas = global_betas
        self.global_eps = global_eps
        self.global_weight_decay = global_weight_decay
        self.global_amsgrad = global_amsgrad
        self.global_steps = global_steps
        self.batch_size = batch_size
        self.tol = tol
        self.check_every = check_every
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.pos_weight = pos_weight
        self.class_weight = class_weight
        self.standardize = standardize
        self.random_state = random_state
        self.verbose = verbose
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags

    def _pos_weight(self, targets):
        """The outputs' positive weights from ``pos_weight`` or a ``class_weight`` dict."""
        if self.pos_weight is not None:
            if self.class_weight is not None:
                raise ValueError("give pos_weight or class_weight, not both")
            return [float(w) for w in np.ravel(self.pos_weight)]
        if not isinstance(self.class_weight, dict):
            if self.class_weight not in (None, "balanced"):
                raise ValueError(
                    f"class_weight={self.class_weight!r}: give None, 'balanced' or a dict"
                )
            return None
        if self._kind == "multilabel-indicator":
            raise ValueError("class_weight as a dict needs binary or multi-class y; give pos_weight")
        w = np.array([self.class_weight.get(c, 1.0) for c in self.classes_], dtype=np.float64)
        if not np.all(np.isfinite(w) & (w > 0)):
            raise ValueError(f"class_weight={self.class_weight!r}: weights must be positive")
        if self._kind == "binary":
            return [float(w[1] / w[0])]
        counts = targets.sum(axis=0, dtype=np.float64)
        weighed = w * counts
        negatives = (weighed.sum() - weighed) / np.maximum(counts.sum() - counts, 1.0)
        return [float(x) for x in w / np.where(negatives > 0, negatives, w)]

    def _options(self, targets):
        """The run's options as the engine takes them (JSON)."""
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state={self.random_state!r}: give an int seed or None")
        run = {name: _jsonable(getattr(self, name)) for name in _RUN_OPTIONS}
        run["local_nesterov"] = bool(self.local_nesterov)
        run["global_amsgrad"] = bool(self.global_amsgrad)
        run["seed"] = 0 if self.random_state is None else int(self.random_state)
        return json.dumps(
            {
                "run": run,
                "validation_fraction": self.validation_fraction,
                "pos_weight": self._pos_weight(targets),
                "balance": self.class_weight == "balanced",
                "standardize": bool(self.standardize),
                "device": self.device,
            }
        )

    def _targets(self, y):
        """The n×o 0/1 targets of ``y``, setting ``classes_`` and the target kind."""
        if np.ndim(y) == 2 and np.shape(y)[1] == 1:
            y = column_or_1d(y, warn=True)
        kind = type_of_target(y, input_name="y")
        if kind in ("binary", "multiclass"):
            y = np.asarray(y)
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(
                    "BilevelClassifier needs samples of at least 2 classes in the data, but "
                    f"the data contains only one class: {self.classes_[0]!r}"
                )
            if kind == "binary":
                targets = (y == self.classes_[1])[:, None]
            else:
                targets = y[:, None] == self.classes_[None, :]
        elif kind == "multilabel-indicator":
            y = np.asarray(y.toarray() if hasattr(y, "toarray") else y)
            self.classes_ = np.arange(y.shape[1])
            targets = y != 0
        else:
            raise ValueError(
                f"Unknown label type: {kind!r}: BilevelClassifier takes binary, multi-class "
                "or multi-label indicator targets"
            )
        self._kind = "binary" if kind == "binary" else kind
        return np.ascontiguousarray(targets, dtype=np.float32)

    def fit(self, X, y, sample_weight=None):
        """Trains on ``X`` (n_samples × n_features: an array, or a scipy.sparse matrix, which
        trains as sparse data) and ``y``; returns ``self``.

        ``sample_weight``: only uniform weights (which leave the mean loss's minimiser as it
        is) are taken; the engine weighs outputs (``pos_weight``, ``class_weight``), not rows,
        so other weights raise ``ValueError``.

        A fit that fails or is interrupted (Ctrl-C) leaves the estimator as it was: unfitted,
        or with its previous fit."""
        previous = self._fitted_state()
        try:
            return self._fit(X, y, sample_weight)
        except BaseException:
            for name in self._fitted_state():
                delattr(self, name)
            vars(self).update(previous)
            raise

    def _fitted_state(self):
        """The attributes a fit sets."""
        return {
            k: v
            for k, v in vars(self).items()
            if (k.endswith("_") and not k.startswith("__")) or k in ("_kind", "_standardizer")
        }

    def _fit(self, X, y, sample_weight):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            dtype=[np.float32, np.float64],
            multi_output=True,
            y_numeric=False,
        )
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
            if not np.all(weights == weights[0]) or weights[0] <= 0:
                raise ValueError(
                    "sample_weight: only uniform positive weights are supported; the engine "
                    "weighs each output's positives (pos_weight, class_weight), not rows"
                )
        targets = self._targets(y)
        options = self._options(targets)
        if sp.issparse(X):
            with Progress(self.verbose) as progress:
                params, history, standardizer = _native.fit_sparse(
                    *_csr_arrays(X), targets, options, progress
                )
        else:
            X = np.ascontiguousarray(X, dtype=np.float32)
            with Progress(self.verbose) as progress:
                params, history, standardizer = _native.fit(X, targets, options, progress)
        outputs, features = targets.shape[1], X.shape[1]
        self.coef_ = params[: outputs * features].reshape(outputs, features)
        self.intercept_ = params[outputs * features :]
        self.history_ = json.loads(history)
        self._standardizer = standardizer
        self.n_iter_ = np.array([sum(phase["steps"] for phase in self.history_)])
        return self

    def _linear(self):
        """W and b (float64) as they apply to raw inputs: a loaded model's standardisation
        ((x − mean) / std) folded in."""
        weight, bias = self.coef_.astype(np.float64), self.intercept_.astype(np.float64)
        standardizer = getattr(self, "_standardizer", None)
        if standardizer is not None:
            mean, std, centred = standardizer
            weight = weight / np.asarray(std, dtype=np.float64)
            if centred:
                bias = bias - weight @ np.asarray(mean, dtype=np.float64)
        return weight, bias

    def decision_function(self, X):
        """The logits X·Wᵀ + b: shape (n_samples,) for binary ``y``, else one column per
        output."""
        check_is_fitted(self)
        X = validate_data(
            self, X, accept_sparse=["csr", "csc"], dtype=[np.float64, np.float32], reset=False
        )
        weight, bias = self._linear()
        z = np.asarray(X @ weight.T) + bias
        return z[:, 0] if self._kind == "binary" else z

    def predict_proba(self, X):
        """Probabilities: of each class (binary, multi-class: one-vs-rest, normalised) or of
        each label (multi-label)."""
        p = expit(self.decision_function(X))
        if self._kind == "binary":
            return np.column_stack([1.0 - p, p])
        if self._kind == "multiclass":
            return p / p.sum(axis=1, keepdims=True)
        return p

    def predict(self, X):
        """The most probable class, or each label's 0/1 (multi-label)."""
        z = self.decision_function(X)
        if self._kind == "binary":
            return self.classes_[(z > 0).astype(int)]
        if self._kind == "multiclass":
            return self.classes_[np.argmax(z, axis=1)]
        return (z > 0).astype(int)

    def save(self, path):
        """Writes the fitted model to ``path`` as ``bilevel train -o`` does: a safetensors file
        (``weight`` o×d, ``bias`` o) that ``bilevel predict``, :func:`bilevel.load` and
        ``torch.nn.Linear.load_state_dict`` read, with this estimator's parameters, classes
        and feature names in its metadata."""
        check_is_fitted(self)
        params = {k: _jsonable(v) for k, v in self.get_params().items()}
        if isinstance(self.class_weight, dict):
            params["class_weight"] = {"items": [[_jsonable(k), float(v)] for k, v in self.class_weight.items()]}
        names = getattr(self, "feature_names_in_", None)
        config = {
            "data": "python",
            "features": int(self.n_features_in_),
            "outputs": int(self.coef_.shape[0]),
            "feature_names": [] if names is None else [str(n) for n in names],
            "label_names": [str(c) for c in self.classes_],
            "python": {
                "kind": self._kind,
                "classes": _jsonable(self.classes_),
                "params": params,
            },
        }
        _native.save_model(
            os.fspath(path),
            np.ascontiguousarray(self.coef_, dtype=np.float32),
            np.ascontiguousarray(self.intercept_, dtype=np.float32),
            json.dumps(config),
            getattr(self, "_standardizer", None),
        )


def _jsonable(value):
    """``value`` with numpy's scalars and arrays as Python's."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def load(path):
    """A fitted :class:`BilevelClassifier` from a model file written by
    :meth:`BilevelClassifier.save`, by ``bilevel train -o`` (one output: binary with classes
    0 and 1; more: multi-label; its standardisation applied to inputs as ``bilevel predict``
    applies it) or by PyTorch (``weight`` and ``bias``)."""
    weight, bias, config, standardizer = _native.load_model(os.fspath(path))
    config = json.loads(config) if config else {}
    saved = config.get("python")
    clf = BilevelClassifier()
    outputs, features = weight.shape
    if saved:
        params = dict(saved["params"])
        if isinstance(params.get("class_weight"), dict):
            params["class_weight"] = {k: v for k, v in params["class_weight"]["items"]}
        clf.set_params(**params)
        clf._kind = saved["kind"]
        clf.classes_ = np.asarray(saved["classes"])
        if config.get("feature_names"):
            clf.feature_names_in_ = np.asarray(config["feature_names"], dtype=object)
    else:
        clf._kind = "binary" if outputs == 1 else "multilabel-indicator"
        clf.classes_ = np.arange(2) if outputs == 1 else np.arange(outputs)
    clf.coef_, clf.intercept_ = weight, bias
    clf.n_features_in_ = features
    if standardizer is not None:
        clf._standardizer = standardizer
    return clf
