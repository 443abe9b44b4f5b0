"""`BilevelClassifierCV`: a grid of `BilevelClassifier` configurations cross-validated in one
pass over the data, as ``bilevel sweep`` trains them."""

import json

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import ParameterGrid
from sklearn.utils.validation import validate_data

from . import _native
from .estimator import BilevelClassifier, _csr_arrays

_SCORINGS = ("neg_log_loss", "roc_auc", "accuracy")


class BilevelClassifierCV(BilevelClassifier):
    """:class:`BilevelClassifier` with its parameters chosen by k-fold cross-validation.

    Every configuration of ``param_grid`` (a dict of parameter → values, or a list of such
    dicts, as ``GridSearchCV`` takes it) is trained on every fold — all of them together, in
    lockstep runs over the same batches, as ``bilevel sweep`` trains them — and scored on the
    rows its fold holds out; the best (highest mean score) is then trained on all rows
    (``refit``) and this estimator predicts with it. The other parameters are
    :class:`BilevelClassifier`'s and are the base of every configuration; ``standardize`` and
    ``device`` cannot vary over the grid, and ``validation_fraction`` is not taken (the folds
    validate).

    Parameters
    ----------
    param_grid : dict or list of dict
        The grid, over :class:`BilevelClassifier`'s parameters.
    cv : int
        Folds, stratified per output and seeded by ``random_state`` (at least 2).
    scoring : {"neg_log_loss", "roc_auc", "accuracy"}
        What ranks the configurations: the held-out rows' mean log-loss (negated, so higher
        is better, as scikit-learn's scorers), ROC-AUC (macro over outputs) or accuracy.
    refit : bool
        Train the best configuration on all rows (else only the search is done and this
        estimator cannot predict).

    Attributes
    ----------
    cv_results_ : dict
        ``params``, ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
        ``split{k}_test_score`` and ``mean_steps``, one entry per configuration, as
        ``GridSearchCV``'s.
    best_index_, best_params_, best_score_ : the best configuration
    best_estimator_ : BilevelClassifier: the best configuration trained on all rows
    fold_of_row_ : ndarray: each training row's fold
    coef_, intercept_, classes_, … : the refitted best estimator's
    """

    # scikit-learn reads an estimator's parameters from its __init__'s signature (no
    # **kwargs), so BilevelClassifier's are repeated here.
    def __init__(
        self,
        *,
        param_grid=None,
        cv=5,
        scoring="neg_log_loss",
        refit=True,
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
        super().__init__(
            local_optimizer=local_optimizer,
            local_params=local_params,
            local_lr=local_lr,
            local_momentum=local_momentum,
            local_dampening=local_dampening,
            local_nesterov=local_nesterov,
            local_weight_decay=local_weight_decay,
            local_steps=local_steps,
            global_optimizer=global_optimizer,
            global_lr=global_lr,
            global_betas=global_betas,
            global_eps=global_eps,
            global_weight_decay=global_weight_decay,
            global_amsgrad=global_amsgrad,
            global_steps=global_steps,
            batch_size=batch_size,
            tol=tol,
            check_every=check_every,
            patience=patience,
            validation_fraction=validation_fraction,
            pos_weight=pos_weight,
            class_weight=class_weight,
            standardize=standardize,
            random_state=random_state,
            verbose=verbose,
            device=device,
        )
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.refit = refit

    def _base(self):
        """A :class:`BilevelClassifier` with this estimator's own parameters."""
        names = BilevelClassifier().get_params()
        return BilevelClassifier(**{k: v for k, v in self.get_params().items() if k in names})

    def _fit(self, X, y, sample_weight):
        if self.scoring not in _SCORINGS:
            raise ValueError(f"scoring={self.scoring!r}: give one of {', '.join(_SCORINGS)}")
        if not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ValueError(f"cv={self.cv!r}: give the number of folds, at least 2")
        if self.validation_fraction is not None:
            raise ValueError("validation_fraction: the folds validate a cross-validation")
        grid = list(ParameterGrid(self.param_grid if self.param_grid is not None else {}))
        base = self._base()
        unknown = {k for g in grid for k in g} - set(base.get_params())
        if unknown:
            raise ValueError(f"param_grid: {sorted(unknown)} are not BilevelClassifier parameters")
        if any(k in g for g in grid for k in ("standardize", "device", "validation_fraction")):
            raise ValueError("param_grid: standardize, device and validation_fraction cannot vary")
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
            raise ValueError("sample_weight: BilevelClassifierCV takes none")
        targets = self._targets(y)
        configs = []
        for params in grid:
            one = clone(base).set_params(**params)
            one.classes_, one._kind = self.classes_, self._kind
            configs.append(json.loads(one._options(targets)))
        if sp.issparse(X):
            folds, logits, histories, standardizer = _native.fit_sweep_sparse(
                *_csr_arrays(X), targets, json.dumps(configs), int(self.cv)
            )
        else:
            X32 = np.ascontiguousarray(X, dtype=np.float32)
            folds, logits, histories, standardizer = _native.fit_sweep(
                X32, targets, json.dumps(configs), int(self.cv)
            )
        histories = json.loads(histories)
        outputs = targets.shape[1]
        scores = np.empty((len(grid), self.cv))
        for c in range(len(grid)):
            for f in range(self.cv):
                m = c * self.cv + f
                held = folds == f
                z = logits[held, m * outputs : (m + 1) * outputs]
                scores[c, f] = self._score(z, targets[held], y[held] if np.ndim(y) == 1 else None)
        mean = scores.mean(axis=1)
        order = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")
        rank = np.empty(len(grid), dtype=int)
        rank[order] = np.arange(1, len(grid) + 1)
        self.cv_results_ = {
            "params": grid,
            "mean_test_score": mean,
            "std_test_score": scores.std(axis=1),
            "rank_test_score": rank,
            "mean_steps": np.array(
                [
                    np.mean([sum(p["steps"] for p in histories[c * self.cv + f]) for f in range(self.cv)])
                    for c in range(len(grid))
                ]
            ),
        }
        for f in range(self.cv):
            self.cv_results_[f"split{f}_test_score"] = scores[:, f]
        self.cv_histories_ = histories
        self.fold_of_row_ = folds
        self.best_index_ = int(order[0])
        self.best_params_ = grid[self.best_index_]
        self.best_score_ = float(mean[self.best_index_])
        if self.refit:
            best = clone(base).set_params(**self.best_params_).fit(X, y)
            self.best_estimator_ = best
            for name in ("coef_", "intercept_", "history_", "n_iter_", "_standardizer"):
                setattr(self, name, getattr(best, name))
        return self

    def _score(self, z, targets, labels):
        """The held-out rows' score under ``scoring`` from their logits ``z``."""
        z = z.astype(np.float64)
        if self.scoring == "neg_log_loss":
            loss = np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))
            return -float(loss.mean())
        if self.scoring == "roc_auc":
            try:
                return float(roc_auc_score(targets, expit(z), average="macro"))
            except ValueError:
                return float("nan")
        if self._kind == "multiclass":
            return float(np.mean(np.argmax(z, axis=1) == np.argmax(targets, axis=1)))
        return float(np.mean((z > 0) == (targets > 0.5)))
