"""One strategy class per covariance type.

This module is the only place in the package that knows the four covariance
types exist. Everything else asks :func:`get_covariance` for a strategy and
calls its methods, which are named after what they compute:

* ``whiten``: the whitened differences ``(x - mu_k) @ L_k`` where ``L_k`` is
  the Cholesky factor of the precision (so that the squared Mahalanobis
  distance is the squared norm of the result);
* ``log_pdet``: ``log det L_k``, half the log-determinant of the precision;
* ``scatter``: the weighted scatter statistic of one block of differences;
* ``covariances``: the M-step from centred scatter statistics;
* ``colorize``: turning standard normal draws into draws of each component.

The fast E-step expands the quadratic form: with ``z = x - c`` for a centre
``c`` near the data, ``log w_k + log N(x | mu_k, Sigma_k)`` is a linear
function of the features ``phi(z) = [quadratic terms of z, z, 1]``, so one
matrix product ``W @ phi`` gives every component's log-density, and the
product of the responsibilities with the same features gives every
statistic the M-step needs (``expand``, ``expanded_weights``,
``from_expanded``). The expansion loses about ``log10(expansion_error)``
digits, which the engine checks before using it.

Covariances are never inverted: precision Cholesky factors come from a
Cholesky factorisation and the inverse of its triangular factor.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import numpy as np
import scipy.linalg

from ._errors import DegenerateCovarianceError

Array = np.ndarray
_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["COVARIANCE_TYPES", "CovarianceStrategy", "get_covariance"]


def _ill_defined_message(dtype: np.dtype) -> str:
    # Same words as scikit-learn, so that code matching on them keeps working.
    message = (
        "Fitting the mixture model failed because some components have "
        "ill-defined empirical covariance (for instance caused by singleton "
        "or collapsed samples). Try to decrease the number of components, "
        "increase reg_covar, or scale the input data."
    )
    if dtype == np.float32:
        message += (
            " The numerical accuracy can also be improved by passing float64"
            " data instead of float32."
        )
    return message


def _cholesky_lower(matrix: Array) -> Array:
    """Lower Cholesky factor, raising ``LinAlgError`` when not positive definite."""
    return np.linalg.cholesky(matrix)


def _precision_cholesky_of(covariance: Array) -> Array:
    """Upper-triangular ``U`` with ``U @ U.T == inv(covariance)``.

    ``covariance = C @ C.T`` (lower ``C``); then ``U = inv(C).T``, the
    inverse of the triangular factor (LAPACK's ``trtri``), never by
    inverting the covariance.
    """
    return _precision_cholesky_factors(covariance[None])[0]


def _precision_cholesky_factors(covariances: Array) -> Array:
    """:func:`_precision_cholesky_of` of each of K covariances (K x D x D).

    One batched Cholesky factorisation, then one ``trtri`` per factor: for
    K = 8, D = 4 (case (e) of benchmarks/bench_em.py) 32 us against 190 for
    a factorisation and a checked triangular solve per component. Raises
    ``LinAlgError`` with the first failing component as ``component``.
    """
    try:
        chol = _cholesky_lower(covariances)
    except np.linalg.LinAlgError:  # one by one, to name the first that fails
        chol = np.zeros_like(covariances)
        for k in range(covariances.shape[0]):
            try:
                chol[k] = _cholesky_lower(covariances[k])
            except np.linalg.LinAlgError:
                break  # a zero diagonal: it fails below, after any before it
    trtri = _TRTRI[chol.dtype.char]
    out = np.zeros_like(covariances)
    good = np.all(np.diagonal(chol, axis1=-2, axis2=-1) > 0, axis=-1)
    for k in range(covariances.shape[0]):
        if not good[k]:
            break
        inverse, info = trtri(chol[k], lower=1)
        if info != 0:
            good[k] = False
            break
        out[k] = inverse.T
    # One check of every factor, not one per component.
    good &= np.isfinite(out).all(axis=(1, 2))
    if not good.all():
        singular = np.linalg.LinAlgError("covariance is singular")
        singular.component = int(np.argmin(good))  # type: ignore[attr-defined]
        raise singular
    return out


@functools.cache
def _upper_pairs(n_features: int) -> tuple[Array, Array]:
    """The upper triangle's ``(i, j)``, ``i <= j``, diagonal by diagonal
    (``j - i = 0, 1, ...``, ``i`` rising along each): the quadratic features'
    order, in which each diagonal's products ``z_i z_{i+d}`` are one NumPy
    call over two blocks of ``z``'s rows (:meth:`_DenseMixin.expand`).
    Read-only, made once per size: the expansion asks for them every
    iteration (60 us of a 120 us expansion of case (e) of
    benchmarks/bench_em.py)."""
    first = np.concatenate([np.arange(n_features - d) for d in range(n_features)])
    second = np.concatenate([np.arange(d, n_features) for d in range(n_features)])
    pairs = first.astype(np.intp), second.astype(np.intp)
    for index in pairs:
        index.flags.writeable = False
    return pairs


@functools.cache
def _upper_weights(n_features: int) -> tuple[Array, Array]:
    """For :meth:`_DenseMixin._expanded_from_factors`: the upper triangle's
    flat indices into a D x D matrix (in :func:`_upper_pairs`' order), and
    each quadratic feature's coefficient (-1/2 on the diagonal, -1 off it:
    ``-1/2 z^T P z`` counts each pair twice). Read-only, made once per size.
    """
    upper_i, upper_j = _upper_pairs(n_features)
    flat = upper_i * n_features + upper_j
    coefficients = -0.5 * np.where(upper_i == upper_j, 1.0, 2.0)
    for array in (flat, coefficients):
        array.flags.writeable = False
    return flat, coefficients


# LAPACK's inverse of a triangular matrix, by dtype character.
_TRTRI = {"d": scipy.linalg.lapack.dtrtri, "f": scipy.linalg.lapack.strtri}


def _precision_cholesky_from_precision(precision: Array) -> Array:
    """Upper-triangular ``U`` with ``U @ U.T == precision``.

    The Cholesky factor of the row- and column-reversed precision, reversed
    back, gives the upper-triangular factor (scikit-learn's convention).
    """
    flipped = np.linalg.cholesky(precision[::-1, ::-1])
    return np.ascontiguousarray(flipped[::-1, ::-1])


def _check_symmetric_positive_definite(matrix: Array, name: str) -> None:
    if not (np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
        raise ValueError(f"'{name} precision' should be symmetric, positive-definite")


class CovarianceStrategy:
    """Operations of one covariance type. Subclasses fill in the details.

    Shapes, with K components and D features:

    * ``param_shape``: the shape of ``covariances_``, ``precisions_`` and
      ``precisions_cholesky_``;
    * ``scatter_shape``: the shape of the per-component scatter statistic
      (K x D x D when the type needs cross products, else K x D).
    """

    name: ClassVar[str]
    # Whether covariances, precision factors and scatter are D x D matrices
    # (full, tied): the compiled parameter steps take those.
    square: ClassVar[bool] = False

    # -- shapes and counting -------------------------------------------------
    def param_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        raise NotImplementedError

    def scatter_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        raise NotImplementedError

    def scatter_from_dense(self, dense: Array) -> Array:
        """The scatter statistic's form of per-component matrices (K x D x D)."""
        raise NotImplementedError

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of a mixture with this covariance type."""
        cov = self._n_covariance_parameters(n_components, n_features)
        return int(cov + n_features * n_components + n_components - 1)

    def _n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        raise NotImplementedError

    # -- E-step ------------------------------------------------------------
    def whiten(self, diffs: Array, prec_chol: Array) -> Array:
        """Squared Mahalanobis distances from per-component differences.

        ``diffs`` has shape K x n x D (``x - mu_k``); returns K x n.
        """
        raise NotImplementedError

    def log_pdet(self, prec_chol: Array, n_features: int) -> Array:
        """``log det`` of each precision Cholesky factor, shape K."""
        raise NotImplementedError

    # -- M-step ------------------------------------------------------------
    def scatter(self, diffs: Array, weighted_resp_t: Array) -> Array:
        """Weighted scatter of one block: ``sum_n r_nk d_nk d_nk^T`` (or diagonal).

        ``diffs`` is K x n x D, ``weighted_resp_t`` is K x n.
        """
        raise NotImplementedError

    def centre(self, scatter: Array, counts: Array, delta: Array) -> Array:
        """Move scatter taken about a shift to scatter about the new means.

        ``delta`` (K x D) is the new mean minus the shift.
        """
        raise NotImplementedError

    def covariances(self, centred: Array, counts: Array, reg_covar: float) -> Array:
        """Covariance parameters from centred scatter and effective counts."""
        raise NotImplementedError

    def variances(self, covariances: Array) -> Array:
        """The per-component variances on the diagonal, shape K x D."""
        raise NotImplementedError

    def dense(self, covariances: Array, n_components: int, n_features: int) -> Array:
        """Every component's covariance as a D x D matrix: K x D x D."""
        variances = np.broadcast_to(
            self.variances(covariances), (n_components, n_features)
        )
        out = np.zeros((n_components, n_features, n_features), covariances.dtype)
        idx = np.arange(n_features)
        out[:, idx, idx] = variances
        return out

    def smallest_variances(self, covariances: Array) -> Array:
        """Smallest variance along any direction, per covariance matrix.

        The smallest eigenvalue; shape K (1 for tied).
        """
        return np.min(self.variances(covariances), axis=1)

    def add_to_variances(
        self, covariances: Array, amount: Array, component: int | None
    ) -> Array:
        """Add ``amount`` (shape D) to the variances of one component (or all)."""
        raise NotImplementedError

    def replace_component(self, covariances: Array, component: int) -> Array:
        """Give ``component`` the average covariance of the others (re-seeding)."""
        raise NotImplementedError

    # -- the expanded (quadratic-feature) form --------------------------------
    def n_quadratic(self, n_features: int) -> int:
        """Number of quadratic feature rows in ``phi(z)``."""
        raise NotImplementedError

    def n_expanded(self, n_features: int) -> int:
        """Number of rows of ``phi(z)``: the quadratic ones, ``z``, and 1."""
        return self.n_quadratic(n_features) + n_features + 1

    def expand(self, phi: Array, n_features: int) -> None:
        """Fill the quadratic rows of ``phi`` (F x n) from its ``z`` rows.

        ``phi`` holds the quadratic rows first, then the ``n_features`` rows
        of ``z``, then a row of ones; only the first block is written.
        """
        raise NotImplementedError

    def quadratic_pairs(self, n_features: int) -> tuple[Array, Array]:
        """Feature indices ``(i, j)`` of the quadratic rows: row ``q`` is ``z_i z_j``.

        The same rows, in the same order, as :meth:`expand` writes; for
        building ``phi`` with an array library that has no ``out=``.
        """
        raise NotImplementedError

    def expanded_weights(
        self,
        log_weights: Array,
        means: Array,
        prec_chol: Array,
        centre: Array,
    ) -> Array:
        """``W`` (K x F) with ``W @ phi(x - centre)`` the weighted log-densities.

        ``centre`` has shape D, or K x D for a centre per component (row
        ``k`` of ``W`` is then for the features ``phi(x - centre[k])``).
        """
        raise NotImplementedError

    def from_expanded(self, sums: Array, n_features: int) -> tuple[Array, Array, Array]:
        """Split ``resp^T phi`` (K x F) into the counts, sums and scatter.

        Returns ``resp_sum`` (K), ``diff_sum`` (K x D) and the scatter, all
        taken about the centre the features were computed for.
        """
        quadratic = self.n_quadratic(n_features)
        resp_sum = sums[:, -1].copy()
        diff_sum = sums[:, quadratic : quadratic + n_features].copy()
        return resp_sum, diff_sum, self._scatter_from_quadratic(sums[:, :quadratic])

    def _scatter_from_quadratic(self, quadratic_sums: Array) -> Array:
        raise NotImplementedError

    def expansion_error(self, means: Array, prec_chol: Array, centre: Array) -> float:
        """How many times machine epsilon the expanded form may lose.

        The expansion cancels terms of the size of ``|mu_k - c|^2`` in
        units of the component's smallest variance: this is the largest
        such ratio over the components (an upper bound).
        """
        raise NotImplementedError

    def expansion_error_bound(
        self, means: Array, prec_chol: Array, centre: Array
    ) -> float:
        """An upper bound on :meth:`expansion_error`, quicker to work out
        (full, tied: the factors' Frobenius norms, not their spectral norms;
        the others: the error itself)."""
        return self.expansion_error(means, prec_chol, centre)

    def conditioning(
        self, means: Array, covariances: Array, prec_chol: Array, centre: Array
    ) -> float:
        """How many times machine epsilon a covariance's thinnest direction
        may lose where the E-step works in the rows' dtype about ``centre``
        (D, or K x D: one centre per component).

        Each sum of products ``z_i z_j`` (``z = x - c``) is rounded in
        proportion to ``s_i s_j``, where ``s_i^2 = C_ii + (mu_i - c_i)^2``
        is the square of feature i's spread about ``c``, and so is each term
        ``P_ij z_i z_j`` of an expanded log-density. Relative to a
        covariance's smallest eigenvalue that is up to
        ``lambda_max(S P S)`` (random rounding) or D times it (the worst
        case); this returns ``trace(S P S)``, between the two, the largest
        over the components. Unlike :meth:`expansion_error` it grows with
        the correlations of a component's own features (a covariance of
        condition 1e7 loses all of its thinnest direction in float32, even
        about its own mean) and not with their scales.
        """
        raise NotImplementedError

    def whitening_factors(self, prec_chol: Array, n_components: int) -> Array | None:
        """Each component's precision Cholesky factor ``L_k`` (K x D x D),
        where its quadratic form mixes features (full, tied); None where it
        does not (diag, spherical).

        An expanded log-density sums the terms ``P_ij z_i z_j``, which
        cancel where features correlate strongly, even about the
        component's own mean; ``|L_k^T z|^2`` loses nothing there. Without
        cross terms the expansion about each mean is as exact.
        """
        return None

    # -- parametrisations ----------------------------------------------------
    def precision_cholesky(self, covariances: Array) -> Array:
        """Precision Cholesky factors; :class:`DegenerateCovarianceError` if not PD."""
        raise NotImplementedError

    def precision_cholesky_from_precisions(self, precisions: Array) -> Array:
        raise NotImplementedError

    def precisions(self, prec_chol: Array) -> Array:
        raise NotImplementedError

    def covariances_from_precision_cholesky(self, prec_chol: Array) -> Array:
        raise NotImplementedError

    def check_precisions(
        self, precisions: Array, n_components: int, n_features: int
    ) -> None:
        """Raise scikit-learn's ValueError for a wrong shape or a non-PD matrix."""
        expected = self.param_shape(n_components, n_features)
        if precisions.shape != expected:
            raise ValueError(
                f"The parameter '{self.name} precision' should have the shape of "
                f"{expected}, but got {precisions.shape}"
            )

    # -- sampling ----------------------------------------------------------
    def colorize(
        self,
        rng: np.random.RandomState,
        means: Array,
        covariances: Array,
        counts: Array,
    ) -> Array:
        """Draw ``counts[k]`` samples from each component, stacked in order."""
        raise NotImplementedError


class _DenseMixin:
    """Shared pieces of the two types with dense D x D matrices."""

    square: ClassVar[bool] = True

    def n_quadratic(self, n_features: int) -> int:
        return n_features * (n_features + 1) // 2

    def expand(self, phi: Array, n_features: int) -> None:
        """Diagonal by diagonal (see :func:`_upper_pairs`): two operands of
        one shape, where one row of ``z`` broadcast against the rows after
        it had made NumPy's multiply slower. With the workers' 512-value
        ufunc buffer, a chunk's expansion took 185 us instead of 260 in
        float64 and 118 instead of 204 in float32 (case (d) of
        benchmarks/bench_em.py, 256 rows of 64 features), 117 instead of
        127 and 116 instead of 126 (case (b), 16 features); the NumPy
        E-step of (d) 5% less in float64, 9% in float32."""
        z = phi[self.n_quadratic(n_features) :][:n_features]
        row = 0
        for d in range(n_features):
            np.multiply(z[: n_features - d], z[d:], out=phi[row : row + n_features - d])
            row += n_features - d

    def quadratic_pairs(self, n_features: int) -> tuple[Array, Array]:
        first, second = _upper_pairs(n_features)
        return first.copy(), second.copy()  # writeable, as their callers' own

    def _expanded_from_factors(
        self, log_weights: Array, means: Array, factors: Array, centre: Array
    ) -> Array:
        """Shared by full and tied: ``factors`` is K x D x D (upper ``L_k``),
        or 1 x D x D for one factor shared by all."""
        n_components, n_features = means.shape
        offsets = means - centre
        whitened = np.matmul(offsets[:, None, :], factors)[:, 0, :]  # a^T L
        precision_offsets = np.matmul(factors, whitened[:, :, None])[:, :, 0]  # P a
        precisions = np.matmul(factors, np.swapaxes(factors, 1, 2))
        flat, coefficients = _upper_weights(n_features)
        log_det = np.sum(np.log(np.diagonal(factors, axis1=1, axis2=2)), axis=1)
        quadratic = self.n_quadratic(n_features)
        weights = np.empty((n_components, quadratic + n_features + 1))
        upper = np.take(precisions.reshape(precisions.shape[0], -1), flat, axis=1)
        np.multiply(coefficients, upper, out=weights[:, :quadratic])
        weights[:, quadratic:-1] = precision_offsets
        weights[:, -1] = (
            log_weights
            + log_det
            - 0.5 * n_features * _LOG_2PI
            - 0.5 * np.einsum("kd,kd->k", whitened, whitened)
        )
        return weights

    def _scatter_from_quadratic(self, quadratic_sums: Array) -> Array:
        n_components = quadratic_sums.shape[0]
        n_features = round((math.sqrt(8 * quadratic_sums.shape[1] + 1) - 1) / 2)
        upper_i, upper_j = _upper_pairs(n_features)
        out = np.empty((n_components, n_features, n_features))
        out[:, upper_i, upper_j] = quadratic_sums
        out[:, upper_j, upper_i] = quadratic_sums
        return out

    def conditioning(
        self, means: Array, covariances: Array, prec_chol: Array, centre: Array
    ) -> float:
        n_features = means.shape[1]
        factors = prec_chol.reshape((-1, n_features, n_features))
        precision_diagonal = np.sum(factors**2, axis=2)  # P = L L^T
        variances = self.variances(covariances)  # type: ignore[attr-defined]
        spreads = variances + (means - centre) ** 2
        return float(np.max(np.sum(spreads * precision_diagonal, axis=1)))

    def whitening_factors(self, prec_chol: Array, n_components: int) -> Array | None:
        n_features = prec_chol.shape[-1]
        factors = prec_chol.reshape((-1, n_features, n_features))
        return np.broadcast_to(factors, (n_components, n_features, n_features))

    @staticmethod
    def _factor_error(means: Array, factors: Array, centre: Array) -> float:
        offsets = np.sum((means - centre) ** 2, axis=1)
        largest_precision = np.linalg.norm(factors, ord=2, axis=(1, 2)) ** 2
        return float(np.max(offsets * largest_precision))

    def expansion_error_bound(
        self, means: Array, prec_chol: Array, centre: Array
    ) -> float:
        """``|mu_k - c|^2 ||L_k||_F^2``: the squared Frobenius norm is the
        sum of the squared singular values, so at least the largest (at
        most D times it). One call, where the spectral norms take a batched
        SVD: 4 us against 21 for three components of Old Faithful."""
        n_features = means.shape[1]
        factors = prec_chol.reshape((-1, n_features, n_features))
        offsets = np.sum((means - centre) ** 2, axis=1)
        squares = np.einsum("kij,kij->k", factors, factors)
        return float(np.max(offsets * squares))

    def dense(self, covariances: Array, n_components: int, n_features: int) -> Array:
        stacked = covariances.reshape((-1, *covariances.shape[-2:]))
        return np.broadcast_to(stacked, (n_components, *stacked.shape[1:])).copy()

    def smallest_variances(self, covariances: Array) -> Array:
        stacked = covariances.reshape((-1, *covariances.shape[-2:]))
        return np.linalg.eigvalsh(stacked)[:, 0]

    def scatter_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features, n_features)

    def scatter_from_dense(self, dense: Array) -> Array:
        return dense

    def scatter(self, diffs: Array, weighted_resp_t: Array) -> Array:
        weighted = diffs * weighted_resp_t[:, :, None]
        return np.matmul(np.swapaxes(weighted, 1, 2), diffs)

    def centre(self, scatter: Array, counts: Array, delta: Array) -> Array:
        outer = delta[:, :, None] * delta[:, None, :]
        centred = scatter - counts[:, None, None] * outer
        # Symmetrise: rounding in the products above is not symmetric.
        return 0.5 * (centred + np.swapaxes(centred, 1, 2))


class _VectorMixin:
    """Shared pieces of the two types with diagonal covariances."""

    def n_quadratic(self, n_features: int) -> int:
        return n_features

    def expand(self, phi: Array, n_features: int) -> None:
        z = phi[n_features : 2 * n_features]
        np.multiply(z, z, out=phi[:n_features])

    def quadratic_pairs(self, n_features: int) -> tuple[Array, Array]:
        diagonal = np.arange(n_features)
        return diagonal, diagonal

    def _scatter_from_quadratic(self, quadratic_sums: Array) -> Array:
        return quadratic_sums.copy()

    def conditioning(
        self, means: Array, covariances: Array, prec_chol: Array, centre: Array
    ) -> float:
        """No products of two features here: each variance loses at most
        ``(C_ii + (mu_i - c_i)^2) / C_ii`` times epsilon."""
        variances = self.variances(covariances)  # type: ignore[attr-defined]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = 1.0 + (means - centre) ** 2 / variances
        return float(np.max(ratios)) if np.all(ratios < np.inf) else math.inf

    def _expanded_from_precisions(
        self,
        log_weights: Array,
        means: Array,
        precisions: Array,
        log_det: Array,
        centre: Array,
    ) -> Array:
        """Shared by diag and spherical: ``precisions`` is K x D."""
        n_components, n_features = means.shape
        offsets = means - centre
        weights = np.empty((n_components, 2 * n_features + 1))
        weights[:, :n_features] = -0.5 * precisions
        weights[:, n_features:-1] = precisions * offsets
        weights[:, -1] = (
            log_weights
            + log_det
            - 0.5 * n_features * _LOG_2PI
            - 0.5 * np.sum(precisions * offsets * offsets, axis=1)
        )
        return weights

    def scatter_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def scatter_from_dense(self, dense: Array) -> Array:
        return np.diagonal(dense, axis1=1, axis2=2).copy()

    def scatter(self, diffs: Array, weighted_resp_t: Array) -> Array:
        return np.matmul(weighted_resp_t[:, None, :], diffs * diffs)[:, 0, :]

    def centre(self, scatter: Array, counts: Array, delta: Array) -> Array:
        return scatter - counts[:, None] * delta * delta


class FullCovariance(_DenseMixin, CovarianceStrategy):
    """Each component has its own full covariance matrix (mclust's VVV)."""

    name = "full"

    def param_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features, n_features)

    def _n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        return n_components * n_features * (n_features + 1) / 2.0

    def whiten(self, diffs: Array, prec_chol: Array) -> Array:
        y = np.matmul(diffs, prec_chol)
        return np.einsum("knd,knd->kn", y, y)

    def log_pdet(self, prec_chol: Array, n_features: int) -> Array:
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)

    def expanded_weights(
        self, log_weights: Array, means: Array, prec_chol: Array, centre: Array
    ) -> Array:
        return self._expanded_from_factors(log_weights, means, prec_chol, centre)

    def expansion_error(self, means: Array, prec_chol: Array, centre: Array) -> float:
        return self._factor_error(means, prec_chol, centre)

    def covariances(self, centred: Array, counts: Array, reg_covar: float) -> Array:
        cov = centred / counts[:, None, None]
        n_features = cov.shape[-1]
        cov[:, np.arange(n_features), np.arange(n_features)] += reg_covar
        return cov

    def variances(self, covariances: Array) -> Array:
        return np.diagonal(covariances, axis1=1, axis2=2).copy()

    def add_to_variances(
        self, covariances: Array, amount: Array, component: int | None
    ) -> Array:
        out = covariances.copy()
        idx = np.arange(out.shape[-1])
        if component is None:
            out[:, idx, idx] += amount
        else:
            out[component, idx, idx] += amount
        return out

    def replace_component(self, covariances: Array, component: int) -> Array:
        out = covariances.copy()
        others = np.delete(covariances, component, axis=0)
        if others.shape[0]:
            out[component] = others.mean(axis=0)
        return out

    def precision_cholesky(self, covariances: Array) -> Array:
        try:
            return _precision_cholesky_factors(covariances)
        except np.linalg.LinAlgError as error:
            raise DegenerateCovarianceError(
                _ill_defined_message(covariances.dtype),
                component=error.component,  # type: ignore[attr-defined]
            ) from None

    def precision_cholesky_from_precisions(self, precisions: Array) -> Array:
        return np.stack(
            [_precision_cholesky_from_precision(p) for p in precisions]
        ).astype(precisions.dtype, copy=False)

    def precisions(self, prec_chol: Array) -> Array:
        return np.matmul(prec_chol, np.swapaxes(prec_chol, 1, 2))

    def covariances_from_precision_cholesky(self, prec_chol: Array) -> Array:
        n_features = prec_chol.shape[-1]
        identity = np.eye(n_features, dtype=prec_chol.dtype)
        out = np.empty_like(prec_chol)
        for k, u in enumerate(prec_chol):
            # precision = U U^T, covariance = inv(U)^T inv(U)
            u_inv = scipy.linalg.solve_triangular(u, identity, lower=False)
            out[k] = u_inv.T @ u_inv
        return out

    def check_precisions(
        self, precisions: Array, n_components: int, n_features: int
    ) -> None:
        super().check_precisions(precisions, n_components, n_features)
        for precision in precisions:
            _check_symmetric_positive_definite(precision, self.name)

    def colorize(
        self,
        rng: np.random.RandomState,
        means: Array,
        covariances: Array,
        counts: Array,
    ) -> Array:
        return np.vstack(
            [
                rng.multivariate_normal(mean, cov, int(count))
                for mean, cov, count in zip(means, covariances, counts, strict=True)
            ]
        )


class TiedCovariance(_DenseMixin, CovarianceStrategy):
    """All components share one full covariance matrix (mclust's EEE)."""

    name = "tied"

    def param_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_features, n_features)

    def _n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        return n_features * (n_features + 1) / 2.0

    def whiten(self, diffs: Array, prec_chol: Array) -> Array:
        y = np.matmul(diffs, prec_chol)
        return np.einsum("knd,knd->kn", y, y)

    def log_pdet(self, prec_chol: Array, n_features: int) -> Array:
        return np.sum(np.log(np.diagonal(prec_chol)))

    def expanded_weights(
        self, log_weights: Array, means: Array, prec_chol: Array, centre: Array
    ) -> Array:
        # The one factor broadcast by matmul: one precision, not K copies.
        return self._expanded_from_factors(log_weights, means, prec_chol[None], centre)

    def expansion_error(self, means: Array, prec_chol: Array, centre: Array) -> float:
        return self._factor_error(means, prec_chol[None], centre)

    def covariances(self, centred: Array, counts: Array, reg_covar: float) -> Array:
        cov = centred.sum(axis=0) / counts.sum()
        cov[np.diag_indices(cov.shape[0])] += reg_covar
        return cov

    def variances(self, covariances: Array) -> Array:
        return np.diagonal(covariances)[None, :].copy()

    def add_to_variances(
        self, covariances: Array, amount: Array, component: int | None
    ) -> Array:
        out = covariances.copy()
        out[np.diag_indices_from(out)] += amount
        return out

    def replace_component(self, covariances: Array, component: int) -> Array:
        return covariances.copy()

    def precision_cholesky(self, covariances: Array) -> Array:
        try:
            return _precision_cholesky_of(covariances)
        except np.linalg.LinAlgError:
            raise DegenerateCovarianceError(
                _ill_defined_message(covariances.dtype), component=None
            ) from None

    def precision_cholesky_from_precisions(self, precisions: Array) -> Array:
        return _precision_cholesky_from_precision(precisions).astype(
            precisions.dtype, copy=False
        )

    def precisions(self, prec_chol: Array) -> Array:
        return prec_chol @ prec_chol.T

    def covariances_from_precision_cholesky(self, prec_chol: Array) -> Array:
        identity = np.eye(prec_chol.shape[-1], dtype=prec_chol.dtype)
        u_inv = scipy.linalg.solve_triangular(prec_chol, identity, lower=False)
        return u_inv.T @ u_inv

    def check_precisions(
        self, precisions: Array, n_components: int, n_features: int
    ) -> None:
        super().check_precisions(precisions, n_components, n_features)
        _check_symmetric_positive_definite(precisions, self.name)

    def colorize(
        self,
        rng: np.random.RandomState,
        means: Array,
        covariances: Array,
        counts: Array,
    ) -> Array:
        return np.vstack(
            [
                rng.multivariate_normal(mean, covariances, int(count))
                for mean, count in zip(means, counts, strict=True)
            ]
        )


class _VectorCovariance(_VectorMixin, CovarianceStrategy):
    """Diagonal and spherical share their parametrisation by standard deviations."""

    def precision_cholesky(self, covariances: Array) -> Array:
        bad = np.flatnonzero(
            np.any(~(covariances.reshape(covariances.shape[0], -1) > 0.0), axis=1)
        )
        if bad.size:
            raise DegenerateCovarianceError(
                _ill_defined_message(covariances.dtype), component=int(bad[0])
            )
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions: Array) -> Array:
        return np.sqrt(precisions)

    def precisions(self, prec_chol: Array) -> Array:
        return prec_chol**2

    def covariances_from_precision_cholesky(self, prec_chol: Array) -> Array:
        return 1.0 / prec_chol**2

    def check_precisions(
        self, precisions: Array, n_components: int, n_features: int
    ) -> None:
        super().check_precisions(precisions, n_components, n_features)
        if np.any(np.less_equal(precisions, 0.0)):
            raise ValueError(f"'{self.name} precision' should be positive")


class DiagCovariance(_VectorCovariance):
    """Each component has its own diagonal covariance (mclust's VVI)."""

    name = "diag"

    def param_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def _n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        return n_components * n_features

    def whiten(self, diffs: Array, prec_chol: Array) -> Array:
        y = diffs * prec_chol[:, None, :]
        return np.einsum("knd,knd->kn", y, y)

    def log_pdet(self, prec_chol: Array, n_features: int) -> Array:
        return np.sum(np.log(prec_chol), axis=1)

    def expanded_weights(
        self, log_weights: Array, means: Array, prec_chol: Array, centre: Array
    ) -> Array:
        log_det = self.log_pdet(prec_chol, means.shape[1])
        return self._expanded_from_precisions(
            log_weights, means, prec_chol**2, log_det, centre
        )

    def expansion_error(self, means: Array, prec_chol: Array, centre: Array) -> float:
        return float(np.max(np.sum(((means - centre) * prec_chol) ** 2, axis=1)))

    def covariances(self, centred: Array, counts: Array, reg_covar: float) -> Array:
        return centred / counts[:, None] + reg_covar

    def variances(self, covariances: Array) -> Array:
        return covariances.copy()

    def add_to_variances(
        self, covariances: Array, amount: Array, component: int | None
    ) -> Array:
        out = covariances.copy()
        if component is None:
            out += amount
        else:
            out[component] += amount
        return out

    def replace_component(self, covariances: Array, component: int) -> Array:
        out = covariances.copy()
        others = np.delete(covariances, component, axis=0)
        if others.shape[0]:
            out[component] = others.mean(axis=0)
        return out

    def colorize(
        self,
        rng: np.random.RandomState,
        means: Array,
        covariances: Array,
        counts: Array,
    ) -> Array:
        n_features = means.shape[1]
        return np.vstack(
            [
                mean + rng.standard_normal(size=(count, n_features)) * np.sqrt(cov)
                for mean, cov, count in zip(means, covariances, counts, strict=True)
            ]
        )


class SphericalCovariance(_VectorCovariance):
    """Each component has its own single variance (mclust's VII)."""

    name = "spherical"

    def param_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components,)

    def _n_covariance_parameters(self, n_components: int, n_features: int) -> float:
        return n_components

    def whiten(self, diffs: Array, prec_chol: Array) -> Array:
        return np.einsum("knd,knd->kn", diffs, diffs) * (prec_chol**2)[:, None]

    def log_pdet(self, prec_chol: Array, n_features: int) -> Array:
        return n_features * np.log(prec_chol)

    def expanded_weights(
        self, log_weights: Array, means: Array, prec_chol: Array, centre: Array
    ) -> Array:
        n_features = means.shape[1]
        log_det = self.log_pdet(prec_chol, n_features)
        precisions = np.repeat((prec_chol**2)[:, None], n_features, axis=1)
        return self._expanded_from_precisions(
            log_weights, means, precisions, log_det, centre
        )

    def expansion_error(self, means: Array, prec_chol: Array, centre: Array) -> float:
        offsets = np.sum((means - centre) ** 2, axis=1)
        return float(np.max(offsets * prec_chol**2))

    def covariances(self, centred: Array, counts: Array, reg_covar: float) -> Array:
        return np.mean(centred / counts[:, None] + reg_covar, axis=1)

    def variances(self, covariances: Array) -> Array:
        return covariances[:, None].copy()

    def add_to_variances(
        self, covariances: Array, amount: Array, component: int | None
    ) -> Array:
        out = covariances.copy()
        scalar = float(np.mean(amount))
        if component is None:
            out += scalar
        else:
            out[component] += scalar
        return out

    def replace_component(self, covariances: Array, component: int) -> Array:
        out = covariances.copy()
        others = np.delete(covariances, component)
        if others.shape[0]:
            out[component] = others.mean()
        return out

    def colorize(
        self,
        rng: np.random.RandomState,
        means: Array,
        covariances: Array,
        counts: Array,
    ) -> Array:
        n_features = means.shape[1]
        return np.vstack(
            [
                mean + rng.standard_normal(size=(count, n_features)) * math.sqrt(cov)
                for mean, cov, count in zip(means, covariances, counts, strict=True)
            ]
        )


_REGISTRY: dict[str, CovarianceStrategy] = {
    strategy.name: strategy
    for strategy in (
        FullCovariance(),
        TiedCovariance(),
        DiagCovariance(),
        SphericalCovariance(),
    )
}

COVARIANCE_TYPES: tuple[str, ...] = tuple(_REGISTRY)


def get_covariance(name: str) -> CovarianceStrategy:
    """The strategy object for a covariance type name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"covariance_type must be one of {sorted(_REGISTRY)}, got {name!r}"
        ) from None
