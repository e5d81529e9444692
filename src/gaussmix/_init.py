"""Initialisation strategies: the statistics of the responsibilities EM starts from.

Hard strategies (k-means, k-means++, random_from_data) give labels, with
no component for rows that are not seeds, and a centre per component; the
initial M-step then takes one pass over the rows. ``"random"`` gives a
function of a row slice, so the M-step streams its dense N x K matrix in
chunks. The random draws are made on the host in the same order as
scikit-learn's, so the same ``random_state`` gives the same start, whatever
holds the rows (:mod:`gaussmix._source`).

On large data (more than ``KMEANS_SAMPLE`` rows with positive weight)
k-means and k-means++ run on a uniform sample of the rows (see
:func:`sample_rows`), in float64 whatever the rows' dtype, and every row
is then labelled by its nearest centre.
Such a sample places the centres about as well as all the rows, costs a
fraction of one EM iteration, and keeps the initialisation's memory a
small fraction of the input's; below that size the start is
scikit-learn's, bit for bit (but for rounding in the sums, where the
compiled kernels take them: :func:`gaussmix._em.label_statistics`).
Where the fit's E-steps use the compiled kernels, so do the labelling and
the sums of the start: labels the same as scikit-learn's but where two
centres are equally near to rounding, sums to rounding (in float64; for
float32 rows more exact than NumPy's float32 products).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import pairwise_distances_argmin

from . import _kernels
from ._covariance import CovarianceStrategy
from ._parallel import rows_within_share, usable_cpus
from ._stats import SufficientStatistics

if TYPE_CHECKING:
    from ._source import RowSource

Array = np.ndarray

__all__ = [
    "INIT_METHODS",
    "KMEANS_SAMPLE",
    "initial_statistics",
    "label_rows",
    "label_workers",
    "nearest",
    "nearest_of_rows",
    "sample_rows",
]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
KMEANS_SAMPLE = 2**16
# k-means on a sample runs in float64 whatever the input's dtype
# (:meth:`gaussmix._source.RowSource.kmeans`), so that a float32 fit starts
# where the float64 fit of the same data does: scikit-learn's k-means on a
# float32 sample stopped at centres 2.5e-4 (relative) from those of the
# same sample in float64, and the whole default fits of case (e) of
# benchmarks/bench_em.py ended with means 1.1e-4 apart (3.6e-7 from float64
# samples), their components numbered differently. On a sample of m rows of
# D values it holds about m * (2 * 8 * D + 64) bytes: the float64 sample
# and scikit-learn's copy of it (its tolerance takes the columns'
# variances), and its labels, norms and distances (measured with
# tracemalloc: 130 bytes per row beyond the sample for 16 features, 518 for
# 64). The sample is kept to this share of the input, counted in float32
# rows (4 bytes a value) whatever the input's dtype: a float32 fit and a
# float64 fit of the same data then draw the same sample and start alike.
# (Sized by each dtype's own rows, float32 fits of cases (b), (c) and (e)
# drew smaller samples and ended at other optima than float64's, 2e-3 to
# 5e-3 apart in lower bound.) A float64 input's sample then costs at most
# half this share.
_SAMPLE_SHARE = 1 / 6
_SAMPLE_INPUT_ITEMSIZE = 4
_SAMPLE_KMEANS_ITEMSIZE = 8
# Rows labelled by nearest centre per call (a window), by :func:`nearest`
# and :func:`nearest_of_rows` alike (the same windows, so the same labels,
# bit for bit); in memory the label statistics are summed one window per
# chunk, so each window is labelled once. At least the first (2048-row
# windows cost case (b) of benchmarks/bench_em.py 1.7x the time of 4096 in
# scikit-learn's per-call checks), at most the second, within
# _LABEL_SHARE of the input for every worker's windows together (see
# :func:`label_rows`). Seconds to label case (e)'s 2M rows and sum their
# statistics in windows of 4096 / 8192 / 16384 / 32768 rows: 0.455 /
# 0.207 / 0.170 / 0.113; case (b): 0.276 / 0.157 / 0.136 / 0.126.
_LABEL_ROWS = (4096, 2**15)
_LABEL_SHARE = 1 / 5
# Rows of at most this many features are labelled by the compiled kernels
# (where the fit's E-steps use them), whose exact differences cost n K D
# multiply-adds: as fast as scikit-learn's products (its
# pairwise_distances_argmin) at 64-128 features, ms for all rows, two
# threads: 200k x 64 and 32 centres (case (d) of benchmarks/bench_em.py)
# 34 against 37; 200k x 128 and 16 centres 44 against 46; 500k x 32 and 32
# centres 44 against 54; and far faster for fewer (below).
_KERNEL_LABEL_FEATURES = 128


def sample_rows(
    sample_weight: Array | None,
    n_samples: int,
    n_components: int,
    random_state: np.random.RandomState,
    n_features: int,
) -> Array | None:
    """Sorted rows to run k-means on, or None to use all of them.

    At most ``KMEANS_SAMPLE`` rows and a sixteenth of them, fewer where
    k-means's memory for the sample (in float64) would pass
    ``_SAMPLE_SHARE`` of the input (counted in float32 rows of
    ``n_features`` values, whatever the dtype), and at least 64 per
    component.
    """
    candidates = None if sample_weight is None else np.flatnonzero(sample_weight > 0)
    n_candidates = n_samples if candidates is None else candidates.size
    if n_candidates <= KMEANS_SAMPLE:
        return None
    input_bytes = _SAMPLE_SHARE * n_candidates * _SAMPLE_INPUT_ITEMSIZE * n_features
    kmeans_bytes = 2 * _SAMPLE_KMEANS_ITEMSIZE * n_features + 64
    affordable = int(input_bytes) // kmeans_bytes
    size = min(KMEANS_SAMPLE, n_candidates // 16, affordable)
    size = max(size, 64 * n_components)
    generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    chosen = distinct_integers(generator, n_candidates, size)
    return chosen if candidates is None else candidates[chosen]


def distinct_integers(generator: np.random.Generator, n: int, size: int) -> Array:
    """``size`` distinct integers of ``range(n)``, uniformly, sorted.

    In O(size) memory: ``Generator.choice(n, size, replace=False)`` holds
    all of ``range(n)`` (8 bytes per row) when ``size > n / 50``. Draws
    with replacement until ``size`` distinct values are in hand, then keeps
    a uniform subset of them; every step treats all values alike, so every
    subset of ``size`` values is equally likely.
    """
    if not 0 <= size <= n:
        raise ValueError(f"cannot draw {size} distinct integers below {n}")
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < size:
        missing = size - chosen.size
        draws = generator.integers(0, n, size=missing + missing // 8 + 16)
        chosen = np.unique(np.concatenate([chosen, draws]))
    if chosen.size > size:
        chosen = np.sort(generator.choice(chosen, size=size, replace=False))
    return chosen


def label_rows(X: Array) -> int:
    """Rows per labelling window of ``X`` (see ``_LABEL_ROWS``).

    A window's temporaries take at most about ``40 + 2 * D * itemsize``
    bytes per row (its labels, a component's row numbers, and that
    component's rows gathered and weighted; measured with tracemalloc:
    53 bytes per row for 2 float64 features, 1053 for 64, all rows in one
    component).
    """
    return rows_within_share(X.nbytes, _label_bytes(X), _LABEL_SHARE, _LABEL_ROWS)


def label_workers(X: Array) -> int | None:
    """Workers to label windows of ``label_rows(X)`` rows side by side: all
    (None), or as many as keep their windows within ``_LABEL_SHARE`` of the
    input where even the smallest windows of all would pass it (small
    inputs: case (a) of benchmarks/bench_em.py, 100,000 x 2 in float32, had
    two 4096-row windows at 35% of its 0.8 MiB, a whole fit's peak)."""
    fitting = int(_LABEL_SHARE * X.nbytes) // (_label_bytes(X) * label_rows(X))
    return None if fitting >= usable_cpus() else max(1, fitting)


def _label_bytes(X: Array) -> int:
    return 40 + 2 * X.shape[1] * X.itemsize


def _window_labels(
    X: Array, centres: Array, strategy: CovarianceStrategy
) -> Callable[[slice], Array]:
    """The nearest centre's index for each row of a window of ``X``'s rows.

    By the compiled kernels where the fit's E-steps use them
    (:func:`gaussmix._kernels.for_labels`), whose exact differences in
    float64 take a fraction of the time of scikit-learn's
    ``pairwise_distances_argmin`` (labelling case (e) of
    benchmarks/bench_em.py, 2M x 4 rows and 8 centres: 7.5 ms against 80
    in float64 and float32 alike, two threads; case (b), 1M x 16 and 16
    centres: 27 against 63), else by the latter, in the rows' dtype (float32
    distances are taken in float64 either way). The two pick the same
    centre but where two are equally near to rounding.
    """
    n_components, n_features = centres.shape
    kernels = None
    if n_features <= _KERNEL_LABEL_FEATURES:
        kernels = _kernels.for_labels(X, n_components, strategy.n_expanded(n_features))
    if kernels is None:
        cast = centres.astype(X.dtype)
        return lambda window: pairwise_distances_argmin(X[window], cast)
    exact = np.ascontiguousarray(centres, dtype=np.float64)

    def labels(window: slice) -> Array:
        found = np.empty(window.stop - window.start, dtype=np.int32)
        kernels.nearest_centres(_kernels.rows_for(X, window, X.dtype), exact, found)
        return found

    return labels


def nearest(X: Array, centres: Array, strategy: CovarianceStrategy) -> Array:
    """Label of the nearest centre for every row, in windows of rows."""
    labels = np.empty(X.shape[0], dtype=np.int32)
    of_window = _window_labels(X, centres, strategy)
    size = label_rows(X)
    for start in range(0, X.shape[0], size):
        rows = slice(start, min(start + size, X.shape[0]))
        labels[rows] = of_window(rows)
    return labels


def nearest_of_rows(
    X: Array, centres: Array, strategy: CovarianceStrategy
) -> Callable[[slice], Array]:
    """``nearest(X, centres, strategy)[rows]`` for any slice, without
    labelling every row.

    Rows are labelled in the same windows as :func:`nearest` (so the labels
    are the same, bit for bit), only those that ``rows`` touches: labels
    and sums can then go chunk by chunk (a chunk per window: see
    :func:`label_rows`), and the memory stays bounded however many rows
    there are.
    """
    of_window = _window_labels(X, centres, strategy)
    size = label_rows(X)

    def labels(rows: slice) -> Array:
        first = rows.start - rows.start % size
        parts = []
        for start in range(first, rows.stop, size):
            parts.append(of_window(slice(start, min(start + size, X.shape[0]))))
        found = np.concatenate(parts).astype(np.int32, copy=False)
        return found[rows.start - first : rows.stop - first]

    return labels


def initial_statistics(
    source: RowSource,
    n_components: int,
    method: str,
    random_state: np.random.RandomState,
    strategy: CovarianceStrategy,
) -> SufficientStatistics:
    """Statistics of the starting responsibilities chosen by ``method``.

    The random numbers are drawn on the host in scikit-learn's order. The
    source runs k-means (:meth:`RowSource.kmeans`: scikit-learn's on the
    host, the same algorithm on an accelerator) on all the rows up to
    ``KMEANS_SAMPLE`` (the start is then scikit-learn's), else on a sample
    (see :mod:`gaussmix._init`), after which every row is labelled by its
    nearest centre where it lives.
    """
    n_samples = source.n_samples
    if method in ("kmeans", "k-means++"):
        weights = source.host_weights()
        rows = sample_rows(
            weights, n_samples, n_components, random_state, source.n_features
        )
        if method == "kmeans":
            centres, labels = source.kmeans(rows, n_components, random_state)
            if labels is not None:
                return source.label_statistics(labels, centres, strategy)
            return source.nearest_statistics(centres, strategy)
        seeds = source.kmeans_plusplus(rows, n_components, random_state)
        return source.seed_statistics(seeds, strategy)
    if method == "random":
        resp = random_state.uniform(size=(n_samples, n_components))
        resp /= resp.sum(axis=1)[:, None]

        def resp_of_rows(rows: slice) -> Array:
            return resp[rows]

        zero = np.zeros((n_components, source.n_features))
        first = source.resp_statistics(resp_of_rows, zero, strategy)
        shift = first.diff_sum / np.maximum(first.resp_sum, 1e-300)[:, None]
        return source.resp_statistics(resp_of_rows, shift, strategy)
    if method == "random_from_data":
        weights = source.host_weights()
        if weights is None:
            indices = random_state.choice(n_samples, size=n_components, replace=False)
        else:
            p = weights / np.sum(weights, dtype=float)
            indices = random_state.choice(
                n_samples, size=n_components, replace=False, p=p
            )
        return source.seed_statistics(indices, strategy)
    raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}")
