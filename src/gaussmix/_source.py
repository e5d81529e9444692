"""Where the rows live: what a fit needs of them, whatever holds them.

EM needs only a few things of the data: additive statistics of an E-step
(or of given responsibilities, or of hard labels), the largest magnitude,
a handful of rows for the initialisation's k-means sample, and the sample
weights. :class:`RowSource` asks for exactly those, so a NumPy array, a
Dask array spread over a cluster, an iterable of chunks read from disk or
an array on a GPU all go through the same estimator and the same EM loop.

A source made of NumPy blocks implements :meth:`RowSource.reduce` (apply a
function to every block and add the results) and :meth:`RowSource.take`;
everything else follows from the NumPy kernels of :mod:`gaussmix._em`. A
source whose blocks are not NumPy arrays (an array-API device array)
overrides the operations themselves.

The initialisation (:func:`gaussmix._init.initial_statistics`) is written
against these operations and draws its random numbers on the host in one order, so every
source starts from the same parameters for the same ``random_state``.
"""

from __future__ import annotations

import importlib
import math
import operator
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.utils.validation import validate_data

from ._covariance import CovarianceStrategy
from ._em import (
    GAP_ROWS,
    Params,
    column_moments,
    e_step,
    exact_is_cheaper,
    expansion_gap,
    label_statistics,
    log_prob_resp,
    most_probable,
    resp_statistics,
)
from ._em import log_density as row_log_density
from ._init import label_rows, label_workers, nearest, nearest_of_rows
from ._stats import Moments, SufficientStatistics

Array = np.ndarray
T = TypeVar("T")
Block = Callable[[Array, Array | None, int], T]
RespOfRows = Callable[[slice], Array]

__all__ = [
    "ArraySource",
    "RowSource",
    "array_source",
    "check_sample_weight",
    "column_variances",
    "fit_source",
    "prediction_source",
    "weight_scale",
]


# Rows per block when ArraySource.magnitude reads both extremes at once.
_MAGNITUDE_ROWS = 2**16


def _offset(rows: slice, offset: int) -> slice:
    return slice(rows.start + offset, rows.stop + offset)


def _sample_for_kmeans(source: RowSource, rows: Array) -> tuple[Array, Array | None]:
    """The sampled ``rows`` of ``source`` in float64, and their weights.

    k-means on a float32 sample stopped at other centres than on the same
    rows in float64 (2.5e-4 apart, relative, on case (e) of
    benchmarks/bench_em.py), and so did a float32 fit's start; in float64
    both dtypes start alike (see ``gaussmix._init._SAMPLE_SHARE``, which
    sizes the sample for it). The rows' own copy is let go before k-means
    runs.
    """
    Xs, ws = source.take(rows)
    return np.asarray(Xs, dtype=np.float64), ws


class RowSource:
    """The rows of a data set (n_samples x n_features) and their weights.

    Subclasses set ``n_samples``, ``n_features``, ``dtype`` and
    ``weighted``, and implement :meth:`reduce` and :meth:`take` (NumPy
    blocks) or override the operations below (other arrays).
    """

    n_samples: int
    n_features: int
    dtype: np.dtype
    weighted: bool

    # ------------------------------------------------------ the primitives
    def reduce(self, block: Block[T], add: Callable[[T, T], T] = operator.add) -> T:
        """``block(X_b, w_b, first_row)`` for every block, summed in order.

        ``X_b`` is a NumPy array of consecutive rows starting at row
        ``first_row``; ``w_b`` their weights or None.
        """
        raise NotImplementedError

    def take(self, rows: Array) -> tuple[Array, Array | None]:
        """The given rows (sorted indices) and their weights, on the host."""

        def pick(X: Array, w: Array | None, first: int) -> tuple[Array, Array | None]:
            local = rows[(rows >= first) & (rows < first + X.shape[0])] - first
            return np.take(X, local, axis=0), None if w is None else w[local]

        def join(
            a: tuple[Array, Array | None], b: tuple[Array, Array | None]
        ) -> tuple[Array, Array | None]:
            weights = None if a[1] is None else np.concatenate([a[1], b[1]])
            return np.concatenate([a[0], b[0]]), weights

        return self.reduce(pick, join)

    def host_weights(self) -> Array | None:
        """All the sample weights on the host (float64), or None if unweighted."""
        if not self.weighted:
            return None

        def weights(X: Array, w: Array | None, first: int) -> Array:
            assert w is not None
            return w.astype(np.float64)

        return self.reduce(weights, lambda a, b: np.concatenate([a, b]))

    # ------------------------------------------------------ the operations
    def kmeans(
        self,
        rows: Array | None,
        n_components: int,
        random_state: np.random.RandomState,
    ) -> tuple[Array, Any]:
        """scikit-learn's ``KMeans(n_init=1)`` on the given rows (None: all).

        Returns the centres (K x D, float64, on the host) and, when ``rows``
        is None, every row's cluster (else None). This default brings the
        rows to the host; a source on an accelerator runs it there. A
        sample runs in float64 whatever the rows' dtype (see
        :func:`_sample_for_kmeans`); all the rows, as scikit-learn's
        ``GaussianMixture`` gives them to k-means, in their own dtype.
        """
        if rows is None:
            Xs, ws = self.take(np.arange(self.n_samples))
        else:
            Xs, ws = _sample_for_kmeans(self, rows)
        # A sample (fewer rows than all) is taken as a copy, so scikit-learn
        # may centre it in place rather than copy it again (the result is
        # the same, bit for bit).
        fitted = KMeans(
            n_clusters=n_components,
            n_init=1,
            random_state=random_state,
            copy_x=rows is None,
        )
        fitted.fit(Xs, sample_weight=ws)
        return fitted.cluster_centers_, fitted.labels_ if rows is None else None

    def kmeans_plusplus(
        self,
        rows: Array | None,
        n_components: int,
        random_state: np.random.RandomState,
    ) -> Array:
        """scikit-learn's k-means++ seeds among the given rows (None: all).

        Returns the seeds' row numbers in the whole data.
        """
        if rows is None:
            everything = np.arange(self.n_samples)
            Xs, ws = self.take(everything)
        else:
            everything = rows
            Xs, ws = _sample_for_kmeans(self, rows)
        _, indices = kmeans_plusplus(
            Xs, n_components, random_state=random_state, sample_weight=ws
        )
        return everything[indices]

    def magnitude(self) -> float:
        """``max |x|`` over every value (NaN if any value is NaN)."""

        def largest(X: Array, w: Array | None, first: int) -> float:
            if X.size == 0:
                return 0.0
            return max(float(np.max(X)), -float(np.min(X)))

        return self.reduce(largest, max)

    def scaled(self, scale: float) -> RowSource:
        """The same rows multiplied by ``scale`` (a power of two)."""
        raise NotImplementedError

    def e_step(
        self, params: Params, strategy: CovarianceStrategy, exact: bool = False
    ) -> SufficientStatistics:
        """Statistics of one E-step over every row (see :func:`_em.e_step`)."""
        return self.reduce(
            lambda X, w, first: e_step(X, w, params, strategy, exact=exact)
        )

    def exact_is_cheaper(self, n_components: int) -> bool:
        """Whether EM's E-steps should be exact from the start, being the
        quicker (:func:`_em.exact_is_cheaper`): only for a few rows in
        memory (:class:`ArraySource`)."""
        return False

    def expansion_gap(self, params: Params, strategy: CovarianceStrategy) -> float:
        """How far the expanded E-step's lower bound may be from the exact one
        (:func:`_em.expansion_gap`), on every row up to ``GAP_ROWS``, else on
        that many rows drawn uniformly and independently (so with repeats),
        with a fixed seed: the fit's ``random_state`` is not drawn from, so
        its stream stays scikit-learn's. (Distinct rows took 59 ms to draw
        from 200,000, the gap itself 24 ms.)"""
        n_samples = self.n_samples
        everything = n_samples <= GAP_ROWS
        rows = (
            np.arange(n_samples)
            if everything
            else np.sort(np.random.default_rng(0).integers(0, n_samples, GAP_ROWS))
        )
        X, weights = self.take(rows)
        return expansion_gap(X, weights, params, strategy, everything)

    def resp_statistics(
        self, resp_of_rows: RespOfRows, shift: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Statistics of responsibilities ``resp_of_rows(rows)`` (rows x K)."""
        return self.reduce(
            lambda X, w, first: resp_statistics(
                X, w, lambda rows: resp_of_rows(_offset(rows, first)), shift, strategy
            )
        )

    def label_statistics(
        self, labels: Array, shift: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Statistics of hard labels (n_samples; -1: no component)."""
        return self.reduce(
            lambda X, w, first: label_statistics(
                X, w, labels[first : first + X.shape[0]], shift, strategy
            )
        )

    def column_moments(self) -> Moments:
        """Weighted mean and centred squares of every column, in one pass."""
        return self.reduce(lambda X, w, first: column_moments(X, w))

    def nearest_statistics(
        self, centres: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Statistics of labelling every row by its nearest centre."""
        return self.reduce(
            lambda X, w, first: label_statistics(
                X, w, nearest(X, centres, strategy), centres, strategy
            )
        )

    def seed_statistics(
        self, indices: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        """Statistics of one chosen row per component, all others unassigned."""
        order = np.argsort(indices)
        rows, weights = self.take(np.asarray(indices)[order])
        seeds = np.empty_like(rows)
        seeds[order] = rows
        seed_weights = None
        if weights is not None:
            seed_weights = np.empty_like(weights)
            seed_weights[order] = weights
        labels = np.arange(len(indices), dtype=np.int32)
        centres = seeds.astype(np.float64)
        stats = label_statistics(seeds, seed_weights, labels, centres, strategy)
        return _with_weight_sum(stats, self.weight_sum())

    def weight_sum(self) -> float:
        """``sum_n w_n`` (the number of rows when unweighted)."""
        if not self.weighted:
            return float(self.n_samples)

        def total(X: Array, w: Array | None, first: int) -> float:
            assert w is not None
            return float(np.sum(w, dtype=np.float64))

        return self.reduce(total)

    def n_effective(self) -> int:
        """Rows with positive weight."""
        weights = self.host_weights()
        return self.n_samples if weights is None else int(np.count_nonzero(weights))

    # ---------------------------------------------------------- prediction
    # Results come back as the input's kind of array (NumPy, Dask, torch).
    def labels(self, params: Params, strategy: CovarianceStrategy) -> Any:
        """The most probable component of every row (n)."""
        raise TypeError(f"{type(self).__name__} cannot predict; pass an array.")

    def proba(self, params: Params, strategy: CovarianceStrategy) -> Any:
        """Responsibilities of every row (n x K)."""
        raise TypeError(f"{type(self).__name__} cannot predict; pass an array.")

    def log_density(self, params: Params, strategy: CovarianceStrategy) -> Any:
        """``log p(x)`` of every row (n)."""
        raise TypeError(f"{type(self).__name__} cannot predict; pass an array.")

    def for_fit(self, estimator: Any, sample_weight: Any) -> RowSource:
        """This source, checked for ``estimator.fit`` (which passed it as X)."""
        if sample_weight is not None:
            raise ValueError(
                f"sample_weight cannot be given separately for a {type(self).__name__}"
                "; give the weights with the rows."
            )
        estimator.n_features_in_ = self.n_features
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return self


def _with_weight_sum(stats: SufficientStatistics, weight_sum: float) -> Any:
    return replace(stats, weight_sum=weight_sum)


class ArraySource(RowSource):
    """A NumPy array in memory (or memory-mapped): the kernels chunk it."""

    def __init__(self, X: Array, sample_weight: Array | None) -> None:
        self.X = X
        self.sample_weight = sample_weight
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype
        self.weighted = sample_weight is not None

    def reduce(self, block: Block[T], add: Callable[[T, T], T] = operator.add) -> T:
        # One block: the kernels stream it in chunks and share them out
        # among threads themselves.
        return block(self.X, self.sample_weight, 0)

    def take(self, rows: Array) -> tuple[Array, Array | None]:
        if rows.size == self.n_samples:  # sorted distinct rows: all of them
            return self.X, self.sample_weight
        weights = None if self.sample_weight is None else self.sample_weight[rows]
        # np.take gathers rows faster than X[rows] (the k-means sample of
        # case (b) of benchmarks/bench_em.py: 1.0 ms against 3.6).
        return np.take(self.X, rows, axis=0), weights

    def host_weights(self) -> Array | None:
        return self.sample_weight

    def magnitude(self) -> float:
        # Both extremes of each block while it is in cache: one pass over a
        # memory-mapped X, not two.
        if self.X.size == 0:
            return 0.0
        extremes = []
        for start in range(0, self.n_samples, _MAGNITUDE_ROWS):
            block = self.X[start : start + _MAGNITUDE_ROWS]
            extremes += [float(np.max(block)), -float(np.min(block))]
        return float(np.max(extremes))  # NaN if any value is NaN

    def scaled(self, scale: float) -> ArraySource:
        if scale == 1.0:
            return self
        return ArraySource(self.X * self.X.dtype.type(scale), self.sample_weight)

    def seed_statistics(
        self, indices: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        indices = np.asarray(indices)
        labels = np.full(self.n_samples, -1, dtype=np.int32)
        labels[indices] = np.arange(indices.size)
        centres = self.X[indices].astype(np.float64)
        return label_statistics(self.X, self.sample_weight, labels, centres, strategy)

    def nearest_statistics(
        self, centres: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        # Label chunk by chunk as the sums go: no label per row is kept, so
        # a memory-mapped X costs no memory in proportion to its rows. One
        # chunk per labelling window: each window is labelled once.
        return label_statistics(
            self.X,
            self.sample_weight,
            nearest_of_rows(self.X, centres, strategy),
            centres,
            strategy,
            chunk_size=label_rows(self.X),
            n_workers=label_workers(self.X),
        )

    def exact_is_cheaper(self, n_components: int) -> bool:
        return exact_is_cheaper(self.n_samples, n_components)

    def n_effective(self) -> int:
        if self.sample_weight is None:
            return self.n_samples
        return int(np.count_nonzero(self.sample_weight))

    def labels(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return most_probable(self.X, params, strategy)

    def proba(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return np.exp(log_prob_resp(self.X, params, strategy)[1])

    def log_density(self, params: Params, strategy: CovarianceStrategy) -> Array:
        return row_log_density(self.X, params, strategy)


def column_variances(source: RowSource) -> Array:
    """Weighted variance of each feature, in float64 (one pass)."""
    return source.column_moments().variances


# ------------------------------------------------------------- dispatch
# Inputs that are not NumPy-like are recognised by the module that defines
# their type, so that an optional backend is imported only when used:
# module prefix -> (gaussmix module, the extra that installs what it needs).
_BACKENDS = {
    "dask": ("gaussmix.distributed", "dask"),
    "torch": ("gaussmix._xp", "torch"),
    "cupy": ("gaussmix._xp", "cupy"),
}


def array_library(X: Any) -> str | None:
    """The library of X's kind of array among ``_BACKENDS`` ("dask", "torch",
    "cupy"), or None for NumPy and anything NumPy-like."""
    if isinstance(X, np.ndarray):
        return None
    root = type(X).__module__.partition(".")[0]
    return root if root in _BACKENDS else None


def check_n_features(estimator: Any, n_features: int) -> None:
    """Raise unless ``n_features`` is the fitted ``estimator``'s number."""
    if n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(estimator).__name__} is "
            f"expecting {estimator.n_features_in_} features as input."
        )


def backend_of(X: Any) -> Any:
    """The gaussmix module that handles X's kind of array, or None for NumPy."""
    root = array_library(X)
    if root is None:
        return None
    name, extra = _BACKENDS[root]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"Fitting a {root} array needs gaussmix's optional dependencies "
            f"for it ({exc}); install them with: pip install 'gaussmix[{extra}]'"
        ) from exc


def fit_source(estimator: Any, X: Any, sample_weight: Any) -> RowSource:
    """Validate X (and the weights) for ``fit``; set ``n_features_in_``."""
    if isinstance(X, RowSource):
        return X.for_fit(estimator, sample_weight)
    backend = backend_of(X)
    if backend is not None:
        source: RowSource = backend.fit_source(estimator, X, sample_weight)
        return source
    return array_source(
        estimator,
        X,
        sample_weight,
        dtype=[np.float64, np.float32],
        ensure_min_samples=2,
    )


def rows_for_fit(estimator: Any, X: Any) -> Any:
    """X checked for the ``fit`` of an estimator that hands it on to
    :class:`GaussianMixture` fits (model selection, anomaly detection); sets
    ``n_features_in_``.

    A NumPy array from ``validate_data``; a Dask array, a torch tensor or a
    CuPy array stays where it is, checked as ``GaussianMixture.fit`` checks
    it (a Dask array persisted on the workers, once for every fit).
    """
    if isinstance(X, RowSource):
        raise TypeError(
            f"{type(estimator).__name__} needs an array, not a "
            f"{type(X).__name__}: it predicts on every row after its fits. "
            "For data larger than memory pass a memory-mapped .npy "
            "(np.load(path, mmap_mode='r')) or a Dask array."
        )
    backend = backend_of(X)
    if backend is None:
        with np.errstate(over="ignore", invalid="ignore"):  # see array_source
            return validate_data(
                estimator, X, dtype=[np.float64, np.float32], ensure_min_samples=2
            )
    source = backend.fit_source(estimator, X, None)
    dask_source = getattr(backend, "DaskSource", None)
    if dask_source is not None and isinstance(source, dask_source):
        return source.X
    return X


def rows_for_prediction(estimator: Any, X: Any) -> Any:
    """X checked against the fitted ``estimator`` (see :func:`rows_for_fit`):
    NumPy-like input by ``validate_data``; a Dask array or a tensor for its
    number of features only, its values by the fitted mixture, which keeps
    it where it is."""
    if backend_of(X) is None:
        with np.errstate(over="ignore", invalid="ignore"):  # see array_source
            return validate_data(
                estimator, X, reset=False, dtype=[np.float64, np.float32]
            )
    shape: tuple[int, ...] = tuple(getattr(X, "shape", ()))
    if len(shape) == 2:
        check_n_features(estimator, int(shape[1]))
    return X


def array_source(
    estimator: Any, X: Any, sample_weight: Any, **validation: Any
) -> ArraySource:
    """X validated as a NumPy array by ``validate_data(estimator, X, **validation)``.

    scikit-learn first sums X to look for NaN and infinity; finite float32
    values near its largest (3.4e38) overflow that sum, and NumPy's
    RuntimeWarning about it would come before the clear error that follows.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        X = validate_data(estimator, X, **validation)
    weights = (
        None
        if sample_weight is None
        else check_sample_weight(sample_weight, X.shape[0], X.dtype)
    )
    return ArraySource(X, weights)


def prediction_source(estimator: Any, X: Any) -> RowSource:
    """Validate X against the fitted ``estimator`` for prediction."""
    backend = backend_of(X)
    if backend is not None:
        source: RowSource = backend.prediction_source(estimator, X)
        return source
    with np.errstate(over="ignore", invalid="ignore"):  # see array_source
        X = validate_data(estimator, X, reset=False, dtype=[np.float64, np.float32])
    return ArraySource(X, None)


def check_sample_weight(sample_weight: Any, n_samples: int, dtype: Any) -> Array:
    try:
        weights = np.asarray(sample_weight)
    except Exception as exc:  # pragma: no cover - numpy raises many types
        raise TypeError(f"sample_weight could not be read as an array: {exc}") from exc
    if weights.ndim == 0:
        weights = np.full(n_samples, weights)
    if weights.dtype.kind not in "biuf":
        raise TypeError(
            f"sample_weight must be numeric, got dtype {weights.dtype}. "
            "Pass one non-negative number per sample."
        )
    if weights.ndim != 1 or weights.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), one weight per "
            f"sample, but got shape {weights.shape}."
        )
    weights = weights.astype(np.float64)
    finite = bool(np.all(np.isfinite(weights)))
    scale = weight_scale(
        finite, finite and bool(np.any(weights < 0)), float(np.max(weights))
    )
    if scale != 1.0:
        weights = weights * scale
    return weights.astype(dtype)


def weight_scale(finite: bool, negative: bool, largest: float) -> float:
    """Check sample weights by their summary; the factor to rescale them by.

    Raises ValueError unless every weight is finite and non-negative and
    one is positive. EM depends only on the ratios of the weights, so an
    exact power-of-two rescaling keeps huge or tiny weights (and their sum)
    representable, also in float32.
    """
    if not finite:
        raise ValueError("sample_weight contains NaN or infinity; pass finite weights.")
    if negative:
        raise ValueError(
            "sample_weight contains negative values; weights must be >= 0."
        )
    if largest <= 0:
        raise ValueError(
            "sample_weight is zero for every sample; at least one sample needs "
            "a positive weight."
        )
    if not 2.0**-60 <= largest <= 2.0**60:
        return float(2.0 ** (-round(math.log2(largest))))
    return 1.0
