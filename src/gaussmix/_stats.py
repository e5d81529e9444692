"""Additive sufficient statistics of one E-step.

The statistics of any block of rows add up with ``+`` to the statistics of
the union of the blocks, so a chunked in-memory pass, an out-of-core pass or
a cluster reduction are all "sum the statistics, then run the M-step".

Sums are taken about a fixed per-component *shift* (the means the E-step
used), never about the origin: the naive ``E[x x^T] - mu mu^T`` cancels
catastrophically for data far from the origin, while differences from a
nearby shift keep every digit (the shift is close to the new mean, so the
correction ``delta delta^T`` it needs is small). Blocks only add when they
share the shift, which is checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ._covariance import CovarianceStrategy

Array = np.ndarray

__all__ = ["Moments", "SufficientStatistics", "block_statistics", "moments_of"]


@dataclass(frozen=True)
class SufficientStatistics:
    """Weighted statistics of a block of rows, in float64.

    Attributes
    ----------
    shift : ndarray of shape (n_components, n_features)
        The centre each component's sums are taken about.
    resp_sum : ndarray of shape (n_components,)
        ``sum_n w_n r_nk``: the effective number of samples per component.
    diff_sum : ndarray of shape (n_components, n_features)
        ``sum_n w_n r_nk (x_n - shift_k)``.
    scatter : ndarray
        ``sum_n w_n r_nk (x_n - shift_k)(x_n - shift_k)^T``, or only its
        diagonal, as the covariance strategy needs.
    weight_sum : float
        ``sum_n w_n``.
    loglik_sum : float
        ``sum_n w_n log p(x_n)`` under the parameters of the E-step (0 when
        the statistics come from given responsibilities).
    worst_loglik : float
        The smallest ``log p(x_n)`` among rows with positive weight.
    worst_sample : ndarray of shape (n_features,) or None
        The row that has it: where an emptied component is re-seeded.
    """

    shift: Array
    resp_sum: Array
    diff_sum: Array
    scatter: Array
    weight_sum: float
    loglik_sum: float
    worst_loglik: float = math.inf
    worst_sample: Array | None = None

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        if not isinstance(other, SufficientStatistics):
            return NotImplemented
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("Statistics taken about different shifts do not add up.")
        if other.worst_loglik < self.worst_loglik:
            worst_loglik, worst_sample = other.worst_loglik, other.worst_sample
        else:
            worst_loglik, worst_sample = self.worst_loglik, self.worst_sample
        return SufficientStatistics(
            shift=self.shift,
            resp_sum=self.resp_sum + other.resp_sum,
            diff_sum=self.diff_sum + other.diff_sum,
            scatter=self.scatter + other.scatter,
            weight_sum=self.weight_sum + other.weight_sum,
            loglik_sum=self.loglik_sum + other.loglik_sum,
            worst_loglik=worst_loglik,
            worst_sample=worst_sample,
        )

    def scaled(self, factor: float) -> SufficientStatistics:
        """The statistics of the same rows with every weight times ``factor``."""
        return replace(
            self,
            resp_sum=self.resp_sum * factor,
            diff_sum=self.diff_sum * factor,
            scatter=self.scatter * factor,
            weight_sum=self.weight_sum * factor,
            loglik_sum=self.loglik_sum * factor,
        )

    def recentred(self, shift: Array) -> SufficientStatistics:
        """The same statistics taken about another ``shift`` (K x D), exactly.

        With ``delta = shift - self.shift``, the sums of ``x - shift`` are
        ``diff_sum - resp_sum * delta``, and the scatter about the new shift
        is ``scatter - d delta^T - delta d^T + r delta delta^T``, where ``d``
        and ``r`` are ``diff_sum`` and ``resp_sum`` (only the diagonal when
        the scatter is diagonal). The correction is small when the shifts
        are close, as between the E-steps of nearby parameters.
        """
        shift = np.asarray(shift, dtype=np.float64)
        if np.array_equal(shift, self.shift):
            return self
        delta = shift - self.shift
        counts = self.resp_sum[:, None]
        diff_sum = self.diff_sum - counts * delta
        if self.scatter.ndim == 3:
            cross = self.diff_sum[:, :, None] * delta[:, None, :]
            outer = delta[:, :, None] * delta[:, None, :]
            scatter = (
                self.scatter
                - cross
                - np.swapaxes(cross, 1, 2)
                + counts[:, :, None] * outer
            )
        else:
            scatter = self.scatter - 2.0 * self.diff_sum * delta + counts * delta**2
        return replace(self, shift=shift, diff_sum=diff_sum, scatter=scatter)

    @property
    def mean_loglik(self) -> float:
        """Weighted mean log-likelihood of the rows: EM's lower bound."""
        return self.loglik_sum / self.weight_sum


def block_statistics(
    X: Array,
    diffs: Array,
    resp: Array,
    sample_weight: Array | None,
    shift: Array,
    strategy: CovarianceStrategy,
    log_prob_norm: Array | None = None,
) -> SufficientStatistics:
    """Statistics of one block of rows.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        The rows.
    diffs : ndarray of shape (n_components, n_rows, n_features)
        ``X - shift_k`` for each component, in the data's dtype.
    resp : ndarray of shape (n_rows, n_components)
        Responsibilities.
    sample_weight : ndarray of shape (n_rows,) or None
        Row weights; None means all ones.
    shift : ndarray of shape (n_components, n_features)
        The shift ``diffs`` were taken about, in float64.
    strategy : CovarianceStrategy
        Decides the form of the scatter statistic.
    log_prob_norm : ndarray of shape (n_rows,) or None
        ``log p(x_n)`` from the E-step, when there was one.
    """
    weighted = resp if sample_weight is None else resp * sample_weight[:, None]
    weighted_t = np.ascontiguousarray(weighted.T)
    resp_sum = weighted_t.sum(axis=1, dtype=np.float64)
    diff_sum = np.matmul(weighted_t[:, None, :], diffs)[:, 0, :]
    scatter = strategy.scatter(diffs, weighted_t)
    if sample_weight is None:
        weight_sum = float(X.shape[0])
    else:
        weight_sum = float(np.sum(sample_weight, dtype=np.float64))

    loglik_sum = 0.0
    worst_loglik = math.inf
    worst_sample = None
    if log_prob_norm is not None:
        if sample_weight is None:
            loglik_sum = float(np.sum(log_prob_norm, dtype=np.float64))
            candidates = log_prob_norm
        else:
            loglik_sum = float(np.dot(sample_weight, log_prob_norm.astype(np.float64)))
            candidates = np.where(sample_weight > 0, log_prob_norm, np.inf)
        if candidates.size:
            row = int(np.argmin(candidates))
            worst_loglik = float(candidates[row])
            worst_sample = X[row].astype(np.float64)

    return SufficientStatistics(
        shift=shift,
        resp_sum=resp_sum,
        diff_sum=diff_sum.astype(np.float64, copy=False),
        scatter=scatter.astype(np.float64, copy=False),
        weight_sum=weight_sum,
        loglik_sum=loglik_sum,
        worst_loglik=worst_loglik,
        worst_sample=worst_sample,
    )


class Moments(NamedTuple):
    """Weighted mean and centred sum of squares of each column, in float64.

    Moments of two blocks of rows add with ``+`` (Chan, Golub and LeVeque's
    update): each block's squares are taken about its own mean, never about
    the origin, so one pass gives variances whose relative error is about
    ``eps * |mean| / spread`` (the rounding of the means against the
    columns' spread, from the differences of means), where squares about
    the origin lose ``eps * (|mean| / spread)^2``.
    """

    weight: float  # sum_n w_n
    mean: Array  # D
    squares: Array  # D: sum_n w_n (x_n - mean)^2

    def __add__(self, other: object) -> Moments:
        if not isinstance(other, Moments):
            return NotImplemented
        if other.weight == 0:
            return self
        if self.weight == 0:
            return other
        weight = self.weight + other.weight
        delta = other.mean - self.mean
        share = other.weight / weight
        return Moments(
            weight,
            self.mean + delta * share,
            self.squares + other.squares + delta * delta * (self.weight * share),
        )

    @property
    def variances(self) -> Array:
        """The weighted variance of each column (zero for no weight)."""
        if self.weight == 0:
            return np.zeros_like(self.mean)
        return np.maximum(self.squares / self.weight, 0.0)


def moments_of(X: Array, sample_weight: Array | None) -> Moments:
    """:class:`Moments` of a block of rows (a float64 copy of it is made).

    Column sums are taken as products with the weights (or ones): NumPy's
    reduction down the columns of a narrow array goes a few values at a
    time (a pass of case (e) of benchmarks/bench_em.py, 4 columns, took
    38 ms that way, 17 ms this way).
    """
    values = np.array(X, dtype=np.float64)
    if sample_weight is None:
        weights = np.ones(values.shape[0])
    else:
        weights = np.asarray(sample_weight, dtype=np.float64)
    weight = float(np.add.reduce(weights))
    if weight == 0:
        return Moments(0.0, np.zeros(values.shape[1]), np.zeros(values.shape[1]))
    mean = (weights @ values) / weight
    values -= mean
    values *= values
    return Moments(weight, mean, weights @ values)
