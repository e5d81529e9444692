"""Model selection: fit every (covariance type, K) and keep the best by BIC, AIC or ICL.

Every candidate is a :class:`~gaussmix.GaussianMixture`; a candidate whose
covariance collapsed onto a subspace (the core raises a
:class:`~gaussmix.DegenerateDataWarning` saying so) has an unbounded
likelihood, so, as mclust does, it is reported as singular and never chosen.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from numbers import Integral, Real
from typing import Any, ClassVar, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _kernels
from ._covariance import COVARIANCE_TYPES
from ._errors import DegenerateDataWarning
from ._history import EMIteration
from ._init import INIT_METHODS
from ._mixture import GaussianMixture
from ._source import rows_for_fit, rows_for_prediction

Array = np.ndarray

__all__ = ["CRITERIA", "GaussianMixtureIC", "fit_candidate", "icl"]

CRITERIA = ("bic", "aic", "icl")


def icl(model: GaussianMixture, X: Any) -> float:
    """Integrated complete-data likelihood criterion of a fitted model on X.

    mclust's ICL in scikit-learn's sign (lower is better): the BIC plus twice
    the classification cost of the hard assignments,
    ``bic(X) - 2 * sum_n log max_k p(k | x_n)`` (Biernacki, Celeux and
    Govaert 2000; ``mclust::icl``).

    Parameters
    ----------
    model : GaussianMixture
        A fitted mixture.
    X : array-like of shape (n_samples, n_features)
        The data the criterion is computed on (usually the training data).

    Returns
    -------
    icl : float
    """
    return _icl_of(model, X, model.bic(X))


def _icl_of(model: GaussianMixture, X: Any, bic: float) -> float:
    """:func:`icl` given the model's ``bic`` on X."""
    resp = model.predict_proba(X)
    if isinstance(resp, np.ndarray):
        return float(bic - 2.0 * np.sum(np.log(np.max(resp, axis=1))))
    # Dask arrays and tensors, on their cluster or device: only the sum
    # comes back.
    from array_api_compat import array_namespace

    xp = array_namespace(resp)
    return bic - 2.0 * float(xp.sum(xp.log(xp.max(resp, axis=1))))


def _criteria(model: GaussianMixture, X: Any) -> tuple[float, float, float, float]:
    """The log-likelihood, BIC, AIC and ICL of a fitted model on X, as
    ``score``, ``bic``, ``aic`` and :func:`icl` give them (the same
    expressions, bit for bit), from one pass of ``score`` and one of
    ``predict_proba`` instead of five passes over X."""
    n_samples = int(X.shape[0])
    score = model.score(X)
    n_parameters = model._n_parameters()
    bic = -2 * score * n_samples + n_parameters * math.log(n_samples)
    aic = -2 * score * n_samples + 2 * n_parameters
    return score * n_samples, bic, aic, _icl_of(model, X, bic)


class Candidate(NamedTuple):
    """One fitted candidate, with what its fit reported."""

    model: GaussianMixture
    singular: bool
    warnings: list[tuple[type[Warning], str]]


def _is_collapse(warning: warnings.WarningMessage) -> bool:
    return issubclass(warning.category, DegenerateDataWarning) and "collapsed" in str(
        warning.message
    )


def fit_candidate(
    X: Array, params: dict[str, Any], every_size: bool = False
) -> Candidate:
    """Fit one GaussianMixture, telling whether its covariance collapsed.

    A fit whose covariance collapsed (a :class:`DegenerateDataWarning` whose
    message says so) is singular: its likelihood is a spike on repeated
    values, not a model of the data, so its AIC/BIC are meaningless (mclust
    reports such models as NA). The other warnings are returned, not raised,
    so that the caller can report each once.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    params : dict
        Parameters of :class:`GaussianMixture`.
    every_size : bool, default=False
        Run every E-step in the compiled kernels, where numba is installed
        (:func:`gaussmix._kernels.every_size`), as a selection of many fits
        does.

    Returns
    -------
    candidate : Candidate
        The fitted model, whether it is singular, and the other warnings as
        (category, message) pairs.
    """
    with (
        warnings.catch_warnings(record=True) as caught,
        _kernels.every_size(every_size),
    ):
        warnings.simplefilter("always")
        model = GaussianMixture(**params).fit(X)
    singular = any(_is_collapse(w) for w in caught)
    others = [(w.category, str(w.message)) for w in caught if not _is_collapse(w)]
    return Candidate(model, singular, others)


def _as_tuple(value: Any, what: str) -> tuple[Any, ...]:
    if isinstance(value, (str, Integral)):
        return (value,)
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(
            f"{what} must be one value or an iterable of values, got {value!r}."
        ) from None
    if not values:
        raise ValueError(f"{what} must not be empty.")
    return values


class GaussianMixtureIC(DensityMixin, BaseEstimator):
    """Choose the number of components and the covariance type by BIC, AIC or ICL.

    Fits a :class:`~gaussmix.GaussianMixture` for every combination of
    ``n_components`` and ``covariance_type`` (in parallel with ``n_jobs``),
    keeps the one with the lowest criterion as ``best_estimator_`` and
    delegates :meth:`predict`, :meth:`predict_proba`, :meth:`score_samples`,
    :meth:`score` and :meth:`sample` to it. ``criteria_`` holds every
    candidate's values.

    X may be anything :class:`GaussianMixture` fits: a Dask array or a
    torch or CuPy tensor stays on its cluster or device, where every
    candidate is fitted and scored, and predictions are then arrays of the
    same kind.

    A candidate whose covariance collapsed onto a subspace (typically a
    component sitting on repeated values of a discrete feature) has an
    unbounded likelihood; like mclust, it is marked singular, gets NaN
    criteria and is never chosen.

    Parameters
    ----------
    n_components : int or iterable of int, default=(1, 2, ..., 9)
        The numbers of components to try, for instance ``range(1, 10)``.
    covariance_type : str or iterable of str, \
default=("full", "tied", "diag", "spherical")
        The covariance types to try.
    criterion : {"bic", "aic", "icl"}, default="bic"
        What to minimise. "bic": ``-2 log L + p log n``; "aic":
        ``-2 log L + 2 p``; "icl": BIC plus twice the classification cost of
        the hard assignments, ``-2 sum_n log max_k p(k | x_n)``, which
        prefers well separated clusters (mclust's ICL, in this sign).
    tol : float, default=1e-6
        Convergence threshold of each fit. Tighter than GaussianMixture's
        default, so that the criteria of different candidates compare
        converged fits.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=1000
        EM iterations per initialisation.
    n_init : int, default=3
        Initialisations per candidate; the best is kept. Several starts
        avoid judging a candidate by a poor local optimum.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, \
default="kmeans"
        How each initialisation starts.
    random_state : int, RandomState instance or None, default=None
        Seeds every candidate's initialisations (the same seed for each, so
        results do not depend on ``n_jobs``).
    n_jobs : int or None, default=None
        Candidates fitted in parallel (joblib). None means 1, -1 all cores.
        Worth it when single fits take more than a fraction of a second.
        For NumPy-like X only: candidates on a Dask array, a torch tensor
        or a CuPy array are fitted one after another, each on the cluster
        or the device. With numba installed (``gaussmix[fast]``) and at
        least 200,000 rows x fits (candidates x ``n_init``), every fit's
        E-steps run in the compiled kernels, loaded once per process
        (about 0.4 s): over 24 candidates of 2 features, 1.9-2.0x faster
        on 30,000 rows and 1.3x on 10,000, the loading included. Results
        agree with NumPy's to rounding.
    callback : callable, default=None
        Passed to every candidate's :class:`GaussianMixture`: called with an
        :class:`~gaussmix.EMIteration` after each EM iteration (``n_iter ==
        0`` marks the start of an initialisation). With ``n_jobs`` other
        than 1 it is called in the worker processes.

    Attributes
    ----------
    best_estimator_ : GaussianMixture
        The chosen model, fitted on all of X.
    best_params_ : dict
        Its ``n_components`` and ``covariance_type``.
    best_index_ : int
        Its row in ``criteria_``.
    best_criterion_ : float
        Its criterion value (lower is better).
    criteria_ : dict of str to ndarray
        One row per candidate, as columns of equal length:
        ``covariance_type``, ``n_components``, ``n_parameters``,
        ``log_likelihood`` (total), ``bic``, ``aic``, ``icl`` (NaN for singular
        candidates), ``singular``, ``converged`` and ``n_iter``.
        ``pandas.DataFrame(criteria_)`` makes it a table.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during fit, when X had string column names.

    Examples
    --------
    >>> from gaussmix import GaussianMixtureIC
    >>> from gaussmix.datasets import load_faithful
    >>> X = load_faithful().data
    >>> ic = GaussianMixtureIC(range(1, 5), covariance_type=("full", "tied"),
    ...                        random_state=0).fit(X)
    >>> ic.best_params_
    {'covariance_type': 'tied', 'n_components': 3}
    >>> round(ic.best_criterion_, 1)
    2314.3
    >>> ic.predict(X).shape
    (272,)
    """

    best_estimator_: GaussianMixture
    best_params_: dict[str, Any]
    best_index_: int
    best_criterion_: float
    criteria_: dict[str, Array]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES)), "array-like"],
        "criterion": [StrOptions(set(CRITERIA))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "callback": [callable, None],
    }

    def __init__(
        self,
        n_components: int | Iterable[int] = (1, 2, 3, 4, 5, 6, 7, 8, 9),
        *,
        covariance_type: str | Iterable[str] = COVARIANCE_TYPES,
        criterion: str = "bic",
        tol: float = 1e-6,
        reg_covar: float = 1e-6,
        max_iter: int = 1000,
        n_init: int = 3,
        init_params: str = "kmeans",
        random_state: Any = None,
        n_jobs: int | None = None,
        callback: Callable[[EMIteration], None] | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.criterion = criterion
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.callback = callback

    def _candidates(self, n_samples: int) -> list[tuple[str, int]]:
        ks = _as_tuple(self.n_components, "n_components")
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
                raise ValueError(
                    f"n_components must hold integers >= 1, got {k!r} in "
                    f"{self.n_components!r}."
                )
        types = _as_tuple(self.covariance_type, "covariance_type")
        for name in types:
            if name not in COVARIANCE_TYPES:
                raise ValueError(
                    f"covariance_type must hold values among {COVARIANCE_TYPES}, "
                    f"got {name!r}."
                )
        k_values = sorted({int(k) for k in ks})
        if k_values[-1] > n_samples:
            raise ValueError(
                f"n_components goes up to {k_values[-1]} but X has only "
                f"{n_samples} samples; try fewer components."
            )
        unique_types = list(dict.fromkeys(types))
        return [(t, k) for t in unique_types for k in k_values]

    def fit(self, X: Any, y: Any = None) -> GaussianMixtureIC:
        """Fit every candidate and keep the best.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples, one per row.
        y : Ignored
            Present for API consistency.

        Returns
        -------
        self : GaussianMixtureIC
            The fitted selector.
        """
        self._validate_params()
        X = rows_for_fit(self, X)
        # Candidates on a Dask array or a tensor are fitted one after another
        # (each fit already uses the cluster or the device).
        n_jobs = self.n_jobs if isinstance(X, np.ndarray) else None
        candidates = self._candidates(int(X.shape[0]))
        random_state = self.random_state
        if not isinstance(random_state, Integral):
            random_state = int(check_random_state(random_state).randint(2**31 - 1))
        common = {
            "tol": self.tol,
            "reg_covar": self.reg_covar,
            "max_iter": self.max_iter,
            "n_init": self.n_init,
            "init_params": self.init_params,
            "random_state": random_state,
            "callback": self.callback,
        }
        # Many fits of in-memory rows: every E-step in the compiled kernels,
        # where loading them pays (each worker process loads its own).
        compiled = isinstance(X, np.ndarray) and _kernels.repays_loading(
            int(X.shape[0]), len(candidates) * self.n_init
        )
        fitted = Parallel(n_jobs=n_jobs)(
            delayed(fit_candidate)(
                X, {"n_components": k, "covariance_type": t, **common}, compiled
            )
            for t, k in candidates
        )
        self._report_warnings(candidates, fitted)

        n = len(candidates)
        table: dict[str, Array] = {
            "covariance_type": np.array([t for t, _ in candidates]),
            "n_components": np.array([k for _, k in candidates], dtype=np.int64),
            "n_parameters": np.zeros(n, dtype=np.int64),
            "log_likelihood": np.zeros(n),
            "bic": np.full(n, np.nan),
            "aic": np.full(n, np.nan),
            "icl": np.full(n, np.nan),
            "singular": np.zeros(n, dtype=bool),
            "converged": np.zeros(n, dtype=bool),
            "n_iter": np.zeros(n, dtype=np.int64),
        }
        with _kernels.every_size(compiled):
            self._fill_criteria(table, fitted, X)
        values = table[self.criterion]
        if np.all(np.isnan(values)):
            raise ValueError(
                "Every candidate's covariance collapsed (zero variance in some "
                "direction), so none is a usable model. Repeated values (for "
                "instance an integer-valued feature) often cause it; try fewer "
                "components, another covariance_type or a larger reg_covar."
            )
        best = int(np.nanargmin(values))
        self.criteria_ = table
        self.best_index_ = best
        self.best_estimator_ = fitted[best].model
        self.best_params_ = {
            "covariance_type": candidates[best][0],
            "n_components": candidates[best][1],
        }
        self.best_criterion_ = float(values[best])
        return self

    @staticmethod
    def _fill_criteria(
        table: dict[str, Array], fitted: list[Candidate], X: Any
    ) -> None:
        """Each candidate's row of ``table``: its size, how its fit ended,
        and its log-likelihood and criteria over ``X``."""
        for i, candidate in enumerate(fitted):
            model = candidate.model
            table["n_parameters"][i] = model._n_parameters()
            table["singular"][i] = candidate.singular
            table["converged"][i] = model.converged_
            table["n_iter"][i] = model.n_iter_
            if candidate.singular:
                table["log_likelihood"][i] = model.score(X) * int(X.shape[0])
            else:
                (
                    table["log_likelihood"][i],
                    table["bic"][i],
                    table["aic"][i],
                    table["icl"][i],
                ) = _criteria(model, X)

    @staticmethod
    def _report_warnings(
        candidates: list[tuple[str, int]], fitted: list[Candidate]
    ) -> None:
        """Raise each distinct warning of the candidates once, naming them."""
        seen: dict[tuple[type[Warning], str], list[str]] = {}
        for (t, k), candidate in zip(candidates, fitted, strict=True):
            for key in candidate.warnings:
                seen.setdefault(key, []).append(f"{t} K={k}")
        for (category, message), where in seen.items():
            warnings.warn(
                f"{message} (candidates: {', '.join(where)})", category, stacklevel=3
            )

    # ----------------------------------------------------------- delegation
    def _validated(self, X: Any) -> Any:
        check_is_fitted(self)
        return rows_for_prediction(self, X)

    def predict(self, X: Any) -> Array:
        """The most probable component of each sample, under the best model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        X = self._validated(X)
        return self.best_estimator_.predict(X)

    def fit_predict(self, X: Any, y: Any = None) -> Array:
        """Fit, then return the best model's labels of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X).predict(X)

    def predict_proba(self, X: Any) -> Array:
        """Posterior probability of each component of the best model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
        """
        X = self._validated(X)
        return self.best_estimator_.predict_proba(X)

    def score_samples(self, X: Any) -> Array:
        """Log-likelihood of each sample under the best model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        X = self._validated(X)
        return self.best_estimator_.score_samples(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of the samples under the best model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        X = self._validated(X)
        return self.best_estimator_.score(X)

    def sample(
        self, n_samples: int = 1, random_state: Any = None
    ) -> tuple[Array, Array]:
        """Draw samples from the best model.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.best_estimator_.sample(n_samples, random_state=random_state)

    def bic(self, X: Any) -> float:
        """BIC of the best model on X (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        X = self._validated(X)
        return self.best_estimator_.bic(X)

    def aic(self, X: Any) -> float:
        """AIC of the best model on X (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        X = self._validated(X)
        return self.best_estimator_.aic(X)
