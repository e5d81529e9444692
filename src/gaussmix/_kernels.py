"""Optional compiled kernels for the expanded E-step (and the k-means start).

With numba installed (``pip install 'gaussmix[fast]'``), large E-steps run
each chunk through one compiled call (:func:`gaussmix._compiled.expanded_chunk`)
instead of some twenty NumPy calls: the features, both matrix products
(BLAS's ``gemm``, called from the compiled code), the normalisation and the
log-likelihood, with the GIL released throughout, so that worker threads
never wait on each other. The features and the products are NumPy's; the
responsibilities differ by an eps or two (the kernels' own ``exp``) and
the log-likelihood is summed in another order, so whole fits agree to
rounding (about 1e-13 relative in float64, tested), not bit for bit.

Compiling costs about 5 s per dtype the first time, each dtype on its
first use (numba caches the machine code on disk; later processes load it
in about 0.4 s), so the kernels are used only for E-steps of at least
``_MIN_VALUES`` feature values, where an iteration takes tens of
milliseconds or more. That cost is the threshold's only reason: a caller
who pays it up front (``warm_up(every_size=True)``, or the environment
variable ``GAUSSMIX_NUMBA=always``) has every expanded E-step run by the
kernels, which are faster than NumPy's calls at any size, and the
parameter steps of full and tied covariances too (:func:`for_parameters`;
case (a) of benchmarks/bench_em.py, 100,000 rows of 2 features: about
2.5x per iteration in float64). Set ``GAUSSMIX_NUMBA=0`` to keep to
NumPy.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType

import numpy as np

logger = logging.getLogger("gaussmix")

ENV_VAR = "GAUSSMIX_NUMBA"

# Feature values (rows x (features + components)) an E-step must have for
# the kernels to be used: 2**24 values are about 25 ms of NumPy work per
# iteration.
_MIN_VALUES = 2**24

# Whether the kernels run E-steps of every size: in the whole process (see
# warm_up), or within a block of one thread or task (see every_size).
_every_size = False
_every_size_here: ContextVar[bool] = ContextVar("gaussmix_every_size", default=False)

# Rows x fits of a call of many fits (a model selection) from which loading
# the kernels to run all their E-steps pays. GaussianMixtureIC over 24
# candidates (K = 1-6, four covariance types, one start each) of 2 features:
# 3,000 rows 1.32 s on NumPy against 0.95 + 0.37 to load the kernels; 10,000
# rows 1.91 s against 1.11 + 0.40; 30,000 rows 5.11 s against 2.37 + 0.48.
# About three times the break-even. Whole processes, alternated: 10,000 rows
# 2.03-2.07 s against 1.56-1.61, 30,000 rows 5.45-5.70 s against 2.88-2.92.
_MANY_FITS_ROWS = 200_000

_UNLOADED = object()
_module: object = _UNLOADED
# The dtypes the kernels work in, and those compiled (or loaded from numba's
# cache) and checked so far: each on its first use, so that a fit in one
# dtype compiles only its own (half the first compile).
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ready: set[np.dtype] = set()


def _load(dtype: np.dtype | None = None) -> ModuleType | None:
    """The compiled kernels, those of ``dtype`` (None: every dtype) compiled,
    or loaded from numba's cache, and checked on first call; None where
    numba is missing, switched off or failed."""
    global _module
    if _module is _UNLOADED:
        _module = None
        if _setting() == "0":
            logger.debug("%s=0: compiled kernels switched off", ENV_VAR)
        else:
            try:
                from . import _compiled
            except ImportError:  # numba is not installed
                pass
            else:
                _module = _compiled
    if not isinstance(_module, ModuleType):
        return None
    for wanted in _DTYPES if dtype is None else (np.dtype(dtype),):
        if wanted in _ready:
            continue
        try:
            _compile(_module, wanted)
        except Exception as error:  # numba's cache or compiler failed
            _module = None
            warnings.warn(
                f"gaussmix: numba could not compile its kernels ({error}); "
                f"using NumPy, with the same results. Set {ENV_VAR}=0 to "
                f"skip numba.",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        _ready.add(wanted)
    return _module


def _setting() -> str:
    return os.environ.get(ENV_VAR, "1").strip().lower()


def _for_every_size() -> bool:
    return _every_size or _every_size_here.get() or _setting() == "always"


def repays_loading(n_samples: int, n_fits: int) -> bool:
    """Whether ``n_fits`` fits of ``n_samples`` rows (a model selection)
    are enough work for loading the kernels to run all their E-steps
    (:func:`every_size`) to pay; decided by the call alone, so that the
    same call always runs the same way."""
    return n_samples * n_fits >= _MANY_FITS_ROWS


@contextmanager
def every_size(on: bool = True) -> Iterator[None]:
    """Within the block, in this thread or task only, the kernels run
    E-steps of every size (where ``on``; loaded on first use): for a call
    of many fits, where :func:`repays_loading`. What the block runs is then
    independent of what ran before it in the process."""
    token = _every_size_here.set(on or _every_size_here.get())
    try:
        yield
    finally:
        _every_size_here.reset(token)


@contextmanager
def switched_off() -> Iterator[None]:
    """Use NumPy only within the block (for side-by-side measurements)."""
    global _module
    saved = _module
    _module = None
    try:
        yield
    finally:
        _module = saved


def describe() -> str:
    """A line saying whether the kernels are used, and why not."""
    if _load() is not None:
        import numba

        if _for_every_size():
            return f"numba {numba.__version__}, on for E-steps of every size"
        return (
            f"numba {numba.__version__}, on for E-steps of >= "
            f"{_MIN_VALUES:,} feature values"
        )
    if _setting() == "0":
        return f"off ({ENV_VAR}=0)"
    return "off (numba is not installed: pip install 'gaussmix[fast]')"


def for_e_step(X: np.ndarray, n_values: int, dtype: np.dtype) -> ModuleType | None:
    """The compiled kernels for an E-step over ``X``, or None for NumPy.

    None where the E-step is small (``n_values`` feature values) and the
    kernels are not asked for at every size (:func:`warm_up`,
    :func:`every_size`, ``GAUSSMIX_NUMBA=always``), or where
    numba cannot take ``X`` as it is (non-native byte order, not a NumPy
    array). Rows of another dtype than the work arrays' ``dtype`` (float32
    rows expanded in float64) are cast chunk by chunk.
    """
    if n_values < _MIN_VALUES and not _for_every_size():
        return None
    if not isinstance(X, np.ndarray):
        return None
    if not X.dtype.isnative or dtype not in _DTYPES:
        return None
    if X.dtype != dtype and (X.dtype, dtype) != _DTYPES:  # (float32, float64)
        return None
    return _load(dtype)


def for_parameters(dtype: np.dtype) -> ModuleType | None:
    """The compiled kernels for the steps on a fit's parameters (the M-step
    and the expanded E-step's weights, of full and tied covariances), or
    None for NumPy: where the kernels are asked for at every size
    (:func:`warm_up`, :func:`every_size`, ``GAUSSMIX_NUMBA=always``) for a
    fit of rows of ``dtype``. Those steps take a fixed 0.1-0.2 ms per
    iteration on NumPy, nothing beside a large E-step, but about half an
    iteration of 100,000 rows of 2 features in the kernels."""
    dtype = np.dtype(dtype)
    if not _for_every_size() or dtype not in _DTYPES:
        return None
    return _load(dtype)


def for_labels(X: np.ndarray, n_components: int, n_expanded: int) -> ModuleType | None:
    """The compiled kernels for the k-means start over the rows of ``X``
    (labelling them by their nearest of ``n_components`` centres, summing
    the statistics of those labels), or None for scikit-learn's
    ``pairwise_distances_argmin`` and NumPy: where the fit's E-steps over
    ``X`` (``n_expanded`` features) use the kernels of its dtype, as
    :func:`for_e_step` decides."""
    n_values = X.shape[0] * (n_expanded + n_components)
    return for_e_step(X, n_values, X.dtype) if X.ndim == 2 else None


def rows_for(X: np.ndarray, rows: slice, dtype: np.dtype) -> np.ndarray:
    """``X[rows]`` as the kernels take it: C-contiguous and of ``dtype`` (a
    copy only where ``X`` is not) and read-only (a flag of this view only),
    so that one compiled variant per dtype serves every input,
    memory-mapped or not."""
    chunk = np.ascontiguousarray(X[rows], dtype=dtype)
    chunk.flags.writeable = False
    return chunk


def whole_rows(X: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``X`` as the kernels take it whole, a read-only view (see
    :func:`rows_for`), where that needs no copy: a C-contiguous NumPy
    array of ``dtype`` in native byte order. Else None (chunk by chunk)."""
    if not (
        isinstance(X, np.ndarray)
        and X.dtype == dtype
        and X.dtype.isnative
        and X.flags.c_contiguous
    ):
        return None
    view = X.view()
    view.flags.writeable = False
    return view


def warm_up(every_size: bool = False) -> bool:
    """Compile (or load from numba's cache) the kernels for float32 and float64.

    The first large fit in each dtype does this for its own; call it to
    take that cost (about 10 s for both the first time, 0.4 s from the
    cache) out of a timed or traced section. With ``every_size``, every
    expanded E-step of this process runs in the kernels from then on, not
    only those of at least ``_MIN_VALUES`` values: for many fits of data
    too small for one fit to repay the loading (the environment variable
    ``GAUSSMIX_NUMBA=always`` does the same, loading them on first use).
    Fits then agree with those on NumPy to rounding (1e-13 relative in
    float64), not bit for bit. Returns whether the kernels are available.
    """
    global _every_size
    loaded = _load() is not None
    if loaded and every_size:
        _every_size = True
    return loaded


def _compile(kernels: ModuleType, dtype: np.dtype) -> None:
    """Run every kernel once on tiny arrays of ``dtype``, each layout in use.

    So that a failure shows here, where NumPy can take over, and not in the
    middle of a fit; and check the results, BLAS's products among them.
    """
    rng = np.random.default_rng(0)
    # One chunk of a 1-D, 2-component mixture at 0 and 1, unit variances:
    # features (z**2, z, 1), log-densities up to a common constant.
    weights = np.array([[-0.5, 0.0, 0.0], [-0.5, 1.0, -0.5]])
    x = np.array([0.0, 2.0, 0.5])
    log_prob = weights @ np.stack([x * x, x, np.ones(3)])
    log_norm = np.logaddexp(log_prob[0], log_prob[1])
    resp_sums = np.exp(log_prob - log_norm).sum(axis=1)
    gemm, ints, _ = kernels.blas_gemm(dtype)
    a = rng.normal(size=(2, 3)).astype(dtype)
    b = rng.normal(size=(3, 5)).astype(dtype)
    product = np.zeros((2, 5), dtype=dtype)
    kernels.matmul(gemm, ints, a, b, product)
    if not np.allclose(product, a @ b, rtol=1e-4, atol=0.0):
        raise RuntimeError("BLAS's gemm, called from the kernels, gave a wrong product")
    # Rows go to the kernels read-only (rows_for).
    X = x.astype(dtype)[:, None]
    X.flags.writeable = False
    work = np.zeros((8, 4), dtype=dtype)
    work[2] = 1.0  # the features' constant row
    sums = np.zeros((3, 2))
    pairs = (np.zeros(1, np.intp), np.zeros(1, np.intp))
    # Alone, as the log-densities of predict and score use them.
    kernels.centre_transposed(X, np.zeros(1, dtype), work, 1)
    # Wide rows, through the tiles transposed in registers.
    wide = np.arange(90, dtype=dtype).reshape(10, 9)
    wide.flags.writeable = False
    transposed = np.zeros((9, 10), dtype)
    kernels.centre_transposed(wide, np.ones(9, dtype), transposed, 0)
    kernels.quadratic(*pairs, work[:3], 1, 3)

    def chunk_work(sums: np.ndarray) -> tuple:
        """expanded_chunk's arguments from the centre on."""
        return (
            np.zeros(1, dtype), *pairs, 1, weights.astype(dtype), work[:3],
            work[3:5], work[5], work[6], work[7], dtype.type(-80.0),
            np.zeros((3, 2), dtype), sums, np.zeros(2, np.intp), gemm, ints,
        )  # fmt: skip

    no_weights = np.empty(0, dtype)
    loglik, worst, row = kernels.expanded_chunk(X, no_weights, 7, *chunk_work(sums))
    # The same rows whole, in chunks of 2 and 1 rows, in one call.
    rows_sums = np.zeros((3, 2))
    rows_result = kernels.expanded_rows(X, no_weights, 0, 3, 2, *chunk_work(rows_sums))
    # The k-means start's labels: 0.5 is as near 0 as 1 (the first wins).
    labels = np.empty(3, np.int32)
    kernels.nearest_centres(X, np.array([[0.0], [1.0]]), labels)
    # Their statistics, the last row unlabelled: phi = (z^2, z, 1) about
    # each centre.
    label_sums = np.zeros((2, 3))
    kernels.label_sums(
        X, np.array([0, 1, -1], np.int32), np.empty(0), np.array([[0.0], [1.0]]),
        *pairs, label_sums,
    )  # fmt: skip
    # The parameter steps (float64 whatever the rows): two components at 0
    # and 1 of variance 4, from sums about 0 of two rows' weight each.
    means = np.empty((2, 1))
    covariances = np.empty((2, 1, 1))
    factors = np.empty((2, 1, 1))
    mixing = np.empty(2)
    status = kernels.dense_m_step(
        np.zeros((2, 1)), np.array([2.0, 2.0]), np.array([[0.0], [2.0]]),
        np.array([[[8.0]], [[10.0]]]), 4.0, 0.0, 0.0,
        means, covariances, factors, mixing,
    )  # fmt: skip
    # Their expansion about 0.5: (-P/2, P a, log w + log L - log(2 pi)/2 -
    # (a L)^2/2) with P = 1/4, a = -1/2 and 1/2.
    expanded = np.empty((2, 3))
    conditioning, bound = kernels.dense_expansion(
        mixing, means, covariances, factors, np.array([0.5]), np.array([0.5]),
        expanded,
    )  # fmt: skip
    constant = math.log(0.25) - 0.5 * math.log(2.0 * math.pi) - 0.5 * 0.25**2
    if not (
        status == -1
        and means.tolist() == [[0.0], [1.0]]
        and covariances.ravel().tolist() == [4.0, 4.0]
        and factors.ravel().tolist() == [0.5, 0.5]
        and mixing.tolist() == [0.5, 0.5]
        and np.allclose(expanded[:, :2], [[-0.125, -0.125], [-0.125, 0.125]])
        and np.allclose(expanded[:, 2], constant)
        and np.allclose([conditioning, bound], [(4.0 + 0.25) * 0.25, 0.25 * 0.25])
    ):
        raise RuntimeError("the compiled parameter steps gave a wrong result")
    if not (
        np.allclose(sums[2], resp_sums, rtol=1e-5)
        and np.allclose(rows_sums, sums, rtol=1e-5)
        and np.isclose(rows_result[0], loglik)
        and rows_result[1:] == (worst, row - 7)
        and np.allclose([loglik, worst], [log_norm.sum(), log_norm.min()])
        and row == 7 + log_norm.argmin()
        and np.array_equal(transposed, wide.T - 1)
        and labels.tolist() == [0, 1, 0]
        and label_sums.tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    ):
        raise RuntimeError("the compiled kernels gave a wrong result")
