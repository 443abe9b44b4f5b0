"""`BilevelClassifier`: the engine's two-level run as a scikit-learn classifier."""

import json

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import _native


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
    class_weight : {"balanced"}, optional
        Weigh each output's positives by negatives ÷ positives of the training rows.
    random_state : int, optional
        Seed of the shuffles (minibatches, the validation split); default 0.
    device : {"gpu", "cpu"}
        The wgpu adapter (chosen by wgpu's conventions, e.g. ``WGPU_ADAPTER_NAME``) or the
        CPU reference.

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
        random_state=None,
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
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _options(self):
        """The run's options as the engine takes them (JSON)."""
        if self.class_weight not in (None, "balanced"):
            raise ValueError(
                f"class_weight={self.class_weight!r}: only None and 'balanced' are supported"
            )
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state={self.random_state!r}: give an int seed or None")
        run = {
            "local_optimizer": self.local_optimizer,
            "local_params": self.local_params,
            "local_lr": self.local_lr,
            "local_momentum": self.local_momentum,
            "local_dampening": self.local_dampening,
            "local_nesterov": bool(self.local_nesterov),
            "local_weight_decay": self.local_weight_decay,
            "local_steps": self.local_steps,
            "global_optimizer": self.global_optimizer,
            "global_lr": self.global_lr,
            "global_betas": None if self.global_betas is None else list(self.global_betas),
            "global_eps": self.global_eps,
            "global_weight_decay": self.global_weight_decay,
            "global_amsgrad": bool(self.global_amsgrad),
            "global_steps": self.global_steps,
            "batch_size": self.batch_size,
            "seed": 0 if self.random_state is None else int(self.random_state),
            "tol": self.tol,
            "check_every": self.check_every,
            "patience": self.patience,
        }
        pos_weight = None if self.pos_weight is None else [float(w) for w in np.ravel(self.pos_weight)]
        return json.dumps(
            {
                "run": run,
                "validation_fraction": self.validation_fraction,
                "pos_weight": pos_weight,
                "balance": self.class_weight == "balanced",
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

    def fit(self, X, y):
        """Trains on ``X`` (n_samples × n_features) and ``y``; returns ``self``."""
        X, y = validate_data(
            self, X, y, dtype=[np.float32, np.float64], multi_output=True, y_numeric=False
        )
        targets = self._targets(y)
        options = self._options()
        params, history = _native.fit(np.ascontiguousarray(X, dtype=np.float32), targets, options)
        outputs, features = targets.shape[1], X.shape[1]
        self.coef_ = params[: outputs * features].reshape(outputs, features)
        self.intercept_ = params[outputs * features :]
        self.history_ = json.loads(history)
        self.n_iter_ = np.array([sum(phase["steps"] for phase in self.history_)])
        return self

    def decision_function(self, X):
        """The logits X·Wᵀ + b: shape (n_samples,) for binary ``y``, else one column per
        output."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        z = X.astype(np.float64) @ self.coef_.T.astype(np.float64) + self.intercept_
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
