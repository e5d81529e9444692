"""The EM engine: pure functions over parameters and statistics.

Nothing here holds estimator state. The E-step streams the rows in chunks,
so temporaries are bounded by the chunk size (never N x K x D), and returns
additive :class:`~gaussmix._stats.SufficientStatistics`; the M-step turns
statistics into new parameters. Parameters are kept in float64; the E-step
casts them to the data's dtype, so float32 data is processed in float32 and
accumulated in float64.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from ._covariance import CovarianceStrategy
from ._errors import DegenerateCovarianceError, DegenerateDataWarning
from ._stats import SufficientStatistics, block_statistics

Array = np.ndarray
logger = logging.getLogger("gaussmix")

__all__ = [
    "EMResult",
    "Params",
    "chunk_rows",
    "e_step",
    "em",
    "m_step",
    "resp_statistics",
    "weighted_log_prob",
]

# Elements in one K x chunk x D temporary: 2**20 float64 values are 8 MiB,
# small enough for the caches to help, large enough for BLAS to be efficient.
_CHUNK_ELEMENTS = 2**20
_LOG_2PI = math.log(2.0 * math.pi)


class Params(NamedTuple):
    """Mixture parameters, float64. Shapes follow the covariance strategy."""

    weights: Array
    means: Array
    covariances: Array
    precisions_cholesky: Array


class EMResult(NamedTuple):
    params: Params
    lower_bound: float
    lower_bounds: list[float]
    n_iter: int
    converged: bool


def chunk_rows(n_components: int, n_features: int) -> int:
    """Rows per chunk so one K x rows x D temporary stays near 8 MiB."""
    return max(16, _CHUNK_ELEMENTS // max(1, n_components * n_features))


def _chunks(n_samples: int, size: int) -> Iterator[slice]:
    for start in range(0, n_samples, size):
        yield slice(start, min(start + size, n_samples))


def _min_log_resp(dtype: np.dtype) -> float:
    # exp() of a smaller argument is zero or subnormal, and subnormal exp() is
    # many times slower; clamping changes responsibilities below 1e-300
    # (float64) or 1e-35 (float32) only.
    return -700.0 if dtype == np.float64 else -80.0


def _diffs(X: Array, means: Array) -> Array:
    """``X - mu_k`` for every component: K x n x D, in the data's dtype."""
    return X[None, :, :] - means.astype(X.dtype, copy=False)[:, None, :]


def _weighted_log_prob_from_diffs(
    diffs: Array, params: Params, strategy: CovarianceStrategy
) -> Array:
    dtype = diffs.dtype
    n_features = diffs.shape[-1]
    prec_chol = params.precisions_cholesky.astype(dtype, copy=False)
    maha = strategy.whiten(diffs, prec_chol).T
    log_det = strategy.log_pdet(params.precisions_cholesky, n_features)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    offset = (log_det + log_weights - 0.5 * n_features * _LOG_2PI).astype(dtype)
    return offset - 0.5 * maha


def _logsumexp_rows(a: Array) -> Array:
    top = np.max(a, axis=1)
    top = np.where(np.isfinite(top), top, 0.0).astype(a.dtype, copy=False)
    with np.errstate(under="ignore"):
        total = np.sum(np.exp(a - top[:, None]), axis=1)
    with np.errstate(divide="ignore"):
        return np.log(total) + top


def weighted_log_prob(X: Array, params: Params, strategy: CovarianceStrategy) -> Array:
    """``log w_k + log N(x_n | mu_k, Sigma_k)`` for all rows: n x K."""
    n_components, n_features = params.means.shape
    out = np.empty((X.shape[0], n_components), dtype=X.dtype)
    for rows in _chunks(X.shape[0], chunk_rows(n_components, n_features)):
        diffs = _diffs(X[rows], params.means)
        out[rows] = _weighted_log_prob_from_diffs(diffs, params, strategy)
    return out


def log_prob_resp(
    X: Array, params: Params, strategy: CovarianceStrategy
) -> tuple[Array, Array]:
    """``log p(x_n)`` (n) and log-responsibilities (n x K) for all rows."""
    wlp = weighted_log_prob(X, params, strategy)
    log_norm = _logsumexp_rows(wlp)
    with np.errstate(under="ignore", invalid="ignore"):
        log_resp = wlp - log_norm[:, None]
    return log_norm, log_resp


def e_step(
    X: Array,
    sample_weight: Array | None,
    params: Params,
    strategy: CovarianceStrategy,
    chunk_size: int | None = None,
) -> SufficientStatistics:
    """One E-step over all rows, returned as additive statistics.

    The statistics are taken about the current means, so the differences the
    E-step needs are reused for the M-step's sums while still in cache.
    """
    n_components, n_features = params.means.shape
    size = chunk_size or chunk_rows(n_components, n_features)
    shift = params.means.astype(X.dtype).astype(np.float64)
    floor = _min_log_resp(X.dtype)
    total: SufficientStatistics | None = None
    for rows in _chunks(X.shape[0], size):
        Xc = X[rows]
        diffs = _diffs(Xc, params.means)
        wlp = _weighted_log_prob_from_diffs(diffs, params, strategy)
        log_norm = _logsumexp_rows(wlp)
        with np.errstate(under="ignore"):
            resp = np.exp(np.maximum(wlp - log_norm[:, None], floor))
        weights = None if sample_weight is None else sample_weight[rows]
        block = block_statistics(
            Xc, diffs, resp, weights, shift, strategy, log_prob_norm=log_norm
        )
        total = block if total is None else total + block
    assert total is not None
    return total


def resp_statistics(
    X: Array,
    sample_weight: Array | None,
    resp_of_rows: Callable[[slice], Array],
    shift: Array,
    strategy: CovarianceStrategy,
    chunk_size: int | None = None,
) -> SufficientStatistics:
    """Statistics of given responsibilities (used by the initialisation)."""
    n_components, n_features = shift.shape
    size = chunk_size or chunk_rows(n_components, n_features)
    shift = shift.astype(X.dtype).astype(np.float64)
    total: SufficientStatistics | None = None
    for rows in _chunks(X.shape[0], size):
        Xc = X[rows]
        diffs = _diffs(Xc, shift)
        weights = None if sample_weight is None else sample_weight[rows]
        block = block_statistics(
            Xc, diffs, resp_of_rows(rows).astype(X.dtype), weights, shift, strategy
        )
        total = block if total is None else total + block
    assert total is not None
    return total


def m_step(
    stats: SufficientStatistics,
    strategy: CovarianceStrategy,
    reg_covar: float,
    variance_floor: Array,
    eps: float,
) -> tuple[Params, Array]:
    """New parameters from statistics, healing degenerate components.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics of the whole data.
    strategy : CovarianceStrategy
        The covariance type.
    reg_covar : float
        Added to the variances, as in scikit-learn.
    variance_floor : ndarray of shape (n_features,)
        Added to the variances of a component whose covariance is not
        positive definite (a collapsed component); relative to the data's
        own variances. All zeros disables the healing.
    eps : float
        Machine epsilon of the data's dtype: ``10 * eps`` is added to the
        effective counts, as scikit-learn does, so none is zero.

    Returns
    -------
    params : Params
    counts : ndarray of shape (n_components,)
        The effective counts, ``10 * eps`` included, before normalisation.
    """
    counts = stats.resp_sum + 10.0 * eps
    delta = stats.diff_sum / counts[:, None]
    means = stats.shift + delta
    centred = strategy.centre(stats.scatter, stats.resp_sum, delta)
    covariances = strategy.covariances(centred, counts, reg_covar)

    empty = np.flatnonzero(stats.resp_sum <= 10.0 * eps * stats.weight_sum)
    if empty.size and empty.size < counts.size and stats.worst_sample is not None:
        for k in empty:
            means[k] = stats.worst_sample
            covariances = strategy.replace_component(covariances, int(k))
            counts[k] = stats.weight_sum / max(1.0, float(counts.size))
        warnings.warn(
            f"Component(s) {empty.tolist()} lost all their samples and were "
            "re-seeded at the worst-explained sample. The data may have fewer "
            "clusters than n_components; consider fewer components.",
            DegenerateDataWarning,
            stacklevel=3,
        )

    prec_chol, covariances = _precision_cholesky_healed(
        strategy, covariances, variance_floor
    )
    weights = counts / counts.sum()
    return Params(weights, means, covariances, prec_chol), counts


def _precision_cholesky_healed(
    strategy: CovarianceStrategy, covariances: Array, variance_floor: Array
) -> tuple[Array, Array]:
    """Precision Cholesky factors, flooring collapsed components' variances."""
    healed: set[int | None] = set()
    for attempt in range(8):
        try:
            prec_chol = strategy.precision_cholesky(covariances)
        except DegenerateCovarianceError as error:
            if not np.any(variance_floor > 0) or attempt == 7:
                raise
            # Collapsed variances can be slightly negative from rounding, so
            # grow the floor until the covariance is positive definite.
            amount = variance_floor * 100.0**attempt
            covariances = strategy.add_to_variances(
                covariances, amount, error.component
            )
            healed.add(error.component)
            continue
        if healed:
            which = sorted(str(k) for k in healed)
            warnings.warn(
                f"The covariance of component(s) {', '.join(which)} collapsed "
                "(duplicated points or a constant feature); its variances were "
                "floored relative to the data's variances. Consider increasing "
                "reg_covar or decreasing n_components.",
                DegenerateDataWarning,
                stacklevel=4,
            )
        return prec_chol, covariances
    raise AssertionError("unreachable")


def em(
    X: Array,
    sample_weight: Array | None,
    params: Params,
    strategy: CovarianceStrategy,
    *,
    tol: float,
    max_iter: int,
    reg_covar: float,
    variance_floor: Array,
    lower_bound: float = -math.inf,
    callback: Callable[[int, Params, float], None] | None = None,
    chunk_size: int | None = None,
) -> EMResult:
    """Iterate E- and M-steps until the lower bound changes by less than ``tol``.

    The lower bound recorded for an iteration is the mean log-likelihood of
    the E-step that started it (as in scikit-learn), so the returned
    parameters are one M-step newer than the returned lower bound.
    """
    eps = float(np.finfo(X.dtype).eps)
    lower_bounds: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        previous = lower_bound
        stats = e_step(X, sample_weight, params, strategy, chunk_size)
        lower_bound = stats.mean_loglik
        if not math.isfinite(lower_bound):
            raise ValueError(
                "The log-likelihood is not finite: the data's scale overflows "
                "the computation. Scale the input data (for instance with "
                "sklearn.preprocessing.StandardScaler) and fit again."
            )
        params, _ = m_step(stats, strategy, reg_covar, variance_floor, eps)
        lower_bounds.append(lower_bound)
        change = lower_bound - previous
        logger.debug("iteration %d: lower bound %.10g", n_iter, lower_bound)
        if callback is not None:
            callback(n_iter, params, lower_bound)
        if abs(change) < tol:
            converged = True
            break
    return EMResult(params, lower_bound, lower_bounds, n_iter, converged)
