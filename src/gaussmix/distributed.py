"""Gaussian mixtures on Dask arrays: EM where the rows live.

Pass a :class:`dask.array.Array` to :meth:`GaussianMixture.fit
<gaussmix.GaussianMixture.fit>` and EM runs on the cluster of the current
Dask client (or on Dask's local scheduler when there is none): each
iteration sends the parameters (a few kilobytes) to the workers, every
block of rows returns its additive sufficient statistics, and the client
adds them in block order and runs the M-step. The sum is therefore the
same whichever worker computed which block, and a fit equals the in-memory
fit of the same rows from the same start (up to the order of the
floating-point additions, about 1e-14 relative).

The default k-means initialisation brings to the client only the rows
k-means runs on (all of them up to 65,536 rows, else a uniform sample of
at most 65,536), drawn with the same random numbers as in memory, so the
same ``random_state`` gives the same fit. :meth:`~GaussianMixture.predict`,
:meth:`~GaussianMixture.predict_proba` and
:meth:`~GaussianMixture.score_samples` return Dask arrays, computed only
when asked.

This is the only module of gaussmix that imports Dask
(``pip install 'gaussmix[dask]'``); the estimator imports it when it meets a
Dask array.

Examples
--------
>>> import dask.array as da
>>> import numpy as np
>>> from gaussmix import GaussianMixture
>>> rng = np.random.default_rng(0)
>>> X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
>>> dX = da.from_array(X, chunks=(250, 2))
>>> gm = GaussianMixture(2, random_state=0).fit(dX)
>>> bool(np.allclose(gm.means_, GaussianMixture(2, random_state=0).fit(X).means_))
True
>>> labels = gm.predict(dX)         # a Dask array: nothing is computed yet
>>> type(labels).__name__
'Array'
>>> labels.compute()[[0, -1]]        # the first and the last row's component
array([1, 0])
"""

from __future__ import annotations

import functools
import io
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.base import is_dask_collection
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"gaussmix.distributed needs Dask ({exc}); install it with: "
        "pip install 'gaussmix[dask]'"
    ) from exc

from ._covariance import CovarianceStrategy
from ._em import (
    Params,
    label_statistics,
    log_density,
    log_prob_resp,
    most_probable,
    resp_statistics,
)
from ._source import (
    Block,
    RowSource,
    check_n_features,
    check_sample_weight,
    weight_scale,
)
from ._stats import SufficientStatistics

Array = np.ndarray
T = TypeVar("T")

__all__ = ["DaskSource", "fit_source", "prediction_source"]

# A function that travels to the workers with every pass must stay small:
# one that carries more (the random initialisation's n x K responsibilities)
# is evaluated on the client, and each block gets only its own rows' values.
_CLOSURE_BYTES = 2**20


def _finite_check(X: Array, first: int) -> None:
    """Raise scikit-learn's ValueError when a block holds NaN or infinity."""
    finite = np.isfinite(X)
    if finite.all():
        return
    row = int(np.flatnonzero(~finite.all(axis=1))[0]) + first
    what = "NaN" if np.isnan(X).any() else "infinity"
    raise ValueError(
        f"Input X contains {what} (first at row {row}). GaussianMixture "
        "does not accept missing or infinite values: drop those rows or "
        "impute them (for instance X[da.isfinite(X).all(axis=1)]) and try "
        "again."
    )


def _apply(block: Block[T], X: Array, w: Array | None, first: int) -> T:
    return block(X, w, first)


def _magnitude(X: Array, w: Array | None, first: int) -> float:
    _finite_check(X, first)
    if X.size == 0:
        return 0.0
    return max(float(np.max(X)), -float(np.min(X)))


def _positive(X: Array, w: Array | None, first: int) -> int:
    return X.shape[0] if w is None else int(np.count_nonzero(w))


def _weight_summary(w: Array) -> Array:
    """(non-finite count, negative count, largest) of a block of weights."""
    finite = np.isfinite(w)
    largest = float(np.max(w[finite])) if finite.any() else -math.inf
    return np.array(
        [float(np.count_nonzero(~finite)), float(np.count_nonzero(w < 0)), largest]
    )


class _Counter(io.RawIOBase):
    """A file that only counts the bytes written to it."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def _pickled_size(obj: Any) -> int:
    import cloudpickle  # a dependency of dask

    counter = _Counter()
    try:
        cloudpickle.dump(obj, counter)
    except Exception:  # cannot travel: evaluate it on the client instead
        return _CLOSURE_BYTES + 1
    return counter.size


# ---------------------------------------------------------- prediction blocks
def _predict_block(
    X: Array,
    kernel: Callable[[Array, Params, CovarianceStrategy], Array],
    params: Params,
    strategy: CovarianceStrategy,
    block_info: dict[Any, Any] | None = None,
) -> Array:
    first = 0
    if block_info is not None and 0 in block_info:
        start = block_info[0]["array-location"][0][0]
        first = int(start) if start is not None and math.isfinite(start) else 0
    _finite_check(X, first)
    return kernel(X, params, strategy)


def _proba_kernel(X: Array, params: Params, strategy: CovarianceStrategy) -> Array:
    return np.exp(log_prob_resp(X, params, strategy)[1])


class DaskSource(RowSource):
    """The rows of a Dask array, block by block where they live.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        float32 or float64, one chunk across all the columns (as
        :func:`fit_source` and :func:`prediction_source` make it). Row
        chunks of unknown size are allowed for predictions only.
    sample_weight : dask.array.Array of shape (n_samples,) or None
        Checked weights in X's dtype, chunked as X's rows.
    """

    def __init__(self, X: da.Array, sample_weight: da.Array | None) -> None:
        self.X = X
        self.sample_weight = sample_weight
        rows, columns = X.shape
        # -1: rows in chunks of unknown size (predictions only; a fit
        # measures them first).
        self.n_samples = int(rows) if math.isfinite(rows) else -1
        self.n_features = int(columns)
        self.dtype = np.dtype(X.dtype)
        self.weighted = sample_weight is not None

    # ---------------------------------------------------------- primitives
    def _parts(self) -> list[tuple[Any, Any, int, int]]:
        """(X block, weight block or None, first row, rows) per row block."""
        blocks = self.X.to_delayed().ravel()
        sizes = [int(size) for size in self.X.chunks[0]]
        first = [int(row) for row in np.cumsum([0, *sizes])[:-1]]
        weights: Sequence[Any] = (
            [None] * len(blocks)
            if self.sample_weight is None
            else self.sample_weight.to_delayed().ravel()
        )
        return list(zip(blocks, weights, first, sizes, strict=True))

    def _run(self, blocks: Sequence[Block[T]] | Block[T]) -> list[T]:
        """Run one function per row block (or the same for all) on the workers.

        The function shared by all blocks enters the graph once, as data,
        rather than once per task. Results come back in block order.
        """
        parts = self._parts()
        if callable(blocks):
            shared = dask.delayed(blocks, pure=False)
            functions: Sequence[Any] = [shared] * len(parts)
        else:
            functions = blocks
        tasks = [
            dask.delayed(_apply, pure=False)(fn, X, w, first)
            for fn, (X, w, first, _) in zip(functions, parts, strict=True)
        ]
        return list(dask.compute(*tasks))

    def reduce(self, block: Block[T], add: Callable[[T, T], T] = operator.add) -> T:
        """``block(X_b, w_b, first_row)`` on the workers, added here in block order.

        Adding in block order on the client makes the result independent of
        which worker computed which block (and of a worker lost and replaced
        on the way).
        """
        return functools.reduce(add, self._run(block))

    def take(self, rows: Array) -> tuple[Array, Array | None]:
        """Only the given rows (sorted indices) and their weights."""
        rows = np.asarray(rows, dtype=np.intp)
        if self.sample_weight is None:
            return np.asarray(self.X[rows].compute()), None
        X, w = dask.compute(self.X[rows], self.sample_weight[rows])
        return np.asarray(X), np.asarray(w)

    def host_weights(self) -> Array | None:
        if self.sample_weight is None:
            return None
        return np.asarray(self.sample_weight.compute(), dtype=np.float64)

    # ---------------------------------------------------------- operations
    def magnitude(self) -> float:
        """``max |x|``; raises ValueError if any value is NaN or infinite."""
        return self.reduce(_magnitude, max)

    def scaled(self, scale: float) -> DaskSource:
        # Scaled lazily: each pass multiplies a block as it reads it, rather
        # than keeping a second copy of X in the cluster's memory.
        if scale == 1.0:
            return self
        return DaskSource(self.X * self.dtype.type(scale), self.sample_weight)

    def n_effective(self) -> int:
        if self.sample_weight is None:
            return self.n_samples
        return self.reduce(_positive)

    def label_statistics(
        self, labels: Array, shift: Array, strategy: CovarianceStrategy
    ) -> SufficientStatistics:
        # Each block gets its own rows' labels, not all of them.
        return self._with_own_rows(_labelled, labels.__getitem__, shift, strategy)

    def resp_statistics(
        self,
        resp_of_rows: Callable[[slice], Array],
        shift: Array,
        strategy: CovarianceStrategy,
    ) -> SufficientStatistics:
        if _pickled_size(resp_of_rows) <= _CLOSURE_BYTES:
            return super().resp_statistics(resp_of_rows, shift, strategy)
        return self._with_own_rows(_given_resp, resp_of_rows, shift, strategy)

    def _with_own_rows(
        self,
        kernel: Callable[..., SufficientStatistics],
        values: Callable[[slice], Array],
        shift: Array,
        strategy: CovarianceStrategy,
    ) -> SufficientStatistics:
        """``kernel(values(rows), X_b, w_b, first)`` per block, summed in order.

        Each block's task carries only its own rows' values.
        """
        blocks = [
            functools.partial(
                kernel,
                values(slice(first, first + n)),
                shift=shift,
                strategy=strategy,
            )
            for _, _, first, n in self._parts()
        ]
        return functools.reduce(operator.add, self._run(blocks))

    # ---------------------------------------------------------- prediction
    def _map_rows(
        self,
        kernel: Callable[[Array, Params, CovarianceStrategy], Array],
        params: Params,
        strategy: CovarianceStrategy,
        columns: int | None,
        dtype: Any,
    ) -> da.Array:
        """``kernel`` over every block, lazily: one row (or ``columns``) per row."""
        if columns is None:
            shape: dict[str, Any] = {"drop_axis": 1, "meta": np.empty(0, dtype)}
        else:
            chunks = (self.X.chunks[0], (columns,))
            shape = {"chunks": chunks, "meta": np.empty((0, 0), dtype)}
        return da.map_blocks(
            _predict_block, self.X, kernel, params, strategy, dtype=dtype, **shape
        )

    def labels(self, params: Params, strategy: CovarianceStrategy) -> da.Array:
        """The most probable component of every row: a lazy Dask array (n)."""
        return self._map_rows(most_probable, params, strategy, None, np.intp)

    def proba(self, params: Params, strategy: CovarianceStrategy) -> da.Array:
        """Responsibilities of every row: a lazy Dask array (n x K)."""
        k = params.weights.shape[0]
        return self._map_rows(_proba_kernel, params, strategy, k, self.dtype)

    def log_density(self, params: Params, strategy: CovarianceStrategy) -> da.Array:
        """``log p(x)`` of every row: a lazy Dask array (n)."""
        return self._map_rows(log_density, params, strategy, None, self.dtype)


def _labelled(
    labels: Array,
    X: Array,
    w: Array | None,
    first: int,
    *,
    shift: Array,
    strategy: CovarianceStrategy,
) -> SufficientStatistics:
    return label_statistics(X, w, labels, shift, strategy)


def _given_resp(
    resp: Array,
    X: Array,
    w: Array | None,
    first: int,
    *,
    shift: Array,
    strategy: CovarianceStrategy,
) -> SufficientStatistics:
    return resp_statistics(X, w, lambda rows: resp[rows], shift, strategy)


# ------------------------------------------------------------- validation
def _rows(X: Any, estimator: Any) -> da.Array:
    """X as a 2-D float Dask array with one chunk across all the columns."""
    X = da.asarray(X)
    name = type(estimator).__name__
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D Dask array (n_samples x n_features), got a "
            f"{X.ndim}-D one of shape {X.shape}. Reshape it, for instance with "
            "X.reshape(-1, 1) if it holds a single feature."
        )
    if math.isnan(X.shape[1]):
        raise ValueError(
            "The number of columns of X is unknown (a chunk of unknown width); "
            "call X.compute_chunk_sizes() first."
        )
    kind = X.dtype.kind
    if kind == "c":
        raise ValueError(f"Complex data not supported by {name}; got {X.dtype}.")
    if kind not in "biuf":
        raise TypeError(
            f"{name} needs numeric data, but X has dtype {X.dtype}. Convert it "
            "with X.astype(float)."
        )
    if X.dtype not in (np.float64, np.float32):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X


def _known_rows(X: da.Array) -> da.Array:
    """X with known row chunk sizes (computed from X, already persisted)."""
    if any(math.isnan(size) for size in X.chunks[0]):
        X = X.copy()
        X.compute_chunk_sizes()
    return X


def _dask_weights(sample_weight: da.Array, X: da.Array) -> da.Array:
    """Checked weights in X's dtype, chunked as X's rows (see
    :func:`gaussmix._source.check_sample_weight`)."""
    n_samples = X.shape[0]
    if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), one weight per "
            f"sample, but got shape {sample_weight.shape}."
        )
    if sample_weight.dtype.kind not in "biuf":
        raise TypeError(
            f"sample_weight must be numeric, got dtype {sample_weight.dtype}. "
            "Pass one non-negative number per sample."
        )
    weights = sample_weight.astype(np.float64).rechunk((X.chunks[0],))
    summaries = dask.compute(
        *[dask.delayed(_weight_summary)(w) for w in weights.to_delayed().ravel()]
    )
    non_finite, negative, largest = np.stack(summaries).T
    scale = weight_scale(
        non_finite.sum() == 0, negative.sum() > 0, float(np.max(largest))
    )
    if scale != 1.0:
        weights = weights * scale
    return weights.astype(X.dtype)


def fit_source(estimator: Any, X: Any, sample_weight: Any) -> DaskSource:
    """Check a Dask array (and its weights) for ``fit``; set ``n_features_in_``.

    Parameters
    ----------
    estimator : GaussianMixture
        The estimator being fitted.
    X : dask.array.Array of shape (n_samples, n_features)
        Numeric; integers become float64. Chunks of unknown size are measured.
    sample_weight : dask.array.Array or array-like of shape (n_samples,) or None
        One non-negative weight per row.

    Returns
    -------
    DaskSource
        The rows, persisted on the cluster.
    """
    X = _rows(X, estimator)
    # EM reads every row once per iteration, so X is persisted: its blocks
    # are computed once (or, for an array made from host data, sent once)
    # and then stay in the workers' memory (spilling to disk if they must)
    # until the fit is over. Without it each iteration would recompute X
    # from its graph, or send it from the client again. Persisted blocks
    # keep their lineage: a block lost with a worker is recomputed.
    X = _known_rows(X.persist())
    n_samples = X.shape[0]
    if n_samples < 2:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while a "
            f"minimum of 2 is required by {type(estimator).__name__}."
        )
    weights = None
    if sample_weight is not None:
        if is_dask_collection(sample_weight):
            weights = _dask_weights(da.asarray(sample_weight), X)
        else:
            host = check_sample_weight(sample_weight, n_samples, X.dtype)
            weights = da.from_array(host, chunks=(X.chunks[0],))
        weights = weights.persist()
    estimator.n_features_in_ = int(X.shape[1])
    if hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    return DaskSource(X, weights)


def prediction_source(estimator: Any, X: Any) -> DaskSource:
    """Check a Dask array against the fitted ``estimator``; nothing is computed.

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted estimator.
    X : dask.array.Array of shape (n_samples, n_features)
        Row chunks may be of unknown size; the results then are too.

    Returns
    -------
    DaskSource
        The rows, lazily: predictions are Dask arrays.
    """
    X = _rows(X, estimator)
    check_n_features(estimator, int(X.shape[1]))
    return DaskSource(X, None)
