"""GaussianMixture: validation, orchestration and fitted attributes.

The estimator owns no linear algebra: it validates its inputs, asks the
initialisation for responsibilities, runs the EM engine and stores what
comes back as scikit-learn's fitted attributes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from numbers import Integral, Real
from os import PathLike
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._covariance import COVARIANCE_TYPES, CovarianceStrategy, get_covariance
from ._em import Params, em, m_step
from ._errors import DegenerateDataWarning
from ._history import EMIteration
from ._init import INIT_METHODS, initial_statistics
from ._parallel import single_threaded_native
from ._source import RowSource, column_variances, fit_source, prediction_source

Array = np.ndarray
logger = logging.getLogger("gaussmix")

__all__ = ["GaussianMixture"]

# Data whose magnitude is outside [2**-60, 2**60] is fitted after an exact
# power-of-two rescaling, so that squares neither overflow nor underflow.
_SCALE_LIMIT = 2.0**60


def _power_of_two_scale(magnitude: float) -> float:
    """1.0 for ordinary data, else a power of two that brings it near 1."""
    if magnitude == 0.0 or 1.0 / _SCALE_LIMIT <= magnitude <= _SCALE_LIMIT:
        return 1.0
    return float(2.0 ** (-round(math.log2(magnitude))))


@contextlib.contextmanager
def _verbose_output(verbose: int) -> Iterator[None]:
    """Show the package's INFO messages on stdout while ``verbose`` is set.

    Progress goes through :mod:`logging`; with ``verbose`` on and no handler
    configured by the application, a temporary stdout handler makes it
    visible, as ``verbose`` promises.
    """
    if not verbose or logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by expectation-maximisation.

    A drop-in replacement for :class:`sklearn.mixture.GaussianMixture`: the
    same parameters, methods, attributes and answers, plus sample weights,
    float32 end to end, exactness far from the origin, healing of
    degenerate components and a safe model file (:meth:`save`,
    :func:`gaussmix.load`).

    Parameters
    ----------
    n_components : int, default=1
        The number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        "full": each component has its own general covariance matrix;
        "tied": all components share one general covariance matrix;
        "diag": each component has its own diagonal covariance matrix;
        "spherical": each component has its own single variance.
    tol : float, default=1e-3
        EM stops when the lower bound (mean log-likelihood) changes by less.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of covariances.
    max_iter : int, default=100
        The number of EM iterations to perform per initialisation.
    n_init : int, default=1
        The number of initialisations; the best result is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, \
default="kmeans"
        How the responsibilities EM starts from are chosen.
    weights_init : array-like of shape (n_components,), default=None
        User-provided initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        User-provided initial means.
    precisions_init : array-like, default=None
        User-provided initial precisions (inverse covariances), shaped as
        ``covariances_``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and, unless :meth:`sample` is given its own,
        the sampling.
    warm_start : bool, default=False
        If True, each ``fit`` starts from the previous solution (``n_init``
        is then ignored after the first fit).
    verbose : int, default=0
        1 reports each initialisation and every ``verbose_interval``
        iterations; 2 adds the time and the change of the lower bound.
        Messages go through the ``"gaussmix"`` logger (to stdout when the
        application configured no logging).
    verbose_interval : int, default=10
        Iterations between two reports.
    callback : callable, default=None
        Called as ``callback(iteration)`` with a :class:`gaussmix.EMIteration`
        (initialisation, iteration, lower bound, weights, means, covariances,
        in the units of X) once with the starting parameters of each
        initialisation (``n_iter == 0``) and after every EM iteration. Use it
        for progress reports or to record EM; :class:`gaussmix.EMHistory`
        keeps every iteration.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        The weight of each component.
    means_ : ndarray of shape (n_components, n_features)
        The mean of each component.
    covariances_ : ndarray
        The covariance of each component, shaped (n_components,) for
        "spherical", (n_features, n_features) for "tied", (n_components,
        n_features) for "diag" and (n_components, n_features, n_features) for
        "full".
    precisions_ : ndarray
        The inverse covariances, shaped as ``covariances_``.
    precisions_cholesky_ : ndarray
        Upper-triangular Cholesky factors of the precisions, shaped as
        ``covariances_``.
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        EM iterations of the best initialisation.
    lower_bound_ : float
        Mean log-likelihood of the training data at the start of the last
        iteration of the best initialisation.
    lower_bounds_ : list of float
        The lower bound at every iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during fit, when X had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixture
    >>> X = np.array([[1, 2], [1.5, 4], [0.8, 0], [10, 2], [10.5, 4], [9.7, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> gm.means_
    array([[10.06666667,  2.        ],
           [ 1.1       ,  2.        ]])
    >>> gm.predict([[0, 0], [12, 3]])
    array([1, 0])
    """

    # Fitted attributes (annotations only: they exist after fit).
    weights_: Array
    means_: Array
    covariances_: Array
    precisions_: Array
    precisions_cholesky_: Array
    converged_: bool
    n_iter_: int
    lower_bound_: float
    lower_bounds_: list[float]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "callback": [callable, None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        callback: Callable[[EMIteration], None] | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.callback = callback

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> GaussianMixture:
        """Estimate the parameters with the EM algorithm.

        EM runs ``n_init`` times (once with ``warm_start`` after the first
        fit) and keeps the run with the largest lower bound. Each run stops
        when the lower bound changes by less than ``tol`` or after
        ``max_iter`` iterations; if the best run did not converge a
        :class:`~sklearn.exceptions.ConvergenceWarning` is raised.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The samples, one per row.
        y : Ignored
            Present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; a weight of ``w`` counts a row ``w`` times,
            in EM and in the initialisation. None means all ones.

        Returns
        -------
        self : GaussianMixture
            The fitted mixture.
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Array:
        """Fit the model and return the most probable component of each row.

        The labels equal ``fit(X).predict(X)`` for any ``max_iter`` and ``tol``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Component labels.
        """
        source = self._fit(X, sample_weight)
        return source.labels(self._params(), self._strategy())

    def _strategy(self) -> CovarianceStrategy:
        return get_covariance(self.covariance_type)

    def _fit(self, X: Any, sample_weight: Any) -> RowSource:
        with single_threaded_native():
            return self._fit_unlimited(X, sample_weight)

    def _fit_unlimited(self, X: Any, sample_weight: Any) -> RowSource:
        self._validate_params()
        original = fit_source(self, X, sample_weight)
        n_features = original.n_features
        n_effective = original.n_effective()
        if n_effective < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, "
                f"n_samples = {n_effective}"
                + ("" if not original.weighted else " (samples with positive weight)")
            )
        strategy = self._strategy()
        dtype = original.dtype
        init = self._checked_initial_parameters(strategy, n_features, dtype)

        # The scale is read off the magnitudes, before anything is squared.
        scale = self._fitting_scale(original.magnitude())
        source = original.scaled(scale)
        variances = column_variances(source)
        reg_covar = float(self.reg_covar) * scale * scale
        self._warn_if_regularisation_dominates(reg_covar, variances, scale)
        eps = float(np.finfo(dtype).eps)
        variance_floor = 1e3 * eps * (variances + np.mean(variances))

        do_init = not (self.warm_start and hasattr(self, "converged_"))
        n_init = self.n_init if do_init else 1
        random_state = check_random_state(self.random_state)

        best: tuple[Params, float, list[float], int, bool] | None = None
        with _verbose_output(self.verbose):
            for init_index in range(n_init):
                logger.info("Initialization %d", init_index)
                if do_init:
                    params = self._initial_params(
                        source,
                        strategy,
                        init,
                        scale,
                        reg_covar,
                        variance_floor,
                        random_state,
                    )
                    lower_bound = -math.inf
                    if init_index == n_init - 1:
                        # Not held through the last EM (given precisions:
                        # K x D x D, 2% of case (d)'s float32 input).
                        init.clear()
                else:
                    params = self._scaled_params(scale)
                    lower_bound = float(self.lower_bound_) - n_features * math.log(
                        scale
                    )
                self._report_start(init_index, params, scale)
                if self.max_iter == 0:
                    # scikit-learn keeps the last initialisation and a lower
                    # bound of -inf when no iteration runs.
                    best = (params, -math.inf, [], 0, False)
                    continue
                # Handed over, not kept: the starting parameters (K x D x D
                # twice, for full covariances) are then freed after EM's first
                # M-step, not held through the fit (2 MiB of case (d) of
                # benchmarks/bench_em.py, 4% of its float32 input).
                starting = [params]
                del params
                result = em(
                    lambda params, exact: source.e_step(params, strategy, exact),
                    starting.pop(),
                    strategy,
                    dtype,
                    tol=self.tol,
                    max_iter=self.max_iter,
                    reg_covar=reg_covar,
                    variance_floor=variance_floor,
                    lower_bound=lower_bound,
                    callback=self._report_iteration,
                    expansion_gap=lambda params: source.expansion_gap(params, strategy),
                    exact=source.exact_is_cheaper(self.n_components),
                )
                logger.info(
                    "Initialization %s. lower bound %.5f.",
                    "converged" if result.converged else "did not converge",
                    result.lower_bound,
                )
                if best is None or result.lower_bound > best[1] or best[1] == -math.inf:
                    best = (
                        result.params,
                        result.lower_bound,
                        result.lower_bounds,
                        result.n_iter,
                        result.converged,
                    )
        assert best is not None
        params, lower_bound, lower_bounds, n_iter, converged = best
        if not converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. "
                "Try different init parameters, or increase max_iter, "
                "tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.max_iter > 0:
            self._warn_if_collapsed(strategy, params, reg_covar, variances)
        shift = n_features * math.log(scale)
        self._set_fitted(params, dtype, scale)
        self.converged_ = converged
        self.n_iter_ = n_iter
        self.lower_bound_ = lower_bound + shift
        self.lower_bounds_ = [value + shift for value in lower_bounds]
        return original

    def _fitting_scale(self, magnitude: float) -> float:
        """The power of two the rows are multiplied by while fitting."""
        scale = _power_of_two_scale(magnitude)
        if self.reg_covar > 0:
            # Keep reg_covar representable in the rescaled units.
            exponent = 0.5 * (math.log2(1e300) - math.log2(self.reg_covar))
            limit = 2.0 ** math.floor(exponent)
            scale = min(scale, limit)
        return scale

    def partial_fit(
        self, X: Any, y: Any = None, sample_weight: Any = None
    ) -> GaussianMixture:
        """Update the mixture with one chunk of a stream read only once.

        Online (stepwise) EM: the first call initialises the mixture from
        its chunk (by ``init_params``, or ``weights_init``, ``means_init``
        and ``precisions_init``) and takes one EM step on it, exactly as
        ``fit`` with ``max_iter=1``. Each later call takes one E-step on its
        chunk under the current parameters, blends the chunk's sufficient
        statistics (per unit weight) into running statistics with step size
        ``eta_t = (t + 1) ** -0.7`` for the ``t``-th chunk, and takes the
        M-step of the blend (see :mod:`gaussmix._online`). Each chunk is
        read once and then forgotten. To fit data that can be read more
        than once, exactly, pass a :class:`gaussmix.Chunks` to :meth:`fit`.

        After :meth:`fit` (or :func:`gaussmix.load`), ``partial_fit``
        continues from the fitted model, which counts as the first chunk
        (the next chunk then has step size ``2 ** -0.7``, about 0.6). It
        does so whatever ``warm_start``: ``warm_start`` is about ``fit``,
        where False starts over (forgetting the stream) and True runs
        batch EM from the parameters ``partial_fit`` reached.

        Chunks must have the first chunk's ``n_features_in_`` and are
        converted to its dtype. ``n_iter_`` counts the updates,
        ``lower_bound_`` is the mean log-likelihood of the latest chunk
        under the parameters before its update (``lower_bounds_`` keeps
        one per call), and ``converged_`` is False: a stream has no
        convergence test.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One chunk of samples; the first needs at least
            ``n_components`` rows.
        y : Ignored
            Present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the chunk's rows.

        Returns
        -------
        self : GaussianMixture
            The updated mixture.
        """
        from ._online import partial_fit

        with single_threaded_native():
            partial_fit(self, X, sample_weight)
        return self

    def _report_iteration(
        self, n_iter: int, params: Params, lower_bound: float
    ) -> None:
        if n_iter % self.verbose_interval == 0:
            logger.info("  Iteration %d\t lower bound %.5f", n_iter, lower_bound)
        self._notify_callback(n_iter, params, lower_bound)

    def _report_start(self, init_index: int, params: Params, scale: float) -> None:
        """Give the callback the starting parameters of an initialisation."""
        if self.callback is not None:
            self._callback_context = (init_index, scale)
            self._notify_callback(0, params, -math.inf)

    def _notify_callback(self, n_iter: int, params: Params, lower_bound: float) -> None:
        """Call ``callback`` with the parameters in the units of X."""
        if self.callback is None:
            return
        init_index, scale = self._callback_context
        self.callback(
            EMIteration(
                init_index,
                n_iter,
                lower_bound + params.means.shape[1] * math.log(scale),
                params.weights.copy(),
                params.means / scale,
                params.covariances / scale / scale,
                self.covariance_type,
            )
        )

    def _warn_if_collapsed(
        self,
        strategy: CovarianceStrategy,
        params: Params,
        reg_covar: float,
        variances: Array,
    ) -> None:
        """Warn when a component's covariance collapsed onto a subspace.

        The likelihood is unbounded near such solutions (typically a
        component sitting on repeated values of a discrete feature), so the
        fit and its AIC/BIC reward the degeneracy; mclust reports such
        models as singular.
        """
        positive = variances[variances > 0]
        if positive.size == 0:
            return
        tiny = 1e-8 * float(np.min(positive))
        smallest = strategy.smallest_variances(params.covariances) - reg_covar
        collapsed = np.flatnonzero(smallest <= tiny)
        if collapsed.size:
            warnings.warn(
                f"The covariance of component(s) {collapsed.tolist()} collapsed "
                "(zero variance in some direction, apart from reg_covar): the "
                "likelihood is unbounded there, so this fit and its AIC/BIC "
                "reward the degeneracy. Repeated values (for instance an "
                "integer-valued feature) often cause it; consider fewer "
                "components, another covariance_type or a larger reg_covar.",
                DegenerateDataWarning,
                stacklevel=4,
            )

    def _warn_if_regularisation_dominates(
        self, reg_covar: float, variances: Array, scale: float
    ) -> None:
        largest = float(np.max(variances))
        if largest > 0 and reg_covar > largest:
            warnings.warn(
                f"reg_covar={self.reg_covar:g} exceeds the variance of every "
                f"feature (the largest is {largest / scale / scale:.3g}), so the "
                "fitted covariances will be dominated by it. Lower reg_covar "
                "or rescale X (for instance with StandardScaler).",
                DegenerateDataWarning,
                stacklevel=4,
            )

    def _checked_initial_parameters(
        self, strategy: CovarianceStrategy, n_features: int, dtype: Any
    ) -> dict[str, Array | None]:
        """Validate weights_init, means_init and precisions_init (not stored)."""
        init: dict[str, Array | None] = {
            "weights": None,
            "means": None,
            "precisions": None,
        }
        k = self.n_components
        if self.weights_init is not None:
            weights = check_array(
                self.weights_init, dtype=[np.float64, np.float32], ensure_2d=False
            )
            if weights.shape != (k,):
                raise ValueError(
                    "The parameter 'weights' should have the shape of "
                    f"{(k,)}, but got {weights.shape}"
                )
            if np.any(np.less(weights, 0.0)) or np.any(np.greater(weights, 1.0)):
                # scikit-learn's words, including its swapped min and max.
                raise ValueError(
                    "The parameter 'weights' should be in the range "
                    f"[0, 1], but got max value {np.min(weights):.5f}, "
                    f"min value {np.max(weights):.5f}"
                )
            atol = 1e-6 if weights.dtype == np.float32 else 1e-8
            if not np.allclose(float(np.abs(1.0 - np.sum(weights))), 0.0, atol=atol):
                raise ValueError(
                    "The parameter 'weights' should be normalized, "
                    f"but got sum(weights) = {np.sum(weights):.5f}"
                )
            init["weights"] = weights.astype(np.float64)
        if self.means_init is not None:
            means = check_array(
                self.means_init, dtype=[np.float64, np.float32], ensure_2d=False
            )
            if means.shape != (k, n_features):
                raise ValueError(
                    "The parameter 'means' should have the shape of "
                    f"{(k, n_features)}, but got {means.shape}"
                )
            init["means"] = means.astype(np.float64)
        if self.precisions_init is not None:
            precisions = check_array(
                self.precisions_init,
                dtype=[np.float64, np.float32],
                ensure_2d=False,
                allow_nd=True,
            )
            strategy.check_precisions(precisions, k, n_features)
            init["precisions"] = precisions.astype(np.float64)
        return init

    def _initial_params(
        self,
        source: RowSource,
        strategy: CovarianceStrategy,
        init: dict[str, Array | None],
        scale: float,
        reg_covar: float,
        variance_floor: Array,
        random_state: np.random.RandomState,
    ) -> Params:
        """Starting parameters: from the init arrays, else from responsibilities."""
        given_weights, given_means, given_precisions = (
            init["weights"],
            init["means"],
            init["precisions"],
        )
        if given_weights is None or given_means is None or given_precisions is None:
            stats = initial_statistics(
                source, self.n_components, self.init_params, random_state, strategy
            )
            eps = float(np.finfo(source.dtype).eps)
            params, counts = m_step(stats, strategy, reg_covar, variance_floor, eps)
            # scikit-learn divides the initial counts by n_samples, not by
            # their sum (which differs by 10 * eps * n_components).
            params = params._replace(weights=counts / stats.weight_sum)
        else:
            params = None
        weights_0 = given_weights if given_weights is not None else params.weights  # type: ignore[union-attr]
        means_0 = given_means * scale if given_means is not None else params.means  # type: ignore[union-attr]
        if given_precisions is not None:
            prec_chol = strategy.precision_cholesky_from_precisions(given_precisions)
            prec_chol = prec_chol / scale
            covariances = strategy.covariances_from_precision_cholesky(prec_chol)
        else:
            assert params is not None
            prec_chol, covariances = params.precisions_cholesky, params.covariances
        return Params(weights_0, means_0, covariances, prec_chol)

    def _scaled_params(self, scale: float) -> Params:
        """The fitted parameters in float64, in the (rescaled) fitting units."""
        return Params(
            np.asarray(self.weights_, dtype=np.float64),
            np.asarray(self.means_, dtype=np.float64) * scale,
            np.asarray(self.covariances_, dtype=np.float64) * scale * scale,
            np.asarray(self.precisions_cholesky_, dtype=np.float64) / scale,
        )

    def _set_fitted(self, params: Params, dtype: Any, scale: float) -> None:
        strategy = self._strategy()
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            covariances = (params.covariances / scale / scale).astype(dtype)
            prec_chol = params.precisions_cholesky * scale
            precisions = strategy.precisions(prec_chol).astype(dtype)
            prec_chol = prec_chol.astype(dtype)
        if not (np.all(np.isfinite(covariances)) and np.all(np.isfinite(precisions))):
            raise ValueError(
                "The fitted covariances or precisions overflow "
                f"{np.dtype(dtype).name}: X's values (up to about "
                f"{1.0 / scale:.1e}) are too large or too small for their squares "
                "to be represented. Rescale X (for instance with "
                "sklearn.preprocessing.StandardScaler) and fit again."
            )
        self.weights_ = params.weights.astype(dtype)
        self.means_ = (params.means / scale).astype(dtype)
        self.covariances_ = covariances
        self.precisions_cholesky_ = prec_chol
        self.precisions_ = precisions

    def _params(self) -> Params:
        return self._scaled_params(1.0)

    # ------------------------------------------------------------- predict
    def _validate_for_prediction(self, X: Any) -> RowSource:
        check_is_fitted(self)
        return prediction_source(self, X)

    def score_samples(self, X: Any) -> Array:
        """Log-likelihood of each sample under the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        source = self._validate_for_prediction(X)
        return source.log_density(self._params(), self._strategy())

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of the samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        return float(self.score_samples(X).mean())

    def predict(self, X: Any) -> Array:
        """The most probable component of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        source = self._validate_for_prediction(X)
        return source.labels(self._params(), self._strategy())

    def predict_proba(self, X: Any) -> Array:
        """Posterior probability of each component for each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            Rows sum to 1.
        """
        source = self._validate_for_prediction(X)
        return source.proba(self._params(), self._strategy())

    def sample(
        self, n_samples: int = 1, random_state: Any = None
    ) -> tuple[Array, Array]:
        """Draw samples from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples to draw.
        random_state : int, RandomState instance or None, default=None
            Seed for this call. None uses the estimator's ``random_state``
            (as scikit-learn does, so an int seed gives the same draws on
            every call).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The samples, grouped by component, in the model's dtype.
        y : ndarray of shape (n_samples,)
            The component each sample was drawn from.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                "requires at least one sample."
            )
        rng = check_random_state(
            self.random_state if random_state is None else random_state
        )
        counts = rng.multinomial(n_samples, np.asarray(self.weights_, dtype=float))
        samples = self._strategy().colorize(
            rng,
            np.asarray(self.means_, dtype=np.float64),
            np.asarray(self.covariances_, dtype=np.float64),
            counts,
        )
        labels = np.repeat(np.arange(self.n_components, dtype=np.int64), counts)
        return samples.astype(self.means_.dtype, copy=False), labels

    # ----------------------------------------------------------- criteria
    def _n_parameters(self) -> int:
        n_features = self.means_.shape[1]
        return self._strategy().n_parameters(self.n_components, n_features)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on X (lower is better).

        ``-2 * log-likelihood + n_parameters * log(n_samples)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        n_samples = len(X)
        return -2 * self.score(X) * n_samples + self._n_parameters() * math.log(
            n_samples
        )

    def aic(self, X: Any) -> float:
        """Akaike information criterion on X (lower is better).

        ``-2 * log-likelihood + 2 * n_parameters``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        return -2 * self.score(X) * len(X) + 2 * self._n_parameters()

    # --------------------------------------------------------- persistence
    def save(self, path: str | PathLike[str]) -> None:
        """Write the fitted model to a file that :func:`gaussmix.load` reads.

        The file is a NumPy ``.npz`` archive of plain numeric arrays plus
        JSON metadata (format version, hyperparameters, fit results); loading
        it never executes anything. See :mod:`gaussmix._persistence`.

        Parameters
        ----------
        path : str or path-like
            Where to write. Conventionally ends in ``.npz``.
        """
        from ._persistence import save_model

        save_model(self, path)
