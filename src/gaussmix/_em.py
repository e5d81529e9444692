"""The EM engine: pure functions over parameters and statistics.

Nothing here holds estimator state. The E-step streams the rows in chunks,
so temporaries are bounded by the chunk size (never N x K x D), and returns
additive :class:`~gaussmix._stats.SufficientStatistics`; the M-step turns
statistics into new parameters. Parameters are kept in float64; the E-step
casts them to the data's dtype, so float32 data is processed in float32 and
accumulated in float64.

There are two E-steps with the same result:

* the *expanded* one (the default, and fast): each chunk of rows is centred
  once at ``c`` (the mixture's mean) and turned into quadratic features
  ``phi`` (F x rows); one matrix product ``W @ phi`` gives every
  component's log-density, and one product of the responsibilities with
  the same ``phi`` gives every statistic, taken about ``c``. The chunks are
  shared out among threads (:mod:`gaussmix._parallel`).
* the *exact* one: per-component differences ``x - mu_k``, statistics taken
  about the current means. It is used when the expansion would lose too
  many digits: when a component's mean is far from ``c`` in units of its
  own smallest standard deviation (``CovarianceStrategy.expansion_error``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from ._covariance import CovarianceStrategy
from ._errors import DegenerateCovarianceError, DegenerateDataWarning
from ._parallel import reduce_chunks, rows_within_share, usable_cpus
from ._stats import Moments, SufficientStatistics, block_statistics, moments_of

Array = np.ndarray
logger = logging.getLogger("gaussmix")

__all__ = [
    "EMResult",
    "EStep",
    "Params",
    "chunk_rows",
    "column_moments",
    "e_step",
    "em",
    "exact_is_cheaper",
    "expansion_gap",
    "label_statistics",
    "log_density",
    "m_step",
    "most_probable",
    "resp_statistics",
    "weighted_log_prob",
]

# Elements in one K x chunk x D temporary of the exact E-step: 2**16 float64
# values are 512 KiB, so the few temporaries of a chunk stay in cache and a
# fit's extra memory stays a small fraction of a large input.
_CHUNK_ELEMENTS = 2**16
_LOG_2PI = math.log(2.0 * math.pi)

# Bytes in one chunk of expanded features plus log-densities: large enough
# that NumPy's per-call overhead is amortised, small enough for the caches
# to help between the two matrix products (measured on cases (b)-(e) of
# benchmarks/bench_em.py).
_EXPANDED_BYTES = 2**22
# Rows per chunk: at least this many (narrower products run far below
# BLAS's speed) and at most this many (beyond, fewer chunks no longer paid:
# case (e) was 1.3x faster per iteration in float64, 1.7x in float32, with
# 21736 rows than 8184, where the features are few).
_EXPANDED_ROWS = (256, 2**15)
# Every worker's buffers together (features, log-densities and four row
# vectors per row) stay under this share of the input, so that a fit's extra
# memory stays a small fraction of the data at any size (case (a): 1.5 MiB
# of data, whose 8184-row buffers were 55% of it), or under
# _EXPANDED_LEAST_BYTES, so that small inputs are not cut into tiny chunks.
# A sixth, not a fifth: with a fifth, (a)'s float32 E-step (0.8 MiB of
# data, whose fixed costs weigh twice as much as in float64) peaked at 26%
# of it; a sixth costs (a)'s E-step 8-10% (2.07 -> 2.25 ms in float64,
# 1.63 -> 1.80 in float32) and no other case of the benchmark anything.
_EXPANDED_SHARE = 1 / 6
_EXPANDED_LEAST_BYTES = 2**17
# Chunks of fewer multiply-adds than this (rows x features x components, in
# float64; float32 chunks need twice as many, since their calls take about
# half as long) are run by one thread. Each chunk makes some 20 NumPy calls,
# and two threads handing the GIL back and forth between short calls were
# slower than one, or little faster. Milliseconds per E-step with one / two
# workers (scratch measurements of gaussmix._em._expanded_e_step):
# - case (e) at 200k rows, chunks of 5920 rows (0.7M multiply-adds):
#   float64 7.3 / 7.7, float32 4.3 / 5.0;
# - case (a) at 1M rows, 15384 rows (0.28M): 13.2 / 12.8 and 8.2 / 10.5;
# - case (c) at 100k rows, 3016 rows (1.6M): 10.1 / 7.1 and 5.9 / 6.4;
# - case (b) at 100k rows, 920 rows (2.3M): 33.2 / 18.4 and 17.8 / 12.6.
_THREADED_MULTIPLY_ADDS = 2**20
# Chunks need no more rows than make this many multiply-adds in each of
# their two products (features x components x rows): case (d) of
# benchmarks/bench_em.py (2145 features, 32 components) took the same time
# per float32 E-step in chunks of 256 rows as in the 480 that 4 MiB
# allowed (0.371-0.378 s), whose buffers were 17% of its input; with the
# parameters and the partial sums (F x K, float64) beside them, a whole
# float32 fit's extra peak was 38% of the input. Only products this large
# are cut: the other cases of the benchmark keep their chunks.
#
# Float32 chunks hold half as many (down to 128 rows): their products run
# about twice as fast, and outrun the caches sooner. (d)'s 256 float32 rows
# have 2.2 MB of features, beyond a core's 2 MiB second-level cache, 128
# rows 1.1 MB: its float32 E-step (200,000 rows, two workers, alternated)
# took 0.338 s in chunks of 128 rows against 0.368 in 256 (96-192 rows
# alike at 50,000), where float64's took 0.762 against 0.727 (so float64
# keeps its 256). (b) and (c) in float32, whose chunks this halves too,
# were within 1% either way (0.0903 s against 0.0899 for (b), 0.0242
# against 0.0239 for (c), full size).
_ENOUGH_MULTIPLY_ADDS = 2**24

# Chunks of few rows (large products: see _ENOUGH_MULTIPLY_ADDS) are taken
# a few at a time by one worker, their statistics summed into one array:
# each result costs an F x K float64 array made, filled and then added into
# the total, as much for 256 rows as for 4096. Tasks of at least
# _TASK_ROWS rows, and at least _LEAST_TASKS of them. Fixed by the chunks
# alone, not the workers, so the sums are the same whatever the number of
# threads.
_TASK_ROWS = 2048
_LEAST_TASKS = 16

# OpenBLAS (the BLAS of NumPy's and SciPy's wheels) multiplies matrices of
# at most a million multiply-adds (M * N * K) with faster kernels on x86-64:
# the E-step's products are taken over blocks of columns that small where a
# block keeps enough columns to amortise the extra calls. Measured on this
# project's 2-core machines (AVX-512): W @ phi 1.3-1.5x faster in blocks of
# 256 columns or more (cases (b) and (c) of benchmarks/bench_em.py); the
# statistics' product phi @ resp^T only in blocks of about 900 columns or
# more (1.5x in case (c); no faster, and the partial sums cost, in (b)).
_SMALL_PRODUCT = 1_000_000
_MIN_BLOCK_COLUMNS = (256, 896)

# NumPy's matmul keeps the GIL when its result has at most this many
# entries (measured: 496 kept it, 512 released it), as the statistics'
# product phi @ resp^T (F x K) has for few features and components: with
# two workers, those products then ran one at a time. Taken instead as one
# batched product over groups of columns (a result of groups x F x K), they
# run side by side: the NumPy path's E-step of case (e) (F x K = 15 x 8,
# two workers) took 40.6-40.9 ms instead of 46.3-47.0 in float64,
# 25.0-25.5 instead of 27.8-28.0 in float32. On one worker the batches
# only cost (2-6 us a block).
_GIL_HELD_OUTPUTS = 500

# The k-means start's statistics (label_statistics) are summed by the
# compiled kernels (where a fit's E-steps use them) for at most this many
# quadratic features, full covariances of 16 features; beyond, NumPy's
# per-component products are faster. Single-threaded, float64 / float32, ms
# for all the rows of benchmarks/bench_em.py's cases (their quadratic
# features in brackets), kernels against NumPy: (e) (2M x 4 full, 8
# components [10]) 20 / 19 against 58 / 50; (c) (1M x 16 diagonal, 16
# [16]) 31 / 36 against 65 / 71; (b) (1M x 16 full, 16 [136]) 56 / 50
# against 81 / 58; (d) (200k x 64 full, 32 [2080]) 137 / 131 against
# 79 / 46.
_LABEL_SUMS_PAIRS = 136

# Rows per block of _logsumexp_rows: its K x rows copies stay in cache.
_LOGSUMEXP_ROWS = 4096

# Chunks of column_moments: their float64 copies within this share of the
# input, within these rows. The columns' variances of case (c) of
# benchmarks/bench_em.py (1M x 16) took 15-17 ms in one such pass, against
# 49-53 ms in the two passes (mean, then squares about it) of
# resp_statistics's 4096-row chunks; case (e) (2M x 4) 16-18 against 36-43.
# A fifth of the input, as the E-step's chunks take, was no faster than a
# twentieth (11-17 ms), and raised case (d)'s peak memory to 21% of it.
_MOMENT_CHUNKS = (1 / 20, (1024, 2**15))

# The expanded E-step is used while ``eps * expansion_error`` stays below
# this: about 1e-9 relative for float64 (parameters agree with the exact
# E-step to far better than 1e-8). For float32 it is a bound of 4e-3 on the
# error in a covariance's smallest direction (typically 1e-6 norm-wise);
# float32 with exact differences already loses about 3e-4 there, and
# convergence is judged by exact E-steps where the expanded lower bound is
# measured to be too rough for tol (see ``em``). Beyond the float32 bound,
# float32 rows are expanded in float64 (:func:`_working_expansion`).
_EXPANSION_TOLERANCE = {
    np.dtype(np.float64): 2.0**-30,
    np.dtype(np.float32): 2.0**-8,
}

# The quicker bound on the expansion's error (see _expansion_holds) is
# taken this much larger, so that its rounding never passes an expansion
# that the error itself would not: where a factor is nearly of rank one,
# its Frobenius and spectral norms agree to the last digits.
_BOUND_MARGIN = 1.0 + 2.0**-20

# The expanded E-step is used where ``eps * conditioning`` (see
# CovarianceStrategy.conditioning) stays within this: sums of products lose
# a covariance's thinnest direction as its features correlate, and the
# expanded log-densities cancel as much. Beyond it, float32 rows are worked
# on in float64, and float64 rows by exact differences.
# - float32: one component of 20,000 rows in 4 or 16 correlated features
#   (condition 1e3 to 3e5), fitted in float32 throughout, had lower bounds
#   0.004-0.17 times ``eps * conditioning`` from float64's (relative), at
#   most 0.05 times where it passed 2e-5; so within about 2.5e-5 here.
# - float64: the same rows (condition 1e6 to 1e12), expanded, had lower
#   bounds 0.001-0.018 times ``eps * conditioning`` from scikit-learn's
#   (1.5e-7 at 1e12, where scikit-learn's was within 6e-10 of the exact
#   value, computed at 50 digits); so within about 1e-9 here.
# The benchmark's cases are at 6.5e-5 ((d), 64 features) and below in
# float32; fits of Old Faithful (full, tied) at 4e-6, of the diabetes,
# acidity and galaxies data sets at 5e-5 and below.
# Features up to which the compiled kernels make the expansion of full and
# tied covariances (_compiled_expansion): its loops are K D^3 multiply-adds,
# where NumPy's batched products take BLAS from D of some tens.
_COMPILED_EXPANSION_FEATURES = 16

_CONDITIONING_TOLERANCE: dict[np.dtype, float] = {
    np.dtype(np.float64): 2.0**-24,
    np.dtype(np.float32): 2.0**-11,
}

# Predictions (log-densities, responsibilities and labels of each row) take
# a 128th of that: each row's log-density is an output of its own, where a
# fit's lower bound averages the rows' rounding away. One component of
# 50,000 float32 rows, 4 or 16 features: the largest error in a row's
# log-density, in float32, was 0.4e-6 to 1.2e-6 times the conditioning
# (for conditionings of 5 to 2,300; 2e-4 for case (b) of
# benchmarks/bench_em.py, where it is 277), the median a hundredth of that.
# This keeps every row's density to about 8e-5 (relative) in float32 and
# 1e-8 in float64; worked on in float64, float32 rows' errors were 1e-6
# and below (the float32 output's rounding). Predictions of float32 rows
# then took 1.1-1.9x as long (cases (b), (c) and (e) at 200,000 rows,
# alternating the old and new code).
_PREDICTION_TOLERANCE: dict[np.dtype, float] = {
    dtype: tolerance / 128 for dtype, tolerance in _CONDITIONING_TOLERANCE.items()
}

# The bound on the expanded E-step's rounding (``eps * expansion_error``) is
# a worst case, and far from the typical: at the converged parameters of
# benchmarks/bench_em.py's cases, float32 expanded lower bounds were within
# 2e-9 to 4e-8 of float64's (relative), exact ones within 7e-10 to 2e-8, where
# the bound said 3e-7 to 3e-4. Where a float32 fit's change falls within the
# bound, the gap between the expanded and the exact lower bound is measured
# on a sample of rows (:func:`expansion_gap`), and the expansion is kept if
# it is at most this share of tol: a convergence judged on expanded lower
# bounds is then off by at most twice that. Exact E-steps cost 10-40x an
# expanded one (cases (c) and (e), float32); taking them from the bound on,
# as before, made float32 fits of (b)-(e) at tol=1e-5 1.2-6x slower than
# float64, and even one to measure the gap over all rows cost a float32 fit
# of (c) or (e) as much as its whole start.
_TRUSTED_GAP = 1 / 4
# Measured again once the bound has grown this many times since.
_RENEWED_NOISE = 4.0
# Rows the gap is measured on: its standard error is then about a 256th of
# the spread of the rows' own differences, and the exact log-densities of a
# sample cost some 10-40 ms.
GAP_ROWS = 2**16

# Rows times components up to which a fit's E-steps are exact from the start
# (:func:`exact_is_cheaper`).
_EXACT_CHEAPER = 2000


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


def chunk_rows(n_components: int, n_features: int, n_samples: int) -> int:
    """Rows per chunk so one K x rows x D temporary stays near 512 KiB.

    Beyond 1024 rows, at most a 32nd of the rows, so that the temporaries
    stay a small share of a small input too (case (a) of
    benchmarks/bench_em.py: a fit's extra peak memory 117% -> 55% of its
    1.5 MiB input).
    """
    rows = _CHUNK_ELEMENTS // max(1, n_components * n_features)
    return max(16, min(rows, max(1024, n_samples // 32)))


def exact_is_cheaper(n_samples: int, n_components: int) -> bool:
    """Whether the exact E-step (per-component differences) is the quicker
    for ``n_samples`` rows in memory and ``n_components`` components.

    On few rows an iteration is nearly all fixed costs, and the expanded
    form's (its weights, their rounding bound, the conditioning check,
    buffers) outweigh what it saves per row. Per EM iteration, exact against
    expanded, up to rows x components of ``_EXACT_CHEAPER``: full
    covariances 1.3-1.9x faster (D = 2, 6, 16; K = 2-5; 300-1,000 rows),
    diagonal ones 1.1-1.4x (one case of 16 features and 5 components 0.87x);
    beyond it the expanded form soon wins (2,000 rows of D=2, K=5: 1.5x).
    Old Faithful's model selection (``GaussianMixtureIC``'s 108 fits of
    272 rows) took 2.30 s instead of 2.63 with its E-steps alone exact.
    Predictions on so few rows are exact too, for the same reason.
    """
    return n_samples * n_components <= _EXACT_CHEAPER


def _chunks(n_samples: int, size: int) -> Iterator[slice]:
    for start in range(0, n_samples, size):
        yield slice(start, min(start + size, n_samples))


def expanded_chunks(
    n_expanded: int, n_components: int, itemsize: int, data_bytes: int
) -> tuple[int, int | None]:
    """Rows per chunk of the expanded E-step and its workers (1, or None: all).

    As many rows as ``_EXPANDED_BYTES`` allows, within ``_EXPANDED_ROWS``,
    and fewer where every worker's buffers together would pass
    ``_EXPANDED_SHARE`` of the data (and ``_EXPANDED_LEAST_BYTES``), but
    never fewer than ``_EXPANDED_ROWS[0]``: case (d) at 20k rows, whose
    buffers at a fifth of the data would be chunks of 56 rows, took an
    E-step 1.2x longer in float64 and 1.45x in float32 than with 256.
    Chunks too small to be worth a thread (``_THREADED_MULTIPLY_ADDS``) are
    run by one worker, whose chunks may then be twice as long. No more rows
    than make ``_ENOUGH_MULTIPLY_ADDS`` in each product (float32: half as
    many, and as few as half of ``_EXPANDED_ROWS[0]``).

    A multiple of 8, and never one whose features are a multiple of 4 KiB
    apart: the rows of ``phi`` would then share cache sets, which made the
    products up to 1.9x slower (float32; measured with chunks of 8192 rows
    against 8184 in cases (c) and (e) of benchmarks/bench_em.py).
    """
    low, high = _EXPANDED_ROWS
    values = n_expanded + n_components
    budget = max(int(_EXPANDED_SHARE * data_bytes), _EXPANDED_LEAST_BYTES)
    per_row = itemsize * (values + 4)  # features, log-densities, 4 row vectors
    # float32: half the multiply-adds, down to half the rows (see
    # _ENOUGH_MULTIPLY_ADDS).
    enough = _ENOUGH_MULTIPLY_ADDS * itemsize // 8 // (n_expanded * n_components)
    enough = max(enough, low * itemsize // 8)
    workers: int | None = None
    rows = 0
    for n_workers in (usable_cpus(), 1):
        share = budget // (per_row * n_workers)
        most = min(share, high, _EXPANDED_BYTES // (itemsize * values))
        rows = min(max(low, most), enough)
        rows -= rows % 8
        if n_workers == 1 or _worth_threads(rows, n_expanded, n_components, itemsize):
            workers = None if n_workers > 1 else 1
            break
    if (rows * itemsize) % 4096 == 0:
        rows -= 8
    return rows, workers


def _worth_threads(
    rows: int, n_expanded: int, n_components: int, itemsize: int
) -> bool:
    """Whether chunks of ``rows`` rows are long enough to share among threads."""
    work = rows * n_expanded * n_components * itemsize
    return work >= 8 * _THREADED_MULTIPLY_ADDS


class _Expansion(NamedTuple):
    """What the expanded E-step needs, in the data's dtype."""

    weights: Array  # K x F
    centre: Array  # D, the data's dtype
    centre64: Array  # the same values in float64
    n_quadratic: int
    pairs: tuple[Array, Array]  # the quadratic rows' feature indices


def _expansion(
    dtype: np.dtype, params: Params, strategy: CovarianceStrategy
) -> _Expansion | None:
    """The expanded form of ``params``, or None if it would lose digits."""
    centre = (params.weights @ params.means).astype(dtype)
    centre64 = centre.astype(np.float64)
    if not _expansion_holds(dtype, params, strategy, centre64):
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_weights = np.log(params.weights)
        weights = strategy.expanded_weights(
            log_weights, params.means, params.precisions_cholesky, centre64
        )
    if not np.all(np.isfinite(weights)):
        return None
    n_features = params.means.shape[1]
    first, second = strategy.quadratic_pairs(n_features)
    return _Expansion(
        np.ascontiguousarray(weights.astype(dtype)),
        centre,
        centre64,
        strategy.n_quadratic(n_features),
        (np.ascontiguousarray(first, np.intp), np.ascontiguousarray(second, np.intp)),
    )


def _expansion_holds(
    dtype: np.dtype, params: Params, strategy: CovarianceStrategy, centre: Array
) -> bool:
    """Whether ``eps * expansion_error`` is within ``_EXPANSION_TOLERANCE``
    (``centre``: the mixture's mean in ``dtype``, as float64).

    Decided by the strategy's quicker upper bound where that is within it
    (with ``_BOUND_MARGIN`` for its rounding), else by the error itself
    (:func:`_expansion_noise`): the same decision either way. The bound
    settles it for all but components hundreds of their smallest standard
    deviations from the centre, and saves full covariances' spectral norms
    each E-step (25-30 us of a 300 us iteration on Old Faithful).
    """
    tolerance = _EXPANSION_TOLERANCE[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        bound = strategy.expansion_error_bound(
            params.means, params.precisions_cholesky, centre
        )
    if float(np.finfo(dtype).eps) * bound * _BOUND_MARGIN <= tolerance:
        return True
    return _expansion_noise(dtype, params, strategy) <= tolerance


def _working_expansion(
    dtype: np.dtype,
    params: Params,
    strategy: CovarianceStrategy,
    tolerances: dict[np.dtype, float] = _CONDITIONING_TOLERANCE,
    kernels: ModuleType | None = None,
) -> _Expansion | None:
    """The expanded form for rows of ``dtype``: in that dtype, else in
    float64 (float32 rows whose expansion would lose too many digits in
    float32: components over about 180 of their smallest standard
    deviations from the centre, or features correlated beyond
    ``tolerances``, see :func:`_sums_hold`), else None (exact differences).

    Expanded in float64, float32 rows cost about what float64 rows do, where
    exact differences cost 10-40x that (cases (c) and (e) of
    benchmarks/bench_em.py).

    With the compiled ``kernels`` (the E-step's, see
    :func:`_compiled_expansion`), the expansion in ``dtype`` is made in one
    compiled call where it holds; otherwise, and for other ``tolerances``,
    as here.
    """
    dtype = np.dtype(dtype)
    if kernels is not None and tolerances is _CONDITIONING_TOLERANCE:
        expansion = _compiled_expansion(kernels, dtype, params, strategy)
        if expansion is not None:
            return expansion
    float64 = np.dtype(np.float64)
    for work in (dtype,) if dtype == float64 else (dtype, float64):
        if _sums_hold(work, params, strategy, about_means=False, tolerances=tolerances):
            expansion = _expansion(work, params, strategy)
            if expansion is not None:
                return expansion
    return None


def _compiled_parameters(strategy: CovarianceStrategy, n_features: int) -> bool:
    """Whether the compiled kernels make the parameter steps (the expansion
    and the M-step) of ``strategy``: full and tied covariances of at most
    ``_COMPILED_EXPANSION_FEATURES`` features."""
    return strategy.square and n_features <= _COMPILED_EXPANSION_FEATURES


def _compiled_expansion(
    kernels: ModuleType,
    dtype: np.dtype,
    params: Params,
    strategy: CovarianceStrategy,
) -> _Expansion | None:
    """:func:`_expansion` in ``dtype`` of full or tied covariances of at
    most ``_COMPILED_EXPANSION_FEATURES`` features, where
    :func:`_sums_hold` and the rounding bound of :func:`_expansion_holds`
    pass it: their numbers and the weights in one compiled call
    (:func:`gaussmix._compiled.dense_expansion`), the same to rounding.
    Else None, for the NumPy path to decide as it does (float64 work, the
    error itself, or exact differences).

    The NumPy path's forty-odd calls on K x D x D arrays were 75-80 us of
    a 0.5-1.1 ms iteration of case (a) of benchmarks/bench_em.py; the call
    takes about 5.
    """
    n_components, n_features = params.means.shape
    if not _compiled_parameters(strategy, n_features):
        return None
    exact_centre = params.weights @ params.means
    centre = exact_centre.astype(dtype)
    centre64 = centre.astype(np.float64)
    shape = (-1, n_features, n_features)
    n_quadratic = strategy.n_quadratic(n_features)
    weights = np.empty((n_components, n_quadratic + n_features + 1))
    conditioning, bound = kernels.dense_expansion(
        np.ascontiguousarray(params.weights, np.float64),
        np.ascontiguousarray(params.means, np.float64),
        np.ascontiguousarray(params.covariances, np.float64).reshape(shape),
        np.ascontiguousarray(params.precisions_cholesky, np.float64).reshape(shape),
        exact_centre,
        centre64,
        weights,
    )
    eps = float(np.finfo(dtype).eps)
    if not (
        eps * conditioning <= _CONDITIONING_TOLERANCE[dtype]
        and eps * bound * _BOUND_MARGIN <= _EXPANSION_TOLERANCE[dtype]
        and np.isfinite(weights).all()
    ):
        return None
    first, second = strategy.quadratic_pairs(n_features)
    return _Expansion(
        weights.astype(dtype),
        centre,
        centre64,
        n_quadratic,
        (np.ascontiguousarray(first, np.intp), np.ascontiguousarray(second, np.intp)),
    )


def _sums_hold(
    dtype: np.dtype,
    params: Params,
    strategy: CovarianceStrategy,
    about_means: bool,
    tolerances: dict[np.dtype, float] = _CONDITIONING_TOLERANCE,
) -> bool:
    """Whether an E-step in ``dtype``, its sums taken about the mixture's
    mean (expanded) or ``about_means`` (exact differences), keeps every
    covariance's thinnest direction: ``eps * conditioning`` within
    ``tolerances[dtype]`` (:meth:`CovarianceStrategy.conditioning`).

    Where it does not, float32 rows are worked on in float64, and float64
    rows by exact differences. One component of 20,000 float32 rows in 4
    correlated features (covariance of condition 1e4 to 1e7), fitted in
    float32 throughout, had lower bounds 5e-6, 6e-5, 1e-4 and 2e-3 from
    the float64 fit of the same rows; worked on in float64 from 1e5,
    within 5e-12. The same rows in float64, expanded, had lower bounds
    2e-10, 2e-9, 3e-8 and 1.5e-7 from scikit-learn's at condition 1e9 to
    1e12.
    """
    dtype = np.dtype(dtype)
    centre = params.means if about_means else params.weights @ params.means
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        conditioning = strategy.conditioning(
            params.means, params.covariances, params.precisions_cholesky, centre
        )
    noise = float(np.finfo(dtype).eps) * conditioning
    return noise <= tolerances[dtype]


class _ChunkBuffers:
    """Per-thread work arrays of the expanded E-step, reused for every chunk."""

    def __init__(
        self,
        expansion: _Expansion,
        n_features: int,
        rows: int,
        kernels: ModuleType | None = None,
        threaded: bool = False,
    ) -> None:
        n_components, n_expanded = expansion.weights.shape
        dtype = expansion.weights.dtype
        # The compiled kernels (gaussmix._kernels), or None for NumPy.
        self.kernels = kernels
        self.phi = np.empty((n_expanded, rows), dtype=dtype)
        self.phi[-1] = 1.0
        self.log_prob = np.empty((n_components, rows), dtype=dtype)
        self.top = np.empty(rows, dtype=dtype)
        # NumPy's maximum against an array is faster than against a scalar.
        self.floor = np.full(rows, _min_log_resp(dtype), dtype=dtype)
        self.total = np.empty(rows, dtype=dtype)
        self.inverse = np.empty(rows, dtype=dtype)
        self.start = expansion.n_quadratic
        self.n_features = n_features
        columns = _SMALL_PRODUCT // (n_components * n_expanded)
        columns -= columns % 8
        self.log_prob_block, self.sums_block = (
            columns if least <= columns < rows else 0 for least in _MIN_BLOCK_COLUMNS
        )
        # Column groups of the NumPy path's statistics' product (1: one
        # product), so that its result is large enough to release the GIL
        # where other workers run beside it.
        outputs = n_components * n_expanded
        self.sums_groups = 1
        if threaded and kernels is None and outputs <= _GIL_HELD_OUTPUTS:
            self.sums_groups = _GIL_HELD_OUTPUTS // outputs + 1
        if kernels is not None:
            # What the compiled chunk (kernels.expanded_chunk) needs beside.
            self.product = np.empty((n_expanded, n_components), dtype=dtype)
            self.blocks = np.array([self.log_prob_block, self.sums_block], np.intp)
            self.gemm = kernels.blas_gemm(dtype)[:2]
            self.no_weights = np.empty(0, dtype=dtype)


def _e_step_kernels(X: Array, expansion: _Expansion) -> ModuleType | None:
    """The compiled kernels for the expanded E-step of ``expansion`` over
    ``X``, or None for NumPy (:func:`gaussmix._kernels.for_e_step`)."""
    n_components, n_expanded = expansion.weights.shape
    n_values = X.shape[0] * (n_expanded + n_components)
    return _kernels.for_e_step(X, n_values, expansion.weights.dtype)


def _buffer_factory(
    X: Array,
    expansion: _Expansion,
    rows: int,
    kernels: ModuleType | None,
    threaded: bool = False,
    keep: bool = False,
) -> Callable[[], _ChunkBuffers]:
    """Makes each worker's buffers, with the compiled ``kernels`` or None
    (:func:`_e_step_kernels`).

    With ``keep`` (one worker), small buffers are taken from, or left in,
    the fit's store where :func:`_buffers_kept` holds one: each E-step of
    the fit then reuses the first one's.
    """
    n_components, n_expanded = expansion.weights.shape
    dtype = expansion.weights.dtype

    def make() -> _ChunkBuffers:
        return _ChunkBuffers(expansion, X.shape[1], rows, kernels, threaded)

    kept = _kept_buffers.get() if keep else None
    size = rows * (n_expanded + n_components + 4) * dtype.itemsize
    if kept is None or size > _KEPT_BYTES:
        return make
    shapes = (X.shape[1], rows, expansion.weights.shape, dtype, kernels, threaded)

    def reuse() -> _ChunkBuffers:
        # Per thread: the blocks of a source may run at once in threads
        # that share the fit's context (a copy of it holds the same store).
        key = (threading.get_ident(), *shapes)
        buffers = kept.get(key)
        if buffers is None:
            buffers = kept[key] = make()
        return buffers

    return reuse


# A fit's store of single-worker E-step buffers (see _buffers_kept).
_kept_buffers: ContextVar[dict[tuple[Any, ...], _ChunkBuffers] | None] = ContextVar(
    "gaussmix_kept_buffers", default=None
)
# Buffers of at most this many bytes are kept (those whose making weighs
# beside their E-step's work).
_KEPT_BYTES = 2**20


@contextmanager
def _buffers_kept() -> Iterator[None]:
    """Within the block (one fit's iterations, in this thread or task), the
    single-worker expanded E-steps reuse small work arrays of the same
    shapes (:func:`_buffer_factory`), released at its end. Making them
    was 5-11 us of each iteration of 100,000 rows of 2 features, some
    allocated afresh each time; they are overwritten before being read,
    all but their constant rows, which nothing else writes."""
    token = _kept_buffers.set({})
    try:
        yield
    finally:
        _kept_buffers.reset(token)


def _blocks(n: int, size: int) -> Iterator[slice]:
    """Column blocks of at most ``size`` (0: one block)."""
    if size == 0:
        yield slice(0, n)
        return
    yield from _chunks(n, size)


def _expanded_log_prob(
    X: Array,
    rows: slice,
    expansion: _Expansion,
    strategy: CovarianceStrategy,
    buffers: _ChunkBuffers,
) -> tuple[Array, Array]:
    """Features ``phi`` (F x n) and weighted log-densities (K x n) of a chunk."""
    n = rows.stop - rows.start
    phi = buffers.phi[:, :n]
    kernels = buffers.kernels
    if kernels is None:
        z = phi[buffers.start : buffers.start + buffers.n_features]
        np.subtract(X[rows].T, expansion.centre[:, None], out=z)
        strategy.expand(phi, buffers.n_features)
    else:
        kernels.centre_transposed(
            _kernels.rows_for(X, rows, expansion.weights.dtype),
            expansion.centre,
            buffers.phi,
            buffers.start,
        )
        kernels.quadratic(*expansion.pairs, buffers.phi, buffers.start, n)
    log_prob = buffers.log_prob[:, :n]
    for block in _blocks(n, buffers.log_prob_block):
        np.matmul(expansion.weights, phi[:, block], out=log_prob[:, block])
    return phi, log_prob


def _normalise(log_prob: Array, buffers: _ChunkBuffers) -> Array:
    """Turn log-densities (K x n) into responsibilities in place; ``log p(x)``.

    The NumPy path; the compiled one is ``gaussmix._compiled.normalise``,
    inside ``expanded_chunk``.

    Arguments of ``exp`` are clamped at ``_min_log_resp`` (see there).
    Reductions call the ufuncs' ``reduce`` (``np.max`` and ``np.sum`` do
    the same through a Python wrapper that costs per chunk).
    """
    n = log_prob.shape[1]
    top = buffers.top[:n]
    total = buffers.total[:n]
    np.maximum.reduce(log_prob, axis=0, out=top)
    np.subtract(log_prob, top, out=log_prob)
    np.maximum(log_prob, buffers.floor[:n], out=log_prob)
    np.exp(log_prob, out=log_prob)
    np.add.reduce(log_prob, axis=0, out=total)
    inverse = buffers.inverse[:n]
    np.divide(1.0, total, out=inverse)
    np.multiply(log_prob, inverse, out=log_prob)
    np.log(total, out=total)
    total += top
    return total


class _Partial(NamedTuple):
    sums: Array  # F x K, float64
    loglik_sum: float
    worst: tuple[float, int]  # (log p, row) of the worst-explained row

    def __add__(self, other: object) -> _Partial:
        if not isinstance(other, _Partial):
            return NotImplemented
        return _Partial(
            self.sums + other.sums,
            self.loglik_sum + other.loglik_sum,
            min(self.worst, other.worst),
        )


def _fold(total: _Partial, other: _Partial) -> _Partial:
    """``total + other``, the sums added into ``total``'s own array (every
    task's is its own): no F x K array made per task folded, which for
    case (d) of benchmarks/bench_em.py is 0.5 MiB (1% of its float32 input)."""
    np.add(total.sums, other.sums, out=total.sums)
    return _Partial(
        total.sums,
        total.loglik_sum + other.loglik_sum,
        min(total.worst, other.worst),
    )


def _expanded_chunk_statistics(
    X: Array,
    sample_weight: Array | None,
    expansion: _Expansion,
    strategy: CovarianceStrategy,
    buffers: _ChunkBuffers,
    rows: slice,
    sums: Array,
) -> _Partial:
    """The statistics of a chunk of rows; ``resp^T phi`` added into ``sums``
    (F x K, float64: :func:`_expanded_sums`)."""
    if buffers.kernels is not None:
        return _compiled_chunk_statistics(
            X, sample_weight, expansion, buffers, rows, sums
        )
    phi, log_prob = _expanded_log_prob(X, rows, expansion, strategy, buffers)
    with np.errstate(under="ignore"):
        log_norm = _normalise(log_prob, buffers)
        if sample_weight is None:
            loglik_sum = float(np.add.reduce(log_norm, dtype=np.float64))
            candidates = log_norm
        else:
            weights = sample_weight[rows]
            log_prob *= weights
            loglik_sum = float(np.dot(weights, log_norm.astype(np.float64)))
            candidates = np.where(weights > 0, log_norm, np.inf)
    row = int(candidates.argmin())
    for block in _blocks(phi.shape[1], buffers.sums_block):
        sums += _grouped_product(phi[:, block], log_prob[:, block], buffers.sums_groups)
    return _Partial(sums, loglik_sum, (float(candidates[row]), rows.start + row))


def _expanded_sums(expansion: _Expansion) -> Array:
    """Zeros for the sums ``resp^T phi`` (F x K, float64; F x K, not K x F:
    BLAS is faster for this shape of product)."""
    return np.zeros((expansion.weights.shape[1], expansion.weights.shape[0]))


def _grouped_product(phi: Array, resp: Array, groups: int) -> Array:
    """``phi @ resp.T`` (F x K), as one batched product over ``groups``
    equal groups of columns, summed (see ``_GIL_HELD_OUTPUTS``), and the
    columns left over."""
    n_expanded, n = phi.shape
    width = n // groups
    if groups == 1 or width == 0:
        return np.matmul(phi, resp.T)
    used = groups * width
    # Splitting the column axis in two makes views, not copies.
    phi_groups = phi[:, :used].reshape(n_expanded, groups, width).transpose(1, 0, 2)
    resp_groups = resp[:, :used].reshape(resp.shape[0], groups, width)
    product = np.add.reduce(
        np.matmul(phi_groups, resp_groups.transpose(1, 2, 0)), axis=0
    )
    if used < n:
        product += np.matmul(phi[:, used:], resp[:, used:].T)
    return product


def _kernel_work(expansion: _Expansion, buffers: _ChunkBuffers, sums: Array) -> tuple:
    """The compiled chunk's arguments from the centre on (see
    :func:`gaussmix._compiled.expanded_chunk`): the expansion, the work
    arrays and ``sums``, which the chunk adds into."""
    return (
        expansion.centre,
        *expansion.pairs,
        buffers.start,
        expansion.weights,
        buffers.phi,
        buffers.log_prob,
        buffers.top,
        buffers.total,
        buffers.inverse,
        buffers.floor[0],
        buffers.product,
        sums,
        buffers.blocks,
        *buffers.gemm,
    )


def _compiled_chunk_statistics(
    X: Array,
    sample_weight: Array | None,
    expansion: _Expansion,
    buffers: _ChunkBuffers,
    rows: slice,
    sums: Array,
) -> _Partial:
    """:func:`_expanded_chunk_statistics` in one call of the compiled kernel."""
    kernels = buffers.kernels
    assert kernels is not None
    weights = buffers.no_weights if sample_weight is None else sample_weight[rows]
    loglik_sum, worst, row = kernels.expanded_chunk(
        _kernels.rows_for(X, rows, expansion.weights.dtype),
        np.ascontiguousarray(weights),
        rows.start,
        *_kernel_work(expansion, buffers, sums),
    )
    return _Partial(sums, loglik_sum, (worst, row))


def _compiled_rows_statistics(
    X: Array,
    sample_weight: Array | None,
    expansion: _Expansion,
    buffers: _ChunkBuffers,
    rows: slice,
    size: int,
    sums: Array,
) -> _Partial:
    """The chunks of ``size`` rows in ``rows`` of ``X`` (as
    :func:`gaussmix._kernels.whole_rows` gives it) in one call of the
    compiled kernels: bit for bit what a call per chunk
    (:func:`_compiled_chunk_statistics`) gives, without the Python between
    the calls (about 15 us per chunk: case (a) of benchmarks/bench_em.py
    has 40 chunks of 2,560 rows per iteration)."""
    kernels = buffers.kernels
    assert kernels is not None
    weights = buffers.no_weights if sample_weight is None else sample_weight
    loglik_sum, worst, row = kernels.expanded_rows(
        X,
        np.ascontiguousarray(weights),
        rows.start,
        rows.stop,
        size,
        *_kernel_work(expansion, buffers, sums),
    )
    return _Partial(sums, loglik_sum, (worst, row))


def _expanded_e_step(
    X: Array,
    sample_weight: Array | None,
    expansion: _Expansion,
    strategy: CovarianceStrategy,
    chunk_size: int | None,
) -> SufficientStatistics:
    n_components, n_expanded = expansion.weights.shape
    n_features = X.shape[1]
    # The work arrays' (float64 for float32 rows expanded in float64).
    itemsize = expansion.weights.itemsize
    if chunk_size:
        size = chunk_size
        threaded = _worth_threads(size, n_expanded, n_components, itemsize)
        workers = None if threaded else 1
    else:
        size, workers = expanded_chunks(n_expanded, n_components, itemsize, X.nbytes)
    n_chunks = -(-X.shape[0] // size)
    per_task = _chunks_per_task(n_chunks, size)
    if per_task == 1 and workers == 1:
        # One worker summing chunk after chunk into one array adds the same
        # terms in the same order as folding one-chunk tasks, bit for bit,
        # without an array, a partial result and a fold per chunk: case (a)
        # of benchmarks/bench_em.py (40 chunks) 3-8% faster per iteration.
        per_task = n_chunks

    # The rows as the compiled kernels take them whole, where they can (no
    # copy): a task's chunks then run in one call.
    whole = _kernels.whole_rows(X, expansion.weights.dtype)

    def task(buffers: _ChunkBuffers, rows: slice) -> _Partial:
        """The chunks of ``size`` rows in ``rows``, their ``resp^T phi``
        summed into one array, chunk after chunk."""
        sums = _expanded_sums(expansion)
        if whole is not None and buffers.kernels is not None:
            return _compiled_rows_statistics(
                whole, sample_weight, expansion, buffers, rows, size, sums
            )
        loglik_sum = 0.0
        worst = (math.inf, -1)
        for start in range(rows.start, rows.stop, size):
            chunk = slice(start, min(start + size, rows.stop))
            part = _expanded_chunk_statistics(
                X, sample_weight, expansion, strategy, buffers, chunk, sums
            )
            loglik_sum += part.loglik_sum
            worst = min(worst, part.worst)
        return _Partial(sums, loglik_sum, worst)

    kernels = _e_step_kernels(X, expansion)
    total = reduce_chunks(
        _buffer_factory(
            X, expansion, size, kernels, threaded=workers is None, keep=workers == 1
        ),
        task,
        list(_chunks(X.shape[0], size * per_task)),
        _fold,
        n_workers=workers,
    )
    if kernels is not None and strategy.square:
        # The same values as from_expanded's, in one call where its NumPy
        # calls were 9-15 us of an iteration of case (a).
        resp_sum = np.empty(n_components)
        diff_sum = np.empty((n_components, n_features))
        scatter = np.empty((n_components, n_features, n_features))
        kernels.dense_statistics(
            total.sums, *expansion.pairs, resp_sum, diff_sum, scatter
        )
    else:
        resp_sum, diff_sum, scatter = strategy.from_expanded(total.sums.T, n_features)
    if sample_weight is None:
        weight_sum = float(X.shape[0])
    else:
        weight_sum = float(np.sum(sample_weight, dtype=np.float64))
    worst_loglik, worst_row = total.worst
    return SufficientStatistics(
        shift=np.repeat(expansion.centre64[None, :], n_components, axis=0),
        resp_sum=resp_sum,
        diff_sum=diff_sum,
        scatter=scatter,
        weight_sum=weight_sum,
        loglik_sum=total.loglik_sum,
        worst_loglik=worst_loglik,
        worst_sample=None if worst_row < 0 else X[worst_row].astype(np.float64),
    )


def _exact_workers(
    rows: int, shape: tuple[int, int], strategy: CovarianceStrategy, itemsize: int
) -> int | None:
    """Workers for chunks of ``rows`` rows of the exact form (per-component
    differences) of means of ``shape`` (K x D): all where a chunk's work is
    worth a thread, as for the expanded form (:func:`_worth_threads`, the
    expanded features standing for the work per row and component), else 1.

    Its chunks (:func:`chunk_rows`) are small, and two threads trading the
    GIL between their calls were slower than one: per EM iteration of full
    covariances 1.2-1.7x at D=2, K=3 (2,000 to 100,000 rows), 1.1-1.3x at
    D=16, K=10, diagonal ones 1.3x at D=16, K=16 (100,000 rows); faster
    for large chunks of work, 1.35x at D=64, K=32 (20,000 rows). One case
    the rule keeps on one thread was 1.1x faster on two (D=4, K=8, 200,000
    rows: chunks of 2,048 rows)."""
    n_components, n_features = shape
    n_expanded = strategy.n_expanded(n_features)
    return None if _worth_threads(rows, n_expanded, n_components, itemsize) else 1


def _chunks_per_task(n_chunks: int, rows: int) -> int:
    """Consecutive chunks of ``rows`` rows that one worker takes at a time,
    summing their statistics into one F x K array (see ``_TASK_ROWS``)."""
    return max(1, min(-(-_TASK_ROWS // rows), n_chunks // _LEAST_TASKS))


def _write_rows(
    X: Array,
    out: Array,
    write: Callable[[Any, slice], Array],
    make_state: Any,
    size: int,
    n_workers: int | None = None,
) -> Array:
    """Fill ``out[rows] = write(state, rows)`` for every chunk, in threads."""

    def process(state: Any, rows: slice) -> None:
        out[rows] = write(state, rows)

    chunks = list(_chunks(X.shape[0], size))
    reduce_chunks(make_state, process, chunks, _nothing, n_workers=n_workers)
    return out


def _nothing(a: None, b: None) -> None:
    return None


def _expanded_log_prob_all(
    X: Array, expansion: _Expansion, strategy: CovarianceStrategy
) -> Array:
    """Weighted log-densities of every row (n x K), by the expanded form."""
    n_components, n_expanded = expansion.weights.shape
    size, workers = expanded_chunks(
        n_expanded, n_components, expansion.weights.itemsize, X.nbytes
    )
    return _write_rows(
        X,
        np.empty((X.shape[0], n_components), dtype=X.dtype),
        lambda buffers, rows: (
            _expanded_log_prob(X, rows, expansion, strategy, buffers)[1].T
        ),
        _buffer_factory(X, expansion, size, _e_step_kernels(X, expansion)),
        size,
        workers,
    )


def _min_log_resp(dtype: np.dtype) -> float:
    # exp() of a smaller argument is zero or subnormal, and subnormal exp() is
    # many times slower; clamping changes responsibilities below 1e-300
    # (float64) or 1e-35 (float32) only.
    return -700.0 if dtype == np.float64 else -80.0


def _diffs(X: Array, means: Array) -> Array:
    """``X - mu_k`` for every component: K x n x D, in the data's dtype.

    Rounded at the differences' own scale, not the means': float64 means
    are split into their value in the data's dtype and the remainder, each
    subtracted in turn. Rounding float64 means to float32 alone moved them
    by up to half a float32 step of their magnitude (5e-4 at 1e4), a
    hundredth of a standard deviation of 0.04, and float32 fits of such
    data drifted from float64's by up to 3e-3 in lower bound.
    """
    high = means.astype(X.dtype, copy=False)
    diffs = X[None, :, :] - high[:, None, :]
    if high.dtype != means.dtype:
        low = (means - high).astype(X.dtype)
        if np.any(low):
            diffs -= low[:, None, :]
    return diffs


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
    """``log(sum(exp(a), axis=1))`` of an n x K array, in blocks of rows taken
    transposed (K x rows), where NumPy reduces along long rows: along the
    short rows of ``a`` its reductions were 4-7x slower (float32 and
    float64, K = 3 to 8, 2048 to 65536 rows), and no faster for K = 32."""
    out = np.empty(a.shape[0], dtype=a.dtype)
    for start in range(0, a.shape[0], _LOGSUMEXP_ROWS):
        # A copy always (worked on in place), C-ordered whatever ``a``'s order.
        block = a[start : start + _LOGSUMEXP_ROWS].T.copy()
        top = np.maximum.reduce(block, axis=0)
        top[~np.isfinite(top)] = 0.0
        block -= top
        with np.errstate(under="ignore"):
            np.exp(block, out=block)
        total = np.add.reduce(block, axis=0)
        with np.errstate(divide="ignore"):
            np.log(total, out=total)
        np.add(total, top, out=out[start : start + total.shape[0]])
    return out


def _prediction_expansion(
    X: Array, params: Params, strategy: CovarianceStrategy
) -> _Expansion | None:
    """The expanded form for predictions on the rows ``X``, or None for
    exact differences: where the rows are few (:func:`exact_is_cheaper`) or
    the expansion would lose digits (``_PREDICTION_TOLERANCE``)."""
    if exact_is_cheaper(X.shape[0], len(params.weights)):
        return None
    return _working_expansion(X.dtype, params, strategy, _PREDICTION_TOLERANCE)


def weighted_log_prob(
    X: Array, params: Params, strategy: CovarianceStrategy, exact: bool = False
) -> Array:
    """``log w_k + log N(x_n | mu_k, Sigma_k)`` for all rows: n x K.

    ``exact`` forces per-component differences even where the expanded
    form would be accurate enough.
    """
    expansion = None if exact else _prediction_expansion(X, params, strategy)
    if expansion is not None:
        return _expanded_log_prob_all(X, expansion, strategy)
    n_components, n_features = params.means.shape
    size = chunk_rows(n_components, n_features, X.shape[0])
    return _write_rows(
        X,
        np.empty((X.shape[0], n_components), dtype=X.dtype),
        lambda _, rows: _weighted_log_prob_from_diffs(
            _diffs(X[rows], params.means), params, strategy
        ),
        lambda: None,
        size,
        _exact_workers(size, params.means.shape, strategy, X.dtype.itemsize),
    )


def _per_row(
    X: Array,
    params: Params,
    strategy: CovarianceStrategy,
    out: Array,
    of_rows: Callable[[Array], Array],
) -> Array:
    """``out[rows] = of_rows(weighted log-densities of rows)``, chunk by chunk.

    The chunks and their log-densities are those of :func:`weighted_log_prob`,
    so the results are the same as from its n x K array, bit for bit, with
    no n x K array made.
    """
    expansion = _prediction_expansion(X, params, strategy)
    if expansion is not None:
        n_components, n_expanded = expansion.weights.shape
        size, workers = expanded_chunks(
            n_expanded, n_components, expansion.weights.itemsize, X.nbytes
        )
        return _write_rows(
            X,
            out,
            lambda buffers, rows: of_rows(
                np.ascontiguousarray(
                    _expanded_log_prob(X, rows, expansion, strategy, buffers)[1].T
                )
            ),
            _buffer_factory(X, expansion, size, _e_step_kernels(X, expansion)),
            size,
            workers,
        )
    n_components, n_features = params.means.shape
    size = chunk_rows(n_components, n_features, X.shape[0])
    return _write_rows(
        X,
        out,
        lambda _, rows: of_rows(
            np.ascontiguousarray(
                _weighted_log_prob_from_diffs(
                    _diffs(X[rows], params.means), params, strategy
                )
            )
        ),
        lambda: None,
        size,
        _exact_workers(size, params.means.shape, strategy, X.dtype.itemsize),
    )


def most_probable(X: Array, params: Params, strategy: CovarianceStrategy) -> Array:
    """The most probable component of every row (n), in bounded memory."""
    out = np.empty(X.shape[0], dtype=np.intp)
    return _per_row(X, params, strategy, out, lambda wlp: np.argmax(wlp, axis=1))


def log_density(X: Array, params: Params, strategy: CovarianceStrategy) -> Array:
    """``log p(x_n)`` of every row (n), in bounded memory."""
    out = np.empty(X.shape[0], dtype=X.dtype)
    return _per_row(X, params, strategy, out, _logsumexp_rows)


def expansion_gap(
    X: Array,
    sample_weight: Array | None,
    params: Params,
    strategy: CovarianceStrategy,
    everything: bool = False,
) -> float:
    """How far the expanded E-step's mean log-likelihood may be from the
    exact one, measured on the rows ``X`` (a uniform sample of the data,
    or ``everything``).

    The weighted mean of the rows' differences of ``log p(x)`` by the two
    forms, in absolute value, plus three standard errors where ``X`` is a
    sample; 0 where ``params`` are not expanded (the E-step is exact), and
    inf where a difference is not finite.
    """
    expansion = _working_expansion(X.dtype, params, strategy)
    if expansion is None or X.shape[0] == 0:
        return 0.0
    expanded = _logsumexp_rows(_expanded_log_prob_all(X, expansion, strategy))
    exact = _logsumexp_rows(weighted_log_prob(X, params, strategy, exact=True))
    differences = expanded.astype(np.float64) - exact.astype(np.float64)
    if not np.all(np.isfinite(differences)):
        return math.inf
    weights = (
        np.ones(X.shape[0]) if sample_weight is None else sample_weight.astype(float)
    )
    total = float(np.sum(weights))
    if total <= 0.0:
        return 0.0
    mean = float(weights @ differences) / total
    if everything:
        return abs(mean)
    spread = float(weights @ (differences - mean) ** 2) / total
    n_effective = total**2 / float(weights @ weights)
    return abs(mean) + 3.0 * math.sqrt(spread / n_effective)


def column_moments(X: Array, sample_weight: Array | None) -> Moments:
    """:class:`Moments` of the columns of ``X``, in one pass of chunks shared
    among threads, each copied to float64 (``_MOMENT_CHUNKS``)."""
    if X.shape[0] == 0:
        return moments_of(X, sample_weight)
    size = rows_within_share(X.nbytes, 8 * X.shape[1] + 8, *_MOMENT_CHUNKS)

    def block(_: None, rows: slice) -> Moments:
        weights = None if sample_weight is None else sample_weight[rows]
        return moments_of(X[rows], weights)

    return reduce_chunks(
        lambda: None, block, list(_chunks(X.shape[0], size)), operator.add
    )


def _sum_blocks(
    n_samples: int,
    size: int,
    block: Callable[[slice], SufficientStatistics],
    n_workers: int | None = None,
) -> SufficientStatistics:
    """The sum of ``block(rows)`` over chunks of rows, shared among threads
    (``n_workers``; None: all)."""
    return reduce_chunks(
        lambda: None,
        lambda _, rows: block(rows),
        list(_chunks(n_samples, size)),
        operator.add,
        n_workers=n_workers,
    )


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
    exact: bool = False,
) -> SufficientStatistics:
    """One E-step over all rows, returned as additive statistics.

    The expanded form takes the statistics about the mixture's mean; the
    exact form (``exact=True``, or when the expansion would lose digits)
    takes them about the current means, reusing the per-component
    differences for the M-step's sums while still in cache. Either way they
    depend only on ``params`` and the rows, so statistics of row blocks add.
    """
    expansion = None
    if not exact:
        kernels = _kernels.for_parameters(X.dtype)
        expansion = _working_expansion(X.dtype, params, strategy, kernels=kernels)
    if expansion is not None:
        return _expanded_e_step(X, sample_weight, expansion, strategy, chunk_size)
    n_components, n_features = params.means.shape
    size = chunk_size or chunk_rows(n_components, n_features, X.shape[0])
    shift = params.means
    work = X.dtype
    if work != np.float64 and not _sums_hold(work, params, strategy, about_means=True):
        work = np.dtype(np.float64)
    floor = _min_log_resp(work)

    def block(rows: slice) -> SufficientStatistics:
        Xc = X[rows]
        diffs = _diffs(Xc.astype(work, copy=False), params.means)
        wlp = _weighted_log_prob_from_diffs(diffs, params, strategy)
        log_norm = _logsumexp_rows(wlp)
        with np.errstate(under="ignore"):
            resp = np.exp(np.maximum(wlp - log_norm[:, None], floor))
        weights = None if sample_weight is None else sample_weight[rows]
        return block_statistics(
            Xc, diffs, resp, weights, shift, strategy, log_prob_norm=log_norm
        )

    workers = _exact_workers(size, shift.shape, strategy, work.itemsize)
    return _sum_blocks(X.shape[0], size, block, workers)


def resp_statistics(
    X: Array,
    sample_weight: Array | None,
    resp_of_rows: Callable[[slice], Array],
    shift: Array,
    strategy: CovarianceStrategy,
    chunk_size: int | None = None,
) -> SufficientStatistics:
    """Statistics of given responsibilities (used by the initialisation).

    Summed in float64 whatever the rows' dtype (see :func:`label_statistics`).
    """
    n_components, n_features = shift.shape
    size = chunk_size or chunk_rows(n_components, n_features, X.shape[0])
    shift = shift.astype(X.dtype).astype(np.float64)

    def block(rows: slice) -> SufficientStatistics:
        Xc = X[rows]
        diffs = _diffs(Xc.astype(np.float64, copy=False), shift)
        weights = None if sample_weight is None else sample_weight[rows]
        return block_statistics(
            Xc, diffs, resp_of_rows(rows).astype(np.float64), weights, shift, strategy
        )

    workers = _exact_workers(size, shift.shape, strategy, np.float64().itemsize)
    return _sum_blocks(X.shape[0], size, block, workers)


def label_statistics(
    X: Array,
    sample_weight: Array | None,
    labels: Array | Callable[[slice], Array],
    shift: Array,
    strategy: CovarianceStrategy,
    chunk_size: int | None = None,
    n_workers: int | None = None,
) -> SufficientStatistics:
    """Statistics of hard labels (-1: no component), about ``shift`` (K x D).

    ``labels`` holds one label per row, or is a function giving the labels
    of a slice of rows (so that they need not all exist at once), called
    for chunks of ``chunk_size`` rows if given, by ``n_workers`` threads
    (None: all).

    Each component's rows of a chunk are gathered in their order, so the
    sums are those of the rows sorted by label (stably), without a sorted
    copy of the chunk: the temporaries are those of one component's rows.

    Summed in float64 whatever the rows' dtype, as the compiled kernels do,
    so that a float32 fit starts where the float64 fit of the same rows
    does: summed in float32, the start of three components of 30,000 rows
    in 5 correlated features (condition 1e7) was 8% off float64's in its
    thinnest direction, and at condition 1e9 lost it (the fits then ended
    1.9e-3 apart in lower bound).
    """
    labels_of_rows = labels if callable(labels) else labels.__getitem__
    n_components, n_features = shift.shape
    size = chunk_size or chunk_rows(1, n_features, X.shape[0])
    shift = shift.astype(X.dtype).astype(np.float64)
    scatter_shape = strategy.scatter_shape(n_components, n_features)
    kernels = _label_sums_kernels(X, n_components, strategy)
    pairs = tuple(
        np.ascontiguousarray(index, dtype=np.intp)
        for index in strategy.quadratic_pairs(n_features)
    )

    def block(rows: slice) -> SufficientStatistics:
        chunk_labels = labels_of_rows(rows)
        wc = None if sample_weight is None else sample_weight[rows]
        weight_sum = float(
            rows.stop - rows.start
            if sample_weight is None
            else np.sum(sample_weight[rows], dtype=np.float64)
        )
        if kernels is not None:
            return _compiled_label_statistics(
                kernels, X, rows, chunk_labels, wc, shift, pairs, strategy, weight_sum
            )
        Xc = X[rows]
        resp_sum = np.zeros(n_components)
        diff_sum = np.zeros((n_components, n_features))
        scatter = np.zeros(scatter_shape)
        for k in range(n_components):
            members = np.flatnonzero(chunk_labels == k)
            if members.size == 0:
                continue
            # np.take, not Xc[members]: faster for narrow rows (the gathers
            # of a 32768-row window took 0.96 -> 0.41 ms in case (b) of
            # benchmarks/bench_em.py, 0.36 -> 0.09 ms in case (e)).
            diffs = np.take(Xc, members, axis=0).astype(np.float64, copy=False)
            diffs -= shift[k]
            if wc is None:
                weights = np.ones(members.size)
            else:
                weights = np.take(wc, members).astype(np.float64, copy=False)
            resp_sum[k] = np.sum(weights, dtype=np.float64)
            diff_sum[k] = weights @ diffs
            scatter[k] = strategy.scatter(diffs[None], weights[None])[0]
        return SufficientStatistics(
            shift, resp_sum, diff_sum, scatter, weight_sum, loglik_sum=0.0
        )

    return _sum_blocks(X.shape[0], size, block, n_workers)


def _label_sums_kernels(
    X: Array, n_components: int, strategy: CovarianceStrategy
) -> ModuleType | None:
    """The compiled kernels for :func:`label_statistics`, or None for NumPy:
    where the fit's E-steps use them, for at most ``_LABEL_SUMS_PAIRS``
    quadratic features."""
    n_features = X.shape[1]
    if strategy.n_quadratic(n_features) > _LABEL_SUMS_PAIRS:
        return None
    return _kernels.for_labels(X, n_components, strategy.n_expanded(n_features))


def _compiled_label_statistics(
    kernels: ModuleType,
    X: Array,
    rows: slice,
    labels: Array,
    sample_weight: Array | None,
    shift: Array,
    pairs: tuple[Array, ...],
    strategy: CovarianceStrategy,
    weight_sum: float,
) -> SufficientStatistics:
    """:func:`label_statistics` of one chunk by the compiled kernels
    (``label_sums``): the sums of the expanded E-step's features about each
    component's shift, split as the E-step's are."""
    n_components, n_features = shift.shape
    sums = np.zeros((n_components, strategy.n_expanded(n_features)))
    kernels.label_sums(
        _kernels.rows_for(X, rows, X.dtype),
        np.ascontiguousarray(labels, dtype=np.int32),
        np.empty(0)
        if sample_weight is None
        else np.ascontiguousarray(sample_weight, dtype=np.float64),
        np.ascontiguousarray(shift),
        *pairs,
        sums,
    )
    resp_sum, diff_sum, scatter = strategy.from_expanded(sums, n_features)
    return SufficientStatistics(
        shift, resp_sum, diff_sum, scatter, weight_sum, loglik_sum=0.0
    )


def m_step(
    stats: SufficientStatistics,
    strategy: CovarianceStrategy,
    reg_covar: float,
    variance_floor: Array,
    eps: float,
    kernels: ModuleType | None = None,
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
    kernels : module or None
        The compiled kernels (:func:`gaussmix._kernels.for_parameters`):
        full and tied covariances of a few features are then made in one
        compiled call (:func:`_compiled_m_step`), where no component needs
        re-seeding or healing.

    Returns
    -------
    params : Params
    counts : ndarray of shape (n_components,)
        The effective counts, ``10 * eps`` included, before normalisation.
    """
    if kernels is not None:
        made = _compiled_m_step(kernels, stats, strategy, reg_covar, eps)
        if made is not None:
            return made
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


def _compiled_m_step(
    kernels: ModuleType,
    stats: SufficientStatistics,
    strategy: CovarianceStrategy,
    reg_covar: float,
    eps: float,
) -> tuple[Params, Array] | None:
    """:func:`m_step` of full or tied covariances of at most
    ``_COMPILED_EXPANSION_FEATURES`` features in one compiled call
    (:func:`gaussmix._compiled.dense_m_step`), the same to rounding; None
    where a component must be re-seeded or its covariance healed (or an
    error raised), or for other covariances, which the NumPy path does.

    NumPy's M-step of case (a) of benchmarks/bench_em.py (3 components, 2
    features) took 35-45 us, its precision factors 17-20 of them, of an
    iteration of 0.5-1.1 ms; the call takes about 5.
    """
    n_components, n_features = stats.diff_sum.shape
    if not _compiled_parameters(strategy, n_features):
        return None
    shape = strategy.param_shape(n_components, n_features)
    means = np.empty((n_components, n_features))
    covariances = np.empty(shape)
    factors = np.empty(shape)
    weights = np.empty(n_components)
    square = (-1, n_features, n_features)
    status = kernels.dense_m_step(
        np.ascontiguousarray(stats.shift, np.float64),
        np.ascontiguousarray(stats.resp_sum, np.float64),
        np.ascontiguousarray(stats.diff_sum, np.float64),
        np.ascontiguousarray(stats.scatter, np.float64),
        float(stats.weight_sum),
        10.0 * eps,
        float(reg_covar),
        means,
        covariances.reshape(square),
        factors.reshape(square),
        weights,
    )
    if status != -1:
        return None
    return Params(weights, means, covariances, factors), stats.resp_sum + 10.0 * eps


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


EStep = Callable[[Params, bool], SufficientStatistics]


def em(
    step: EStep,
    params: Params,
    strategy: CovarianceStrategy,
    dtype: np.dtype,
    *,
    tol: float,
    max_iter: int,
    reg_covar: float,
    variance_floor: Array,
    lower_bound: float = -math.inf,
    callback: Callable[[int, Params, float], None] | None = None,
    expansion_gap: Callable[[Params], float] | None = None,
    exact: bool = False,
) -> EMResult:
    """Iterate E- and M-steps until the lower bound changes by less than ``tol``.

    ``step(params, exact)`` is one E-step over all the rows, wherever they
    live (:meth:`gaussmix._source.RowSource.e_step`); ``dtype`` is the
    data's. ``expansion_gap(params)`` measures how far the expanded E-step's
    lower bound is from the exact one (:meth:`RowSource.expansion_gap`);
    without it a float32 fit judges convergence with exact E-steps once a
    change falls within the bound on that gap. With ``exact`` every E-step
    is exact from the first.

    The lower bound recorded for an iteration is the mean log-likelihood of
    the E-step that started it (as in scikit-learn), so the returned
    parameters are one M-step newer than the returned lower bound.
    """
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps)
    lower_bounds: list[float] = []
    converged = False
    n_iter = 0
    # float32: the rounding bound at which the expansion was last measured
    # and found fine for tol (see below).
    trusted_noise = 0.0
    kernels = _kernels.for_parameters(dtype)
    # The E-steps' small work arrays are made once (_buffers_kept).
    with _buffers_kept():
        for n_iter in range(1, max_iter + 1):
            previous = lower_bound
            stats = step(params, exact)
            lower_bound = stats.mean_loglik
            if not math.isfinite(lower_bound):
                raise ValueError(
                    "The log-likelihood is not finite: the data's scale overflows "
                    "the computation. Scale the input data (for instance with "
                    "sklearn.preprocessing.StandardScaler) and fit again."
                )
            params, _ = m_step(stats, strategy, reg_covar, variance_floor, eps, kernels)
            # Not held through the next E-step (K x D x D scatter: 1 MiB of case
            # (d) of benchmarks/bench_em.py).
            del stats
            lower_bounds.append(lower_bound)
            change = lower_bound - previous
            logger.debug("iteration %d: lower bound %.10g", n_iter, lower_bound)
            if callback is not None:
                callback(n_iter, params, lower_bound)
            if abs(change) < tol:
                converged = True
                break
            if not exact and dtype != np.float64 and tol > 0:
                noise = _expansion_noise(dtype, params, strategy)
                if abs(change) < tol + noise and noise > _RENEWED_NOISE * trusted_noise:
                    # The change is within the bound on the expanded E-step's
                    # rounding (float32; in float64 that bound is below 1e-9 by
                    # construction). Measure that rounding: if it is a small
                    # share of tol, the expansion resolves the change and stays
                    # (measured again only if the bound grows); else convergence
                    # is judged with exact E-steps from then on.
                    gap = math.inf if expansion_gap is None else expansion_gap(params)
                    logger.debug("iteration %d: expansion off by %.3g", n_iter, gap)
                    if gap <= _TRUSTED_GAP * tol:
                        trusted_noise = noise
                    else:
                        exact = True
    return EMResult(params, lower_bound, lower_bounds, n_iter, converged)


def _expansion_noise(
    dtype: np.dtype, params: Params, strategy: CovarianceStrategy
) -> float:
    """Relative rounding the expanded E-step may add: ``eps * expansion_error``.

    The centre is the mixture's mean, rounded to the data's dtype. The last
    value is kept (:class:`_NoiseMemo`): a float32 fit asks twice for the
    same parameters' (``em``'s convergence check, then the next E-step), and
    a source of several blocks once per block.
    """
    dtype = np.dtype(dtype)
    digest = _NoiseMemo.digest(params)
    kept = _noise_memo.get(dtype, digest, strategy)
    if kept is not None:
        return kept
    centre = (params.weights @ params.means).astype(dtype).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        error = strategy.expansion_error(
            params.means, params.precisions_cholesky, centre
        )
    noise = float(np.finfo(dtype).eps) * error
    _noise_memo.keep(dtype, digest, strategy, noise)
    return noise


class _NoiseMemo:
    """The last :func:`_expansion_noise`, with a digest of what it depends on.

    Compared by value (a SHA-1 digest of the arrays' bytes), not identity,
    so that parameters changed in place are not mistaken for the ones kept;
    one entry per dtype, each replaced whole, so that threads fitting at
    once at worst recompute, and float32 rows expanded in float64 (which ask
    for both dtypes' in turn) do not evict each other's. What it saves: 5.3
    ms per float32 iteration of case (d) of benchmarks/bench_em.py (32
    spectral norms of 64 x 64 factors), against
    about 0.6 ms to digest. Copies, as kept before, held 1 MiB there (2% of
    the float32 input) through every E-step, and after the fit.
    """

    def __init__(self) -> None:
        self._entries: dict[np.dtype, tuple[str, tuple[Any, ...], float]] = {}

    @staticmethod
    def digest(params: Params) -> tuple[Any, ...]:
        arrays = params.weights, params.means, params.precisions_cholesky
        return tuple(
            (
                a.shape,
                a.dtype.str,
                hashlib.sha1(
                    np.ascontiguousarray(a).data, usedforsecurity=False
                ).digest(),
            )
            for a in arrays
        )

    def get(
        self, dtype: np.dtype, digest: tuple[Any, ...], strategy: CovarianceStrategy
    ) -> float | None:
        entry = self._entries.get(dtype)
        if entry is None or entry[:2] != (strategy.name, digest):
            return None
        return entry[2]

    def keep(
        self,
        dtype: np.dtype,
        digest: tuple[Any, ...],
        strategy: CovarianceStrategy,
        noise: float,
    ) -> None:
        self._entries[dtype] = (strategy.name, digest, noise)


_noise_memo = _NoiseMemo()
