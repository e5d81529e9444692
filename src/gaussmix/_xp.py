"""Arrays of the array API standard (PyTorch on CPU or CUDA, CuPy): EM where they live.

:class:`XpSource` holds the rows in the input's own namespace and device
and answers every question of the fit there, through the array API
standard (``array-api-compat``), so one implementation serves every such
library. Only small things cross to the host: the expanded weights ``W``
(K x F) on the way in, the statistics (K x F, float64) and a few scalars on
the way out. The initialisation's k-means runs on the device too
(:mod:`gaussmix._kmeans`, scikit-learn's algorithm with its random draws;
on the host's CPU, scikit-learn's own). The M-step stays on the host in
float64, so a fit gives the NumPy engine's answer.

The E-step is the expanded one of :mod:`gaussmix._em`: a chunk of rows
becomes quadratic features ``phi`` (F x n) about a centre ``c``, one
product ``W @ phi`` gives every weighted log-density and one product
``resp @ phi^T`` every statistic. Where the NumPy engine would refuse the
expansion (components far apart relative to their widths, or features so
correlated that its sums would cancel) each component's terms are taken
about its own mean instead (features K x F x n, batched products), its
log-densities whitened (``|L_k^T (x - mu_k)|^2``) as the NumPy engine's
exact E-step takes them; hard labels use the same trick with one centre
per row. float32 rows are worked on in float64 where the NumPy engine
would (fits and predictions alike). Rows are processed in chunks sized for
the device, and the statistics are accumulated in float64.

Arrays on the CPU that NumPy can read in place (torch's CPU tensors) go to
the NumPy engine instead (:class:`_HostSource`), the faster one there;
their predictions come back in the input's library.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import array_api_compat
import numpy as np
from array_api_compat import array_namespace, to_device
from array_api_compat import device as device_of

from . import _kmeans
from ._covariance import CovarianceStrategy
from ._em import (
    _CONDITIONING_TOLERANCE,
    _PREDICTION_TOLERANCE,
    Params,
    _Expansion,
    _min_log_resp,
    _sums_hold,
    _working_expansion,
)
from ._parallel import reduce_chunks
from ._source import (
    ArraySource,
    RespOfRows,
    RowSource,
    check_n_features,
    check_sample_weight,
)
from ._stats import Moments, SufficientStatistics

__all__ = ["XpSource", "fit_source", "prediction_source"]

# Bytes of the largest temporary of one chunk: on the host, enough to
# amortise the per-call overhead while staying near the caches; on an
# accelerator, large enough to keep it busy, small beside its memory.
_HOST_BYTES = 2**22
_DEVICE_BYTES = 2**28
_MIN_ROWS = 256
# The initialisation's k-means runs on the device (gaussmix._kmeans) unless
# the device is the host's CPU, where scikit-learn's k-means is the faster
# (and bit-identical) choice. Tests set this to run the device k-means on
# the CPU, as CI has no accelerator.
_DEVICE_KMEANS_ON_CPU = False
# Arrays on the CPU that NumPy can view without a copy (torch's CPU tensors,
# through DLPack) are fitted and predicted by the NumPy engine, the faster
# one there and the same answer: per iteration, case (b) of
# benchmarks/bench_em.py at 200,000 rows took 36 ms against 110 by the
# array API path in float64 and 10 against 89 in float32; case (e) 15
# against 23 and 8.5 against 21.5. Outputs go back to the input's library.
# Tests set this to False to run the array API path on the CPU, as CI has
# no accelerator.
_NUMPY_ON_CPU = True

Array = Any  # an array of the input's namespace
T = TypeVar("T")
Pairs = tuple[Array, Array]


# ------------------------------------------------------------- host <-> device
def to_numpy(a: Array) -> np.ndarray:
    """A copy (or view) of ``a`` on the host, as a NumPy array."""
    return np.asarray(to_device(a, "cpu"))


def _host_dtype(xp: Any, dtype: Any) -> np.dtype:
    return np.dtype(np.float32 if dtype == xp.float32 else np.float64)


# ------------------------------------------------------------------ kernels
class _Frame(NamedTuple):
    """What an E-step needs on the device: ``W`` and where features are centred.

    Frames of a centre per component whose quadratic forms mix features
    (full, tied) take the log-densities by whitening instead of from ``W``:
    ``constants - |L_k^T ((x - c_k) - o_k)|^2 / 2``.
    """

    weights: Array  # K x F, the work dtype
    centres: Array  # D (one centre) or K x D (one per component)
    shift: np.ndarray  # K x D, float64: the centre of each component's sums
    whitening: Array | None = None  # K x D x D: each L_k^T
    offsets: Array | None = None  # K x D x 1: each mean minus its centre
    constants: Array | None = None  # K x 1: log w_k + log det L_k - D log(2 pi) / 2


def _expanded_frame(xp: Any, device: Any, expansion: _Expansion) -> _Frame:
    """The expanded form about the mixture's mean (:func:`_working_expansion`)."""
    n_components = expansion.weights.shape[0]
    return _Frame(
        xp.asarray(expansion.weights, device=device),
        xp.asarray(expansion.centre, device=device),
        np.repeat(expansion.centre64[None, :], n_components, axis=0),
    )


def _component_frame(
    xp: Any, device: Any, dtype: np.dtype, params: Params, strategy: CovarianceStrategy
) -> _Frame:
    """Each component about its own mean, in ``dtype``: its features for the
    statistics, and its log-densities whitened where the quadratic form
    mixes features (as the NumPy engine's exact E-step takes them), else
    expanded (nothing cancels there)."""
    n_components, n_features = params.means.shape
    centres = params.means.astype(dtype)
    shift = centres.astype(np.float64)
    with np.errstate(divide="ignore"):
        log_weights = np.log(params.weights)
    weights = strategy.expanded_weights(
        log_weights, params.means, params.precisions_cholesky, shift
    )

    def on_device(a: np.ndarray) -> Array:
        return xp.asarray(np.ascontiguousarray(a, dtype=dtype), device=device)

    factors = strategy.whitening_factors(params.precisions_cholesky, n_components)
    if factors is None:
        return _Frame(on_device(weights), on_device(centres), shift)
    log_det = np.broadcast_to(
        strategy.log_pdet(params.precisions_cholesky, n_features), (n_components,)
    )
    constants = log_weights + log_det - 0.5 * n_features * math.log(2 * math.pi)
    return _Frame(
        on_device(weights),
        on_device(centres),
        shift,
        whitening=on_device(np.swapaxes(factors, 1, 2)),
        # The means' remainders beyond the centres (float32's rounding).
        offsets=on_device((params.means - shift)[:, :, None]),
        constants=on_device(constants[:, None]),
    )


def _features(xp: Any, z: Array, pairs: Pairs) -> Array:
    """``phi`` (... x F x n): the quadratic terms of ``z`` (... x D x n), ``z``, 1.

    Features are rows, as in the NumPy engine: gathering whole rows and the
    products with a long inner dimension are the fast ones.
    """
    axis = z.ndim - 2
    first, second = pairs
    quadratic = xp.take(z, first, axis=axis) * xp.take(z, second, axis=axis)
    shape = (*z.shape[:-2], 1, z.shape[-1])
    ones = xp.ones(shape, dtype=z.dtype, device=device_of(z))
    return xp.concat([quadratic, z, ones], axis=axis)


def _centred(xp: Any, X: Array, centres: Array) -> Array:
    """``(x - c)^T``: D x n for one centre (D), K x D x n for K centres (K x D)."""
    rows_last = xp.matrix_transpose(X)
    if centres.ndim == 1:
        return rows_last - xp.expand_dims(centres, axis=1)
    return xp.expand_dims(rows_last, axis=0) - xp.expand_dims(centres, axis=2)


def _log_prob(
    xp: Any, X: Array, frame: _Frame, pairs: Pairs, features: bool = True
) -> tuple[Array | None, Array]:
    """Features (F x n, or K x F x n; None unless ``features``) and weighted
    log-densities (K x n)."""
    z = _centred(xp, X, frame.centres)
    if frame.whitening is not None:
        y = frame.whitening @ (z - frame.offsets)
        log_prob = frame.constants - 0.5 * xp.sum(y * y, axis=1)
        return (_features(xp, z, pairs) if features else None), log_prob
    phi = _features(xp, z, pairs)
    if phi.ndim == 2:
        return phi, frame.weights @ phi
    return phi, (xp.expand_dims(frame.weights, axis=1) @ phi)[:, 0, :]


def _sums(xp: Any, phi: Array, resp: Array) -> Array:
    """``sum_n resp_kn phi_k(x_n)`` for responsibilities K x n: K x F, float64."""
    if phi.ndim == 2:
        sums = resp @ xp.matrix_transpose(phi)
    else:
        sums = (phi @ xp.expand_dims(resp, axis=2))[..., 0]
    return xp.astype(sums, xp.float64)


def _responsibilities(xp: Any, log_prob: Array, floor: float) -> tuple[Array, Array]:
    """Responsibilities (K x n) and ``log p(x)`` (n), as the NumPy E-step.

    The exponent's argument is clamped at ``floor``, as in
    :func:`gaussmix._em._normalise`.
    """
    top = xp.max(log_prob, axis=0, keepdims=True)
    resp = xp.exp(xp.clip(log_prob - top, min=floor))
    total = xp.sum(resp, axis=0, keepdims=True)
    return resp / total, (xp.log(total) + top)[0, :]


def _log_normaliser(xp: Any, log_prob: Array) -> Array:
    """``log sum_k exp(log_prob)`` per row (log_prob K x n), safe for -inf."""
    top = xp.max(log_prob, axis=0, keepdims=True)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    total = xp.sum(xp.exp(log_prob - top), axis=0, keepdims=True)
    return (xp.log(total) + top)[0, :]


def _nearest(xp: Any, X: Array, centres: Array) -> Array:
    """Index of the nearest centre for every row (exact differences)."""
    diffs = _centred(xp, X, centres)
    return xp.argmin(xp.sum(diffs * diffs, axis=1), axis=0)


def _one_hot(xp: Any, labels: Array, n_components: int, dtype: Any) -> Array:
    """K x n indicator of ``labels`` (a label of -1 gives a column of zeros)."""
    ks = xp.arange(n_components, device=device_of(labels))
    return xp.astype(
        xp.expand_dims(labels, axis=0) == xp.expand_dims(ks, axis=1), dtype
    )


def _statistics(
    sums: np.ndarray,
    shift: np.ndarray,
    strategy: CovarianceStrategy,
    weight_sum: float,
    loglik_sum: float = 0.0,
    worst_loglik: float = math.inf,
    worst_sample: np.ndarray | None = None,
) -> SufficientStatistics:
    """Statistics from ``sums`` (K x F, each row about its ``shift``)."""
    resp_sum, diff_sum, scatter = strategy.from_expanded(sums, shift.shape[1])
    return SufficientStatistics(
        shift=shift,
        resp_sum=resp_sum,
        diff_sum=diff_sum,
        scatter=scatter,
        weight_sum=weight_sum,
        loglik_sum=loglik_sum,
        worst_loglik=worst_loglik,
        worst_sample=worst_sample,
    )


class _Partial(NamedTuple):
    """What an E-step keeps of a chunk, on the device."""

    sums: Array  # K x F, float64
    loglik: Array  # sum_n w_n log p(x_n), float64
    worst: Array  # the smallest log p(x_n) among rows of positive weight
    worst_row: Array  # its row

    def add(self, later: _Partial) -> _Partial:
        """The two chunks together (``later`` follows ``self``: ties keep ``self``)."""
        xp = array_namespace(self.sums)
        better = later.worst < self.worst
        return _Partial(
            self.sums + later.sums,
            self.loglik + later.loglik,
            xp.where(better, later.worst, self.worst),
            xp.where(better, later.worst_row, self.worst_row),
        )


# ------------------------------------------------------------------ the source
class XpSource(RowSource):
    """Rows in an array of the array API standard, on its own device.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        float32 or float64, in any namespace array-api-compat knows.
    sample_weight : ndarray of shape (n_samples,) or None
        Checked weights on the host, in X's dtype; they are copied to X's
        device.
    """

    def __init__(self, X: Array, sample_weight: np.ndarray | None) -> None:
        self.xp = array_namespace(X)
        self.X = X
        self.device = device_of(X)
        self.n_samples, self.n_features = (int(n) for n in X.shape)
        self.dtype = _host_dtype(self.xp, X.dtype)
        self.weighted = sample_weight is not None
        self.sample_weight = sample_weight
        self.device_weights = (
            None
            if sample_weight is None
            else self.xp.asarray(sample_weight, device=self.device)
        )
        self.on_host = str(self.device) == "cpu"
        self.budget = _HOST_BYTES if self.on_host else _DEVICE_BYTES
        self.device_kmeans = not self.on_host or _DEVICE_KMEANS_ON_CPU

    # ------------------------------------------------------------- helpers
    def _chunks(self, values_per_row: int) -> Iterator[slice]:
        """Row chunks whose largest temporary holds ``values_per_row`` per row."""
        size = self.budget // (values_per_row * self.dtype.itemsize)
        size = max(_MIN_ROWS, size)
        for start in range(0, self.n_samples, size):
            yield slice(start, min(start + size, self.n_samples))

    def _rows(self, rows: slice) -> tuple[Array, Array | None]:
        X = self.X[rows.start : rows.stop, :]
        if self.device_weights is None:
            return X, None
        return X, self.device_weights[rows.start : rows.stop]

    def _pairs(self, strategy: CovarianceStrategy) -> Pairs:
        first, second = strategy.quadratic_pairs(self.n_features)
        return (
            self.xp.asarray(first.astype(np.int64), device=self.device),
            self.xp.asarray(second.astype(np.int64), device=self.device),
        )

    def _n_expanded(self, strategy: CovarianceStrategy) -> int:
        return strategy.n_expanded(self.n_features)

    def _values_per_row(
        self,
        strategy: CovarianceStrategy,
        n_centres: int,
        work: np.dtype | None = None,
        whitened: bool = False,
    ) -> int:
        """Largest temporary per row: features (and their parts) per centre,
        and the differences and their whitened values (``whitened``),
        counted in the rows' dtype (twice as many for float32 rows worked on
        in float64, ``work``)."""
        per_centre = self._n_expanded(strategy) + (self.n_features if whitened else 0)
        values = 2 * n_centres * per_centre
        if work is not None:
            values *= max(1, np.dtype(work).itemsize // self.dtype.itemsize)
        return values

    def _frame_values_per_row(
        self, strategy: CovarianceStrategy, frame: _Frame, work: np.dtype
    ) -> int:
        """:meth:`_values_per_row` of an E-step or a prediction in ``frame``."""
        n_centres = 1 if frame.centres.ndim == 1 else frame.shift.shape[0]
        return self._values_per_row(
            strategy, n_centres, work, whitened=frame.whitening is not None
        )

    def _to_device(self, a: np.ndarray) -> Array:
        return self.xp.asarray(a, device=self.device)

    def _reduce(
        self,
        values_per_row: int,
        chunk: Callable[[slice, Array, Array | None], T],
        add: Callable[[T, T], T],
    ) -> T:
        """``chunk(rows, X_rows, w_rows)`` for every chunk, added in row order.

        On the host the chunks are shared out among threads, as the NumPy
        engine does (array libraries release the GIL in their kernels); on
        an accelerator one thread queues them all.
        """
        return reduce_chunks(
            lambda: None,
            lambda _, rows: chunk(rows, *self._rows(rows)),
            list(self._chunks(values_per_row)),
            add,
            n_workers=None if self.on_host else 1,
        )

    def _sum_over_chunks(
        self,
        values_per_row: int,
        chunk_sums: Callable[[slice, Array, Array | None], Array],
    ) -> np.ndarray:
        """``sum of chunk_sums(rows, X_rows, w_rows)`` over the chunks, on the host."""
        return to_numpy(self._reduce(values_per_row, chunk_sums, operator.add))

    # ------------------------------------------------------------ RowSource
    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        index = self._to_device(np.asarray(rows, dtype=np.int64))
        picked = to_numpy(self.xp.take(self.X, index, axis=0))
        weights = None if self.sample_weight is None else self.sample_weight[rows]
        return picked, weights

    def _rows_for_kmeans(self, rows: np.ndarray | None) -> tuple[Array, np.ndarray]:
        """The rows k-means runs on (on the device) and their host weights."""
        if rows is None:
            X = self.X
            weights = self.sample_weight
        else:
            X = self.xp.take(self.X, self._to_device(rows.astype(np.int64)), axis=0)
            weights = None if self.sample_weight is None else self.sample_weight[rows]
        if weights is None:
            weights = np.ones(int(X.shape[0]), dtype=self.dtype)
        return X, weights

    def kmeans(
        self,
        rows: np.ndarray | None,
        n_components: int,
        random_state: np.random.RandomState,
    ) -> tuple[np.ndarray, Any]:
        if not self.device_kmeans:
            return super().kmeans(rows, n_components, random_state)
        # In the rows' dtype, where the host's k-means takes a sample in
        # float64 (gaussmix._source._sample_for_kmeans): float64 is slow on
        # many accelerators and missing on some (Apple's MPS), so a float32
        # fit on a device may start a little apart from a float64 one.
        X, weights = self._rows_for_kmeans(rows)
        centres, labels = _kmeans.kmeans(X, n_components, weights, random_state)
        return centres, labels if rows is None else None

    def kmeans_plusplus(
        self,
        rows: np.ndarray | None,
        n_components: int,
        random_state: np.random.RandomState,
    ) -> np.ndarray:
        if not self.device_kmeans:
            return super().kmeans_plusplus(rows, n_components, random_state)
        X, weights = self._rows_for_kmeans(rows)
        indices = _kmeans.kmeans_plusplus(X, n_components, weights, random_state)
        return indices if rows is None else rows[indices]

    def host_weights(self) -> np.ndarray | None:
        if self.sample_weight is None:
            return None
        return self.sample_weight.astype(np.float64)

    def weight_sum(self) -> float:
        if self.sample_weight is None:
            return float(self.n_samples)
        return float(np.sum(self.sample_weight, dtype=np.float64))

    def n_effective(self) -> int:
        if self.sample_weight is None:
            return self.n_samples
        return int(np.count_nonzero(self.sample_weight))

    def magnitude(self) -> float:
        return check_finite(self.xp, self.X)

    def scaled(self, scale: float) -> XpSource:
        if scale == 1.0:
            return self
        return XpSource(self.X * scale, self.sample_weight)

    def column_moments(self) -> Moments:
        xp = self.xp

        def chunk(rows: slice, X: Array, w: Array | None) -> Moments:
            values = xp.astype(X, xp.float64)
            if w is None:
                weight = float(rows.stop - rows.start)
                mean = xp.sum(values, axis=0) / weight
            else:
                w = xp.astype(w, xp.float64)
                weight = float(to_numpy(xp.sum(w)))
                if weight == 0:
                    return Moments(
                        0.0, xp.zeros_like(values[0]), xp.zeros_like(values[0])
                    )
                mean = (w @ values) / weight
            centred = values - mean
            squares = centred * centred
            return Moments(
                weight,
                mean,
                xp.sum(squares, axis=0) if w is None else w @ squares,
            )

        # A float64 copy of the rows and of their squares.
        per_row = 2 * self.n_features * (8 // self.dtype.itemsize)
        total = self._reduce(per_row, chunk, operator.add)
        return Moments(total.weight, to_numpy(total.mean), to_numpy(total.squares))

    def _working_frame(
        self,
        params: Params,
        strategy: CovarianceStrategy,
        exact: bool,
        tolerances: dict[np.dtype, float] = _CONDITIONING_TOLERANCE,
    ) -> tuple[_Frame, np.dtype]:
        """The frame of ``params`` and the dtype the rows are worked on in,
        as the NumPy engine decides (:func:`gaussmix._em.e_step`): expanded
        about the mixture's mean in the rows' dtype, else in float64
        (:func:`_working_expansion`); else each component about its own
        mean, in the rows' dtype unless float32 sums would lose a
        covariance's thinnest direction there (:func:`_sums_hold`)."""
        expansion = (
            None
            if exact
            else _working_expansion(self.dtype, params, strategy, tolerances)
        )
        if expansion is not None:
            frame = _expanded_frame(self.xp, self.device, expansion)
            return frame, expansion.weights.dtype
        work = self.dtype
        if work != np.float64 and not _sums_hold(
            work, params, strategy, about_means=True, tolerances=tolerances
        ):
            work = np.dtype(np.float64)
        return _component_frame(self.xp, self.device, work, params, strategy), work

    def _cast(self, X: Array, work: np.dtype) -> Array:
        return X if work == self.dtype else self.xp.astype(X, self.xp.float64)

    def e_step(
        self, params: Params, strategy: CovarianceStrategy, exact: bool = False
    ) -> SufficientStatistics:
        xp = self.xp
        frame, work = self._working_frame(params, strategy, exact)
        pairs = self._pairs(strategy)
        floor = _min_log_resp(work)

        def chunk(rows: slice, X: Array, w: Array | None) -> _Partial:
            X = self._cast(X, work)
            w = None if w is None else self._cast(w, work)
            phi, log_prob = _log_prob(xp, X, frame, pairs)
            resp, log_norm = _responsibilities(xp, log_prob, floor)
            if w is None:
                loglik = xp.sum(log_norm, dtype=xp.float64)
                candidates = log_norm
            else:
                resp = resp * w
                loglik = xp.sum(
                    xp.astype(w, xp.float64) * xp.astype(log_norm, xp.float64)
                )
                candidates = xp.where(w > 0, log_norm, xp.full_like(log_norm, math.inf))
            return _Partial(
                _sums(xp, phi, resp),
                loglik,
                xp.min(candidates),
                xp.argmin(candidates) + rows.start,
            )

        total = self._reduce(
            self._frame_values_per_row(strategy, frame, work), chunk, _Partial.add
        )
        worst_row = int(to_numpy(total.worst_row))
        sample = self.take(np.array([worst_row]))[0][0].astype(np.float64)
        return _statistics(
            to_numpy(total.sums),
            frame.shift,
            strategy,
            self.weight_sum(),
            loglik_sum=float(to_numpy(total.loglik)),
            worst_loglik=float(to_numpy(total.worst)),
            worst_sample=sample,
        )

    def resp_statistics(
        self, resp_of_rows: RespOfRows, shift: np.ndarray, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Summed in float64 whatever the rows' dtype, as the NumPy engine
        sums them (:func:`gaussmix._em.resp_statistics`)."""
        xp = self.xp
        work = np.dtype(np.float64)
        shift_cast = shift.astype(self.dtype)
        centres = self._to_device(shift_cast.astype(work))
        pairs = self._pairs(strategy)

        def chunk_sums(rows: slice, X: Array, w: Array | None) -> Array:
            resp = self._to_device(resp_of_rows(rows).T.astype(work))
            if w is not None:
                resp = resp * self._cast(w, work)
            z = _centred(xp, self._cast(X, work), centres)
            return _sums(xp, _features(xp, z, pairs), resp)

        sums = self._sum_over_chunks(
            self._values_per_row(strategy, shift.shape[0], work), chunk_sums
        )
        return _statistics(
            sums, shift_cast.astype(np.float64), strategy, self.weight_sum()
        )

    def label_statistics(
        self, labels: Any, shift: np.ndarray, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Labels on the host, or on the device (from the device's k-means)."""
        if isinstance(labels, np.ndarray):
            host = labels.astype(np.int64, copy=False)
            labels = self._to_device(host)
        return self._hard_statistics(
            lambda rows, X, centres: labels[rows.start : rows.stop], shift, strategy
        )

    def nearest_statistics(
        self, centres: np.ndarray, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        return self._hard_statistics(
            lambda rows, X, device_centres: _nearest(self.xp, X, device_centres),
            centres,
            strategy,
        )

    def _hard_statistics(
        self,
        labels_of: Callable[[slice, Array, Array], Array],
        shift: np.ndarray,
        strategy: CovarianceStrategy,
    ) -> SufficientStatistics:
        """Statistics of hard labels, each row about its own component's shift.

        The labels are taken in the rows' dtype; the statistics are summed
        in float64 whatever it is, as the NumPy engine sums them
        (:func:`gaussmix._em.label_statistics`): float32 sums lost the
        thinnest direction of a start's covariance whose features correlate.
        """
        xp = self.xp
        work = np.dtype(np.float64)
        n_components = shift.shape[0]
        shift_cast = shift.astype(self.dtype)
        centres = self._to_device(shift_cast)
        centres64 = self._to_device(shift_cast.astype(work))
        pairs = self._pairs(strategy)

        def chunk_sums(rows: slice, X: Array, w: Array | None) -> Array:
            labels = labels_of(rows, X, centres)
            resp = _one_hot(xp, labels, n_components, xp.float64)
            if w is not None:
                resp = resp * self._cast(w, work)
            own = xp.take(centres64, xp.where(labels < 0, 0, labels), axis=0)
            z = xp.matrix_transpose(self._cast(X, work) - own)
            return _sums(xp, _features(xp, z, pairs), resp)

        values_per_row = max(
            self._values_per_row(strategy, 1, work),
            n_components * self.n_features,
        )
        sums = self._sum_over_chunks(values_per_row, chunk_sums)
        return _statistics(
            sums, shift_cast.astype(np.float64), strategy, self.weight_sum()
        )

    # ------------------------------------------------------------ prediction
    def _map_chunks(
        self,
        params: Params,
        strategy: CovarianceStrategy,
        result: Callable[[Array], Array],
    ) -> Array:
        """``result(weighted log-densities, K x n)`` of every chunk, concatenated."""
        xp = self.xp
        frame, work = self._working_frame(
            params, strategy, exact=False, tolerances=_PREDICTION_TOLERANCE
        )
        pairs = self._pairs(strategy)
        parts = [
            result(
                _log_prob(
                    xp,
                    self._cast(self._rows(rows)[0], work),
                    frame,
                    pairs,
                    features=False,
                )[1]
            )
            for rows in self._chunks(self._frame_values_per_row(strategy, frame, work))
        ]
        out = xp.concat(parts, axis=0)
        if work != self.dtype and xp.isdtype(out.dtype, "real floating"):
            out = xp.astype(out, self.X.dtype)  # outputs keep the rows' dtype
        return out

    def labels(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return self._map_chunks(
            params, strategy, lambda log_prob: self.xp.argmax(log_prob, axis=0)
        )

    def proba(self, params: Params, strategy: CovarianceStrategy) -> Array:
        xp = self.xp

        def proba(log_prob: Array) -> Array:
            log_norm = _log_normaliser(xp, log_prob)
            return xp.matrix_transpose(xp.exp(log_prob - log_norm))

        return self._map_chunks(params, strategy, proba)

    def log_density(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return self._map_chunks(
            params, strategy, lambda log_prob: _log_normaliser(self.xp, log_prob)
        )


# ------------------------------------------------------------- validation
def check_finite(xp: Any, X: Array) -> float:
    """``max |x|`` over X, raising ValueError if X holds NaN or infinity."""
    if X.shape[0] * X.shape[1] == 0:
        return 0.0
    return _finite(float(to_numpy(xp.max(xp.abs(X)))))


def _finite(magnitude: float) -> float:
    """``magnitude`` (``max |x|``), or the ValueError saying what X holds
    where it is NaN or infinite."""
    if math.isnan(magnitude):
        raise ValueError(
            "Input X contains NaN. GaussianMixture does not accept missing "
            "values; remove those rows or impute them (for instance with "
            "sklearn.impute.SimpleImputer)."
        )
    if math.isinf(magnitude):
        raise ValueError(
            "Input X contains infinity or a value too large for its dtype; "
            "remove those rows or rescale X."
        )
    return magnitude


def _checked_array(X: Any, min_samples: int) -> Array:
    """X as a 2-D float32 or float64 array of its own namespace and device."""
    xp = array_namespace(X)
    if array_api_compat.is_torch_array(X):
        X = X.detach()
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead (shape "
            f"{tuple(X.shape)}). Reshape your data either using "
            "X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) "
            "if it contains a single sample."
        )
    if X.dtype not in (xp.float32, xp.float64):
        if not xp.isdtype(X.dtype, ("bool", "integral", "real floating")):
            raise ValueError(
                f"X has dtype {X.dtype}; GaussianMixture needs real numbers. "
                "Convert X to float32 or float64."
            )
        X = xp.astype(X, xp.float64)
    n_samples, n_features = (int(n) for n in X.shape)
    if n_samples < min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={tuple(X.shape)}) "
            f"while a minimum of {min_samples} is required by GaussianMixture."
        )
    if n_features < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(X.shape)}) while a "
            "minimum of 1 is required by GaussianMixture."
        )
    return X


def _host_sample_weight(sample_weight: Any) -> Any:
    """Weights given as a device array come to the host to be checked."""
    if array_api_compat.is_array_api_obj(sample_weight) and not isinstance(
        sample_weight, np.ndarray
    ):
        if array_api_compat.is_torch_array(sample_weight):
            sample_weight = sample_weight.detach()
        return to_numpy(sample_weight)
    return sample_weight


class _HostSource(ArraySource):
    """Rows on the CPU of another library's array (a torch tensor on the
    CPU), as NumPy views them without a copy: the NumPy engine fits and
    predicts them (see ``_NUMPY_ON_CPU``), and predictions go back to the
    input's library and device."""

    def __init__(
        self, xp: Any, device: Any, X: np.ndarray, sample_weight: np.ndarray | None
    ) -> None:
        super().__init__(X, sample_weight)
        self.xp = xp
        self.device = device

    def _back(self, a: np.ndarray) -> Array:
        return self.xp.asarray(a, device=self.device)

    def magnitude(self) -> float:
        return _finite(super().magnitude())

    def scaled(self, scale: float) -> ArraySource:
        if scale == 1.0:
            return self
        scaled = super().scaled(scale)
        return _HostSource(self.xp, self.device, scaled.X, scaled.sample_weight)

    def labels(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return self._back(super().labels(params, strategy))

    def proba(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return self._back(super().proba(params, strategy))

    def log_density(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return self._back(super().log_density(params, strategy))


def _source(X: Array, sample_weight: np.ndarray | None) -> RowSource:
    """:class:`_HostSource` where NumPy can view X on the CPU (and
    ``_NUMPY_ON_CPU``), else :class:`XpSource`."""
    if _NUMPY_ON_CPU and str(device_of(X)) == "cpu":
        try:
            view = np.from_dlpack(X)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass  # NumPy cannot read it in place: the array API path
        else:
            return _HostSource(array_namespace(X), device_of(X), view, sample_weight)
    return XpSource(X, sample_weight)


def fit_source(estimator: Any, X: Any, sample_weight: Any) -> RowSource:
    """Validate X (and the weights) for ``fit``; set ``n_features_in_``.

    NaN and infinity are caught by the source's ``magnitude``, the fit's
    first pass over the rows.
    """
    X = _checked_array(X, min_samples=2)
    n_samples, n_features = (int(n) for n in X.shape)
    weights = None
    if sample_weight is not None:
        dtype = _host_dtype(array_namespace(X), X.dtype)
        weights = check_sample_weight(
            _host_sample_weight(sample_weight), n_samples, dtype
        )
    estimator.n_features_in_ = n_features
    if hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    return _source(X, weights)


def prediction_source(estimator: Any, X: Any) -> RowSource:
    """Validate X against the fitted ``estimator`` for prediction."""
    X = _checked_array(X, min_samples=1)
    check_n_features(estimator, int(X.shape[1]))
    source = _source(X, None)
    source.magnitude()  # NaN and infinity raise
    return source
