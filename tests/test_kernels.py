"""The optional compiled kernels (numba) give NumPy's results: the features
bit for bit, the responsibilities to a few units in the last place (the
kernels' own exp)."""

import dataclasses
import math
import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture, _em, _kernels
from gaussmix._covariance import get_covariance
from gaussmix._errors import DegenerateCovarianceError, DegenerateDataWarning
from helpers import COVARIANCE_TYPES, start_params

DTYPES = (np.float64, np.float32)


@pytest.fixture
def compiled():
    """The compiled kernels, skipping where numba is not installed."""
    pytest.importorskip("numba")
    kernels = _kernels._load()
    if kernels is None:
        pytest.skip(f"{_kernels.ENV_VAR}=0")
    return kernels


@pytest.fixture
def always(monkeypatch, compiled):
    """Use the kernels for E-steps of any size."""
    monkeypatch.setattr(_kernels, "_MIN_VALUES", 0)
    return compiled


@pytest.fixture
def never(monkeypatch):
    monkeypatch.setattr(_kernels, "_module", None)


def _log_probs(dtype, n_components=7, n=300, seed=0):
    """Log-densities as the E-step sees them, with the awkward cases in."""
    rng = np.random.default_rng(seed)
    log_prob = rng.normal(scale=300.0, size=(n_components, n)).astype(dtype)
    log_prob[:, 5] = -np.inf  # no component explains the row
    log_prob[2, 6] = np.nan
    log_prob[0, 7] = np.inf
    log_prob[:, 8] = -1e30  # equal, far below
    log_prob[3, 9] = log_prob[:, 9].max() + 2000.0  # the others underflow
    return log_prob


# The kernels' exp: its relative error, in units of the dtype's eps.
EXP_ERROR = {np.float64: 1.5, np.float32: 1.0}


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_is_within_its_error_bound_of_the_c_library(compiled, dtype):
    """Over its whole domain [log(tiny), 0], its edges, the boundaries of
    its range reduction (odd multiples of log(2)/2), and NaN. The reference
    is the C library's exp (math.exp) in float64, rounded for float32."""
    floor = _em._min_log_resp(np.dtype(dtype))
    rng = np.random.default_rng(7)
    halves = np.log(2.0) / 2 * np.arange(1, 2 * int(-floor / np.log(2)), 2)
    x = np.concatenate(
        [
            np.linspace(floor, 0.0, 200_001),
            -rng.exponential(3.0, 100_000),
            -halves,
            np.nextafter(-halves, 0.0),
            np.nextafter(-halves, -1.0),
            [0.0, -0.0, floor, -1e-300, -np.finfo(dtype).tiny],
        ]
    )
    x = x[x >= floor].astype(dtype)
    out = np.empty_like(x)
    compiled.exp_array(x, out)
    reference = np.array([math.exp(v) for v in x.astype(np.float64)])
    error = np.abs(out.astype(np.float64) - reference) / reference
    assert error.max() <= EXP_ERROR[dtype] * np.finfo(dtype).eps
    assert np.all(out[x == 0] == 1.0)  # exactly, as NumPy's
    nan = np.full(3, np.nan, dtype=dtype)
    compiled.exp_array(nan.copy(), nan)
    assert np.isnan(nan).all()


# The kernels' log: its relative error, in units of the dtype's eps.
LOG_ERROR = {np.float64: 2.0, np.float32: 1.0}


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_is_within_its_error_bound_of_the_c_library(compiled, dtype):
    """Over [1, 64] (the E-step takes it of sums in [1, K]), the boundaries
    of its range reduction (powers of two and their multiples of sqrt(2)),
    positive normal numbers of every exponent, and NaN. The reference is the
    C library's log (math.log) in float64."""
    rng = np.random.default_rng(8)
    info = np.finfo(dtype)
    powers = 2.0 ** np.arange(info.minexp, info.maxexp - 1, dtype=np.float64)
    edges = np.concatenate([powers, powers * np.sqrt(2.0)]).astype(dtype)
    x = np.concatenate(
        [
            np.linspace(1.0, 64.0, 300_001).astype(dtype),
            edges,
            np.nextafter(edges, dtype(0)),
            np.nextafter(edges, dtype(np.inf)),
            np.exp(rng.uniform(np.log(info.tiny), np.log(info.max), 100_000)),
        ]
    ).astype(dtype)
    x = x[(x >= info.tiny) & np.isfinite(x) & (x != 1.0)]
    out = np.empty_like(x)
    compiled.log_array(x, out)
    reference = np.array([math.log(v) for v in x.astype(np.float64)])
    error = np.abs(out.astype(np.float64) - reference) / np.abs(reference)
    assert error.max() <= LOG_ERROR[dtype] * info.eps
    special = np.array([1.0, np.nan], dtype=dtype)
    compiled.log_array(special.copy(), special)
    assert special[0] == 0.0 and np.isnan(special[1])  # log(1) exactly


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_likelihoods_and_the_worst_row_as_numpy_has_them(compiled, dtype):
    """log(total) + top per row, their (weighted) sum, and the worst row as
    np.argmin picks it: ties, NaN, zero weights, no positive weight, and
    lengths that are not multiples of the eight rows summed at a time."""
    rng = np.random.default_rng(9)
    eps = float(np.finfo(dtype).eps)

    def numpy_way(total, top, weights):
        values = (np.log(total) + top).astype(dtype)
        if weights is None:
            return values.sum(dtype=np.float64), values
        loglik = float(np.dot(weights.astype(np.float64), values.astype(np.float64)))
        return loglik, np.where(weights > 0, values, np.inf)

    for n in (1, 7, 8, 9, 100, 1003):
        total = rng.uniform(1.0, 5.0, n).astype(dtype)
        top = rng.normal(scale=10.0, size=n).astype(dtype)
        top[n // 2] = top[n // 3] = -50.0  # a tie for the worst
        total[n // 2] = total[n // 3] = 2.0
        cases = [(total, top, None)]
        weights = rng.uniform(0.0, 2.0, n).astype(dtype)
        weights[n // 3] = 0.0  # the worst's tie-mate does not count
        cases.append((total, top, weights))
        cases.append((total, top, np.zeros(n, dtype)))
        with_nan = total.copy()
        with_nan[n - 1] = np.nan
        cases.append((with_nan, top, None))
        cases.append((with_nan, top, np.where(np.arange(n) == n - 1, 0, weights)))
        for total_in, top_in, w in cases:
            loglik, candidates = numpy_way(total_in, top_in, w)
            work = total_in.copy()
            empty = np.empty(0, dtype)
            ours = compiled.log_likelihoods(work, top_in, empty if w is None else w, n)
            row = int(np.argmin(candidates))
            assert ours[2] == row
            if np.isnan(candidates[row]):
                assert np.isnan(ours[1])
            else:
                assert ours[1] == pytest.approx(candidates[row], rel=4 * eps)
            if np.isnan(loglik):
                assert np.isnan(ours[0])
            else:
                scale = np.abs(np.log(total_in) + top_in).sum()
                assert (
                    abs(ours[0] - loglik)
                    <= (LOG_ERROR[dtype] + 2 + n * 1e-16 / eps) * eps * scale
                )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [300, 257, 1])
def test_normalise_agrees_with_numpy(compiled, dtype, n):
    """Responsibilities and log p(x), over all or the first n columns of
    the buffers (the last, shorter chunk), with NaN, infinities and
    underflowing rows: the same NaN, exact ones where NumPy's are exact, and
    within a few eps elsewhere."""
    log_prob = _log_probs(dtype)
    expansion = _em._Expansion(
        np.zeros((7, 3), dtype), np.zeros(1, dtype), np.zeros(1), 1, ([0], [0])
    )
    buffers = _em._ChunkBuffers(expansion, 1, 300)
    buffers.log_prob[...] = log_prob
    with np.errstate(all="ignore"):
        log_norm = _em._normalise(buffers.log_prob[:, :n], buffers).copy()
    resp = buffers.log_prob[:, :n].copy()
    # The kernel over the whole work arrays, the first n columns in use.
    resp_k = log_prob.copy()
    top, total, inverse = np.empty((3, 300), dtype)
    compiled.normalise(resp_k, n, top, total, inverse, buffers.floor[0])
    resp_k = resp_k[:, :n]
    with np.errstate(all="ignore"):
        log_norm_k = np.log(total[:n]) + top[:n]
    assert resp.dtype == resp_k.dtype == log_norm_k.dtype == dtype
    eps = np.finfo(dtype).eps
    # Each responsibility: its exp, the sum of K of them, one division.
    np.testing.assert_allclose(resp_k, resp, rtol=(EXP_ERROR[dtype] + 3) * eps, atol=0)
    np.testing.assert_allclose(log_norm_k, log_norm, rtol=4 * eps, atol=4 * eps)
    assert np.array_equal(np.isnan(resp_k), np.isnan(resp))
    assert np.array_equal(resp_k == 1.0, resp == 1.0)
    if n > 9:  # the awkward rows were there, and came out as they should
        assert np.isnan(resp_k[:, 5]).all() and np.isnan(log_norm_k[5])
        assert resp_k[3, 9] == 1.0 and np.all(resp_k[:, 9].sum() == 1.0)
        np.testing.assert_allclose(resp_k[:, 8], 1 / 7, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_features_are_numpy_bit_for_bit(compiled, dtype, covariance_type):
    """phi and W @ phi, for a whole chunk and a shorter last one."""
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(250, 5)) * [1, 3, 10, 0.5, 2] + 3.0).astype(dtype)
    strategy = get_covariance(covariance_type)
    gm = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    params = _em.Params(
        gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_
    )
    expansion = _em._expansion(np.dtype(dtype), params, strategy)
    assert expansion is not None
    for rows in (slice(0, 104), slice(200, 250)):
        out = []
        for kernels in (None, compiled):
            buffers = _em._ChunkBuffers(expansion, 5, 104, kernels)
            phi, log_prob = _em._expanded_log_prob(
                X, rows, expansion, strategy, buffers
            )
            out.append((phi.copy(), log_prob.copy()))
        (phi, log_prob), (phi_k, log_prob_k) = out
        assert phi_k.dtype == phi.dtype == dtype
        np.testing.assert_array_equal(phi_k, phi)
        np.testing.assert_array_equal(log_prob_k, log_prob)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [*range(1, 10), 12, 16, 17, 35])
def test_the_transposing_copy_for_every_width(compiled, dtype, n_features):
    """The centred rows, transposed into their rows of ``phi``, bitwise as
    NumPy has them, for the widths with a loop of their own (2-7) and the
    tiled loop (the others: whole tiles of 4 float64 or 8 float32 features,
    and features left over), a chunk whose length is not a multiple of the
    loops' blocks or tiles, and the rest of ``phi`` untouched."""
    rng = np.random.default_rng(n_features)
    n, width, z_row = 201, 208, 3
    X = (rng.normal(size=(n, n_features)) * 10.0 + 7.0).astype(dtype)
    X.flags.writeable = False
    centre = rng.normal(size=n_features).astype(dtype)
    phi = np.full((z_row + n_features + 2, width), -1.0, dtype=dtype)
    compiled.centre_transposed(X, centre, phi, z_row)
    expected = np.full_like(phi, -1.0)
    np.subtract(X.T, centre[:, None], out=expected[z_row : z_row + n_features, :n])
    np.testing.assert_array_equal(phi, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 2, 5, 17])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_nearest_centres_as_exact_distances_pick_them(
    compiled, dtype, n_features, offset
):
    """The k-means start's labels: the argmin of the exact squared distances
    (in float64, from the rows as stored), over more rows than one block,
    the first of equally near centres; far from the origin too, where the
    expansion |x|^2 - 2 x.c + |c|^2 would lose the digits that tell the
    centres apart."""
    rng = np.random.default_rng(n_features)
    n, k = 700, 6
    X = (rng.normal(size=(n, n_features)) + offset).astype(dtype)
    centres = X[rng.choice(n, k, replace=False)].astype(np.float64)
    centres[3] = centres[1]  # a tie: 1 is picked, never 3
    X.flags.writeable = False
    labels = np.full(n, -7, dtype=np.int32)
    compiled.nearest_centres(X, centres, labels)
    exact = ((X.astype(np.float64)[:, None, :] - centres[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(labels, exact.argmin(axis=1))
    assert 3 not in labels and np.count_nonzero(labels == 1) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_start_labels_rows_as_scikit_learn_does(monkeypatch, compiled, dtype):
    """Every row labelled by the kernels (the fit's E-steps would use them)
    or by scikit-learn's pairwise_distances_argmin: the same labels."""
    from gaussmix import _init

    rng = np.random.default_rng(3)
    X = (rng.normal(size=(20_000, 3)) * [1.0, 2.0, 3.0] + 4.0).astype(dtype)
    centres = X[:5].astype(np.float64)
    strategy = get_covariance("full")
    monkeypatch.setattr(_kernels, "_MIN_VALUES", 0)
    by_kernels = _init.nearest(X, centres, strategy)
    monkeypatch.setattr(_kernels, "_MIN_VALUES", 2**62)
    by_sklearn = _init.nearest(X, centres, strategy)
    np.testing.assert_array_equal(by_kernels, by_sklearn)
    assert len(np.unique(by_kernels)) == 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_label_statistics_agree_with_numpy(
    monkeypatch, compiled, dtype, covariance_type, weighted
):
    """The start's statistics of hard labels (some rows unlabelled, one
    component empty) summed by the kernels, against NumPy's per-component
    products: float64 to rounding; float32 closer to float64's sums of the
    same rows than NumPy's, whose differences and products are float32."""
    rng = np.random.default_rng(11)
    n, n_features, n_components = 3000, 3, 5
    X = (rng.normal(size=(n, n_features)) * [1.0, 3.0, 0.5] + 20.0).astype(dtype)
    labels = rng.integers(-1, n_components - 1, size=n).astype(np.int32)
    weights = rng.uniform(0.0, 2.0, size=n) if weighted else None
    shift = rng.normal(size=(n_components, n_features)) + 20.0
    strategy = get_covariance(covariance_type)

    def statistics(rows, kernels):
        monkeypatch.setattr(_kernels, "_MIN_VALUES", 0 if kernels else 2**62)
        # About the shift as the rows' dtype holds it (as label_statistics
        # takes it), so that float64 sums of the same rows compare.
        about = shift.astype(dtype).astype(np.float64)
        return _em.label_statistics(
            rows, weights, labels, about, strategy, chunk_size=1000
        )

    by_kernels = statistics(X, True)
    by_numpy = statistics(X, False)
    exact = statistics(X.astype(np.float64), False)
    assert by_kernels.resp_sum[-1] == 0.0
    for name in ("resp_sum", "diff_sum", "scatter"):
        got, numpy_, reference = (
            getattr(s, name) for s in (by_kernels, by_numpy, exact)
        )
        scale = np.max(np.abs(reference))
        if dtype == np.float64:
            np.testing.assert_allclose(got, numpy_, rtol=0, atol=1e-12 * scale)
        else:
            assert np.max(np.abs(got - reference)) <= 1e-12 * scale
            assert np.max(np.abs(numpy_ - reference)) <= 1e-5 * scale
    assert by_kernels.weight_sum == by_numpy.weight_sum
    np.testing.assert_array_equal(by_kernels.shift, by_numpy.shift)


def test_label_statistics_refuse_a_label_out_of_range(compiled):
    X = np.zeros((4, 2))
    X.flags.writeable = False
    pairs = (np.zeros(1, np.intp), np.zeros(1, np.intp))
    for wrong in (2, -2):
        with pytest.raises(ValueError, match="out of range"):
            compiled.label_sums(
                X, np.array([0, wrong, 1, -1], np.int32), np.empty(0),
                np.zeros((2, 2)), *pairs, np.zeros((2, 4)),
            )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (40, 300, 17), (129, 65, 2)])
def test_blas_products_called_from_the_kernels(compiled, dtype, shape):
    """The kernels' own call of BLAS's gemm against NumPy's matmul."""
    m, k, n = shape
    rng = np.random.default_rng(5)
    a = rng.normal(size=(m, k)).astype(dtype)
    b = rng.normal(size=(k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    gemm, ints, _ = compiled.blas_gemm(np.dtype(dtype))
    compiled.matmul(gemm, ints, a, b, out)
    # Each entry within k roundings of the exact product, norm-wise.
    scale = np.abs(a) @ np.abs(b)
    assert np.all(np.abs(out - a @ b) <= 2 * k * np.finfo(dtype).eps * scale)


def test_blas_from_scipy_where_numpy_carries_none(monkeypatch, compiled):
    """A NumPy built against another BLAS: SciPy's gemm (32-bit integers)."""
    gemm, ints, source = compiled.blas_gemm(np.dtype(np.float64))
    assert gemm and (source, ints.dtype) in (("numpy", np.int64), ("scipy", np.int32))
    compiled.blas_gemm.cache_clear()
    monkeypatch.setattr(compiled, "_NUMPY_GEMM", {"s": "absent", "d": "absent"})
    try:
        gemm, ints, source = compiled.blas_gemm(np.dtype(np.float64))
        assert (source, ints.dtype) == ("scipy", np.int32)
        a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
        out = np.zeros((2, 4))
        compiled.matmul(gemm, ints, a, b, out)
        np.testing.assert_array_equal(out, a @ b)  # small integers: exact
    finally:
        compiled.blas_gemm.cache_clear()


def _chunk_statistics(X, weights, expansion, kernels, rows, width, blocks):
    strategy = get_covariance("full")
    buffers = _em._ChunkBuffers(expansion, X.shape[1], width, kernels)
    buffers.log_prob_block, buffers.sums_block = blocks
    if kernels is not None:
        buffers.blocks[:] = blocks
    with np.errstate(under="ignore"):
        return _em._expanded_chunk_statistics(
            X,
            weights,
            expansion,
            strategy,
            buffers,
            rows,
            _em._expanded_sums(expansion),
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("blocks", [(0, 0), (256, 904)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_a_chunk_agrees_with_numpy(compiled, dtype, weighted, blocks, order):
    """One call of the compiled chunk against the NumPy path's twenty: the
    statistics, the log-likelihood and the worst-explained row, for a chunk
    shorter than its work arrays, its products in one block or several
    (BLAS called with leading dimensions and offsets), weights with zeros,
    and data in either memory order."""
    rng = np.random.default_rng(6)
    n_rows = 6000
    X = rng.normal(size=(n_rows, 4)) * [1.0, 2.0, 0.5, 3.0]
    X += 5.0 * rng.integers(3, size=(n_rows, 1))
    X = np.asarray(X, dtype=dtype, order=order)
    params = start_params(X.astype(np.float64), 3, "full", seed=1)
    gm = GaussianMixture(3, max_iter=1, **params)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    expansion = _em._expansion(
        np.dtype(dtype),
        _em.Params(gm.weights_, gm.means_, gm.covariances_, gm.precisions_cholesky_),
        get_covariance("full"),
    )
    assert expansion is not None
    rows = slice(1500, 3999)  # 2499 rows in work arrays of 2504
    weights = None
    if weighted:
        weights = rng.uniform(0.0, 2.0, n_rows).astype(dtype)
        weights[rng.choice(n_rows, 500, replace=False)] = 0.0
        # The worst-explained row does not count where its weight is zero.
        unweighted = _chunk_statistics(X, None, expansion, None, rows, 2504, blocks)
        weights[unweighted.worst[1]] = 0.0
    numpy_only, ours = (
        _chunk_statistics(X, weights, expansion, kernels, rows, 2504, blocks)
        for kernels in (None, compiled)
    )
    eps = float(np.finfo(dtype).eps)
    # The responsibilities differ by (EXP_ERROR + 3) eps (the exp); the
    # products are the same BLAS's, in the same blocks.
    atol = 2 * (EXP_ERROR[dtype] + 3) * eps * np.abs(numpy_only.sums).max()
    np.testing.assert_allclose(ours.sums, numpy_only.sums, rtol=0, atol=atol)
    # log p(x) per row within 4 eps (test_normalise_agrees_with_numpy),
    # summed in another order: a sequential sum of n terms is within n eps
    # of the whole (every term has the same sign here).
    n = rows.stop - rows.start
    bound = (4 * eps + n * np.finfo(np.float64).eps) * abs(numpy_only.loglik_sum)
    assert abs(ours.loglik_sum - numpy_only.loglik_sum) <= bound
    assert ours.worst[1] == numpy_only.worst[1]
    assert ours.worst[0] == pytest.approx(numpy_only.worst[0], rel=4 * eps)
    assert rows.start <= ours.worst[1] < rows.stop
    if weighted:
        assert weights[ours.worst[1]] > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_rows", [700, 5000, 5001])
def test_a_task_in_one_call_equals_a_call_per_chunk_bit_for_bit(
    compiled, dtype, weighted, n_rows
):
    """``expanded_rows`` (a worker's task of chunks in one call) against
    ``expanded_chunk`` once per chunk, summed as the E-step sums them: the
    statistics, the log-likelihood and the worst row, exactly. A last chunk
    shorter than the others, a task starting mid-data, and weights with a
    whole chunk of zeros (its worst row at infinity: not taken)."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(n_rows, 3)) * [1.0, 2.0, 0.5]
    X += 4.0 * rng.integers(3, size=(n_rows, 1))
    X = X.astype(dtype)
    params = start_params(X.astype(np.float64), 3, "full", seed=1)
    strategy = get_covariance("full")
    params = _em.Params(
        params["weights_init"],
        params["means_init"],
        np.linalg.inv(params["precisions_init"]),
        np.linalg.cholesky(params["precisions_init"]),
    )
    expansion = _em._expansion(np.dtype(dtype), params, strategy)
    assert expansion is not None
    weights = None
    if weighted:
        weights = rng.uniform(0.0, 2.0, n_rows).astype(dtype)
        weights[:256] = 0.0
    size = 256
    whole = _kernels.whole_rows(X, np.dtype(dtype))
    assert whole is not None and not whole.flags.writeable
    for rows in (slice(0, n_rows), slice(512, n_rows - 77)):
        buffers = _em._ChunkBuffers(expansion, 3, size, compiled)
        with np.errstate(under="ignore"):
            one_call = _em._compiled_rows_statistics(
                whole, weights, expansion, buffers, rows, size,
                _em._expanded_sums(expansion),
            )  # fmt: skip
            sums = _em._expanded_sums(expansion)
            loglik_sum, worst = 0.0, (math.inf, -1)
            for start in range(rows.start, rows.stop, size):
                chunk = slice(start, min(start + size, rows.stop))
                part = _em._compiled_chunk_statistics(
                    X, weights, expansion, buffers, chunk, sums
                )
                loglik_sum += part.loglik_sum
                worst = min(worst, part.worst)
        np.testing.assert_array_equal(one_call.sums, sums)
        assert one_call.loglik_sum == loglik_sum
        assert one_call.worst == worst
        assert rows.start <= worst[1] < rows.stop
        if weighted:
            assert weights[worst[1]] > 0


def test_whole_rows_only_where_no_copy_is_needed():
    X = np.zeros((10, 3))
    view = _kernels.whole_rows(X, X.dtype)
    assert view is not None and np.shares_memory(view, X)
    assert not view.flags.writeable and X.flags.writeable
    assert _kernels.whole_rows(X, np.dtype(np.float32)) is None  # a cast
    assert _kernels.whole_rows(np.asfortranarray(X), X.dtype) is None
    assert _kernels.whole_rows(X[:, :2], X.dtype) is None  # strided rows
    assert _kernels.whole_rows(X.astype(">f8"), np.dtype(">f8")) is None


def _fits(X, covariance_type, sample_weight=None, **kwargs):
    params = start_params(X.astype(np.float64), 4, covariance_type, seed=2)
    gm = GaussianMixture(
        4, covariance_type=covariance_type, max_iter=8, tol=0, **params, **kwargs
    )
    with pytest.warns(ConvergenceWarning):
        gm.fit(X, sample_weight=sample_weight)
    return gm, gm.predict_proba(X[:500]), gm.score_samples(X[:500])


# Whole fits with and without the kernels: relative difference allowed.
# Their exp differs by an eps or two, which eight EM iterations carry along:
# up to 1e-13 (float64) and 2e-5 (float32) measured; float32 is held to its
# accuracy target against float64 (README, Speed).
FIT_RTOL = {np.float64: 1e-12, np.float32: 1e-4}
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_whole_fits_agree_with_and_without_kernels(
    monkeypatch, always, dtype, covariance_type, weighted
):
    """EM in threads over several chunks; the expanded E-step throughout
    (the predictions' 500 rows too)."""
    monkeypatch.setattr(_em, "_EXACT_CHEAPER", 0)
    rng = np.random.default_rng(3)
    n = 30_000
    X = (rng.normal(size=(n, 6)) + 4.0 * rng.integers(3, size=(n, 1))).astype(dtype)
    weights = rng.uniform(0, 3, n) if weighted else None
    calls = []
    for name in ("expanded_chunk", "expanded_rows"):
        kernel = getattr(always, name)
        monkeypatch.setattr(
            always, name, lambda *a, kernel=kernel: calls.append(1) or kernel(*a)
        )
    with_kernels = _fits(X, covariance_type, weights)
    assert len(calls) >= 8  # a call or more per iteration: the kernels did run
    monkeypatch.setattr(_kernels, "_module", None)
    without = _fits(X, covariance_type, weights)
    gm_k, proba_k, score_k = with_kernels
    gm, proba, score = without
    rtol = FIT_RTOL[dtype]
    np.testing.assert_allclose(gm_k.lower_bound_, gm.lower_bound_, rtol=rtol)
    pairs = [(getattr(gm_k, name), getattr(gm, name)) for name in FITTED]
    for ours, numpy_only in [*pairs, (proba_k, proba), (score_k, score)]:
        # Norm-wise: relative to the largest entry.
        atol = rtol * np.abs(numpy_only).max()
        np.testing.assert_allclose(ours, numpy_only, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_default_start_on_large_data_with_and_without_kernels(
    monkeypatch, compiled, dtype, covariance_type
):
    """k-means on a sample, then every row labelled and summed: by the
    kernels (in memory, and block by block as Chunks) or by scikit-learn and
    NumPy. The same labels make the same start, so the fits agree to
    rounding (float32: to its accuracy target)."""
    from gaussmix import Chunks

    rng = np.random.default_rng(8)
    n = 80_000  # past KMEANS_SAMPLE: the start labels every row
    X = (rng.normal(size=(n, 3)) + 6.0 * rng.integers(4, size=(n, 1))).astype(dtype)
    calls = {"nearest_centres": 0, "label_sums": 0}
    for name in calls:
        kernel = getattr(compiled, name)
        monkeypatch.setattr(
            compiled,
            name,
            lambda *a, name=name, kernel=kernel: (
                calls.__setitem__(name, calls[name] + 1) or kernel(*a)
            ),
        )

    def fit(data):
        gm = GaussianMixture(4, covariance_type=covariance_type, random_state=0)
        return gm.fit(data)

    monkeypatch.setattr(_kernels, "_MIN_VALUES", 0)
    in_memory = fit(X)
    assert calls["nearest_centres"] > 0 and calls["label_sums"] > 0
    chunked = fit(Chunks(np.array_split(X, 3)))
    monkeypatch.setattr(_kernels, "_MIN_VALUES", 2**62)
    numpy_only = fit(X)
    rtol = FIT_RTOL[dtype]
    for gm in (in_memory, chunked):
        assert gm.n_iter_ == numpy_only.n_iter_
        np.testing.assert_allclose(gm.lower_bound_, numpy_only.lower_bound_, rtol=rtol)
        for name in FITTED:
            expected = getattr(numpy_only, name)
            np.testing.assert_allclose(
                getattr(gm, name), expected, rtol=0,
                atol=rtol * np.abs(expected).max(),
            )  # fmt: skip


def test_read_only_and_memory_mapped_data(always, tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(5000, 3)) + 5.0 * rng.integers(2, size=(5000, 1))
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    gm_mapped = _fits(mapped, "full")[0]
    gm = _fits(X, "full")[0]
    np.testing.assert_array_equal(gm_mapped.means_, gm.means_)


def test_small_e_steps_and_odd_arrays_use_numpy(monkeypatch, compiled):
    monkeypatch.delenv(_kernels.ENV_VAR, raising=False)
    X = np.zeros((10, 3))
    big = _kernels._MIN_VALUES
    assert _kernels.for_e_step(X, big - 1, X.dtype) is None
    assert _kernels.for_e_step(X, big, X.dtype) is compiled
    assert _kernels.for_e_step(X, big, np.dtype(np.float32)) is None
    # float32 rows expanded in float64 (cast chunk by chunk).
    assert _kernels.for_e_step(X.astype(np.float32), big, X.dtype) is compiled
    assert _kernels.for_e_step(X.astype(np.float16), big, X.dtype) is None
    assert _kernels.for_e_step(X.astype(">f8"), big, np.dtype(">f8")) is None
    assert _kernels.for_e_step([[0.0]], big, X.dtype) is None


def test_e_steps_of_every_size_where_asked_for(monkeypatch, compiled):
    """After warm_up(every_size=True), or with GAUSSMIX_NUMBA=always, small
    E-steps run in the kernels too; a plain warm_up leaves the threshold."""
    monkeypatch.delenv(_kernels.ENV_VAR, raising=False)
    X = np.zeros((10, 3))
    small = _kernels._MIN_VALUES - 1
    assert _kernels.warm_up()
    assert _kernels.for_e_step(X, small, X.dtype) is None
    assert "of >=" in _kernels.describe()
    monkeypatch.setenv(_kernels.ENV_VAR, "Always")
    assert _kernels.for_e_step(X, small, X.dtype) is compiled
    monkeypatch.setenv(_kernels.ENV_VAR, "1")
    assert _kernels.for_e_step(X, small, X.dtype) is None
    assert _kernels.warm_up(every_size=True)
    assert _kernels.for_e_step(X, small, X.dtype) is compiled
    assert "every size" in _kernels.describe()
    # Still none for arrays numba cannot take as they are.
    assert _kernels.for_e_step(X.astype(">f8"), small, np.dtype(">f8")) is None


def test_a_small_fit_in_the_kernels_agrees_with_numpy(monkeypatch, compiled):
    """A fit of 3,000 rows (expanded E-steps, one chunk) with every E-step
    in the kernels, against NumPy's: to rounding, and the kernels did run."""
    rng = np.random.default_rng(12)
    X = rng.normal(size=(3000, 2)) + 5.0 * rng.integers(3, size=(3000, 1))
    numpy_only = _fits(X, "full")
    calls = []
    rows = compiled.expanded_rows
    monkeypatch.setattr(
        compiled, "expanded_rows", lambda *a: calls.append(1) or rows(*a)
    )
    assert _kernels.warm_up(every_size=True)
    ours = _fits(X, "full")
    assert len(calls) >= 8
    np.testing.assert_allclose(
        ours[0].lower_bound_, numpy_only[0].lower_bound_, rtol=1e-12
    )
    for name in FITTED:
        expected = getattr(numpy_only[0], name)
        atol = 1e-12 * np.abs(expected).max()
        np.testing.assert_allclose(getattr(ours[0], name), expected, rtol=0, atol=atol)


def test_every_size_within_a_block_of_this_thread_only(monkeypatch, compiled):
    """every_size() holds for its block, nested or not, and not for another
    thread running meanwhile; every_size(False) adds nothing."""
    import threading

    monkeypatch.delenv(_kernels.ENV_VAR, raising=False)
    X = np.zeros((10, 3))
    small = _kernels._MIN_VALUES - 1
    seen = []
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        seen.append(_kernels.for_e_step(X, small, X.dtype))
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with _kernels.every_size(False):
        assert _kernels.for_e_step(X, small, X.dtype) is None
    with _kernels.every_size():
        assert _kernels.for_e_step(X, small, X.dtype) is compiled
        with _kernels.every_size(False):  # does not switch the outer off
            assert _kernels.for_e_step(X, small, X.dtype) is compiled
        inside.set()
        done.wait(10)
    thread.join()
    assert seen == [None]
    assert _kernels.for_e_step(X, small, X.dtype) is None


def test_a_selection_of_many_fits_runs_them_in_the_kernels(monkeypatch, compiled):
    """GaussianMixtureIC over enough rows x fits runs every E-step compiled
    and chooses as on NumPy, its criteria to rounding; Old Faithful's
    default selection (272 rows x 108 fits) stays on NumPy."""
    from gaussmix import GaussianMixtureIC
    from gaussmix.datasets import load_faithful

    monkeypatch.delenv(_kernels.ENV_VAR, raising=False)
    calls = []
    rows = compiled.expanded_rows
    monkeypatch.setattr(
        compiled, "expanded_rows", lambda *a: calls.append(1) or rows(*a)
    )
    GaussianMixtureIC(random_state=0).fit(load_faithful().data)
    assert not calls
    assert not _kernels.repays_loading(272, 108)
    assert _kernels.repays_loading(_kernels._MANY_FITS_ROWS // 8, 8)

    rng = np.random.default_rng(5)
    X = rng.normal(size=(4000, 2)) * [1.0, 0.3]
    X += 4.0 * rng.integers(3, size=(4000, 1))
    selector = dict(n_components=[2, 3, 4], covariance_type=["full", "diag"],
                    n_init=2, random_state=0)  # fmt: skip
    assert _kernels.repays_loading(4000, 12) is False
    monkeypatch.setattr(_kernels, "_MANY_FITS_ROWS", 4000 * 12)
    ours = GaussianMixtureIC(**selector).fit(X)
    assert calls  # the kernels did run
    monkeypatch.setattr(_kernels, "_module", None)
    numpy_only = GaussianMixtureIC(**selector).fit(X)
    assert ours.best_params_ == numpy_only.best_params_
    for name in ("log_likelihood", "bic", "aic", "icl"):
        np.testing.assert_allclose(
            ours.criteria_[name], numpy_only.criteria_[name], rtol=1e-9
        )
    np.testing.assert_array_equal(
        ours.criteria_["n_iter"], numpy_only.criteria_["n_iter"]
    )
    # And the process is as it was: small E-steps on NumPy again.
    monkeypatch.setattr(_kernels, "_module", compiled)
    assert _kernels.for_e_step(X, 10, X.dtype) is None


def test_without_numba_or_switched_off_numpy_is_used(never):
    assert not _kernels.warm_up()
    assert not _kernels.warm_up()
    X = np.zeros((10, 3))
    assert _kernels.for_e_step(X, 2**40, X.dtype) is None


def _python(script, **env):
    """What ``python -c script`` prints, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return result.stdout.split()


def test_environment_variable_switches_the_kernels_off():
    script = (
        "from gaussmix import _kernels; import sys; "
        "print(_kernels.warm_up(), 'numba' in sys.modules)"
    )
    assert _python(script, **{_kernels.ENV_VAR: "0"}) == ["False", "False"]


def test_the_package_imports_without_numba():
    """numba is an optional extra: nothing imports it until a large E-step."""
    script = (
        "import sys; import gaussmix, numpy as np; "
        "from sklearn.exceptions import ConvergenceWarning; import warnings; "
        "warnings.simplefilter('ignore', ConvergenceWarning); "
        "gaussmix.GaussianMixture(2, random_state=0).fit(np.random.rand(500, 2)); "
        "print('numba' in sys.modules)"
    )
    assert _python(script, **{_kernels.ENV_VAR: "1"}) == ["False"]


# Widths of the transposing copy checked for a CPU without AVX: the loops
# of their own (2-7) and the tiles, whole and with features left over.
_BASELINE_WIDTHS = (2, 5, 7, 8, 9, 16, 17, 35)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="x86-64's baseline CPU",
)
def test_kernels_built_for_a_cpu_without_avx_or_fma(compiled, tmp_path):
    """Built for x86-64's baseline (SSE2: no AVX, no fused multiply-adds),
    as numba builds them on older CPUs: exp and log keep their error bounds,
    and the transposing copy, whose 8-lane shuffles LLVM then splits, stays
    bitwise NumPy's. The same checks as above, in a fresh process whose
    numba targets that CPU and caches apart."""
    script = f"""
import sys
sys.path[:0] = {[os.path.dirname(__file__)]!r}
import test_kernels as t
from gaussmix import _compiled
for dtype in t.DTYPES:
    t.test_exp_is_within_its_error_bound_of_the_c_library(_compiled, dtype)
    t.test_log_is_within_its_error_bound_of_the_c_library(_compiled, dtype)
    for width in t._BASELINE_WIDTHS:
        t.test_the_transposing_copy_for_every_width(_compiled, dtype, width)
print("checked", _compiled.centre_transposed.signatures)
"""
    environment = {
        **os.environ,
        "NUMBA_CPU_NAME": "generic",
        "NUMBA_CPU_FEATURES": "",
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("checked")


def _large_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20000, 4)) + 4.0 * rng.integers(3, size=(20000, 1))


def test_a_large_fit_without_numba_installed(monkeypatch, always):
    """As if numba were not installed: NumPy does the work, the same result
    to rounding (the kernels' exp and order of summation)."""
    script = (
        "import sys; sys.modules['numba'] = None; "
        "import warnings, numpy as np; from gaussmix import GaussianMixture, _kernels; "
        "from sklearn.exceptions import ConvergenceWarning; "
        "from test_kernels import _large_data; "
        "warnings.simplefilter('ignore', ConvergenceWarning); "
        "_kernels._MIN_VALUES = 0; "
        "gm = GaussianMixture(3, random_state=0, max_iter=5).fit(_large_data()); "
        "print(_kernels.warm_up(), repr(gm.lower_bound_))"
    )
    available, lower_bound = _python(
        script, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path])
    )
    assert available == "False"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        here = GaussianMixture(3, random_state=0, max_iter=5).fit(_large_data())
    # Here with the kernels.
    assert float(lower_bound) == pytest.approx(
        here.lower_bound_, rel=FIT_RTOL[np.float64], abs=0.0
    )


def test_a_fit_compiles_the_kernels_of_its_own_dtype_only(compiled):
    """In a fresh process, a large float64 fit compiles (or loads from
    numba's cache) the float64 kernels and not the float32 ones."""
    script = (
        "import warnings, numpy as np; from gaussmix import GaussianMixture, _kernels; "
        "from sklearn.exceptions import ConvergenceWarning; "
        "from test_kernels import _large_data; "
        "warnings.simplefilter('ignore', ConvergenceWarning); "
        "_kernels._MIN_VALUES = 0; "
        "GaussianMixture(3, random_state=0, max_iter=2).fit(_large_data()); "
        "from gaussmix import _compiled; "
        "print(sorted(str(d) for d in _kernels._ready), "
        "sorted({str(s[0].dtype) for s in _compiled.expanded_chunk.signatures}))"
    )
    printed = _python(
        script, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path])
    )
    assert printed == ["['float64']", "['float64']"]


def test_a_failing_compiler_falls_back_to_numpy(monkeypatch, compiled):
    """numba's cache or compiler failing (a read-only home, say) must not
    break a fit: one warning, then NumPy."""

    def fail(kernels, dtype):
        raise RuntimeError("cannot cache function 'scale': no locator available")

    monkeypatch.setattr(_kernels, "_compile", fail)
    monkeypatch.setattr(_kernels, "_module", _kernels._UNLOADED)
    monkeypatch.setattr(_kernels, "_ready", set())
    monkeypatch.setattr(_kernels, "_MIN_VALUES", 0)
    with pytest.warns(RuntimeWarning, match="no locator available.*using NumPy"):
        assert not _kernels.warm_up()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, random_state=0, max_iter=5).fit(_large_data())
    assert np.isfinite(gm.lower_bound_)
    assert _kernels._module is None  # decided once: no warning per fit


@pytest.mark.parametrize("path", ["always", "never"])
def test_float32_rows_are_expanded_in_float64_where_float32_would_lose_digits(
    request, path
):
    """Clusters far apart in units of their spread: the float32 expansion is
    refused, and float32 rows are expanded in float64 (cast chunk by chunk
    for the kernels), not given the exact E-step, which costs 10-40x as
    much. The statistics are then those of the same rows in float64."""
    request.getfixturevalue(path)
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(3000, 3)), rng.normal(size=(3000, 3)) + 400.0])
    X32 = X.astype(np.float32)
    strategy = get_covariance("full")
    covariances = np.stack([np.eye(3)] * 2)
    params = _em.Params(
        np.array([0.5, 0.5]),
        np.vstack([X[:3000].mean(axis=0), X[3000:].mean(axis=0)]),
        covariances,
        strategy.precision_cholesky(covariances),
    )
    assert _em._expansion(np.dtype(np.float32), params, strategy) is None
    working = _em._working_expansion(np.dtype(np.float32), params, strategy)
    assert working is not None and working.weights.dtype == np.float64
    fast = _em.e_step(X32, None, params, strategy)
    in_float64 = _em.e_step(X32.astype(np.float64), None, params, strategy)
    exact = _em.e_step(X32, None, params, strategy, exact=True)
    assert np.array_equal(fast.shift, in_float64.shift)
    np.testing.assert_allclose(fast.mean_loglik, in_float64.mean_loglik, rtol=1e-13)
    np.testing.assert_allclose(fast.resp_sum, in_float64.resp_sum, rtol=1e-12)
    np.testing.assert_allclose(fast.scatter, in_float64.scatter, rtol=1e-9)
    np.testing.assert_allclose(fast.mean_loglik, exact.mean_loglik, rtol=1e-6)
    log_density = _em.log_density(X32, params, strategy)
    assert log_density.dtype == np.float32
    np.testing.assert_allclose(
        log_density,
        _em.log_density(X32.astype(np.float64), params, strategy),
        rtol=1e-6,
    )


def _fitted_params(X, n_components, covariance_type, max_iter=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(
            n_components,
            covariance_type=covariance_type,
            max_iter=max_iter,
            random_state=0,
        ).fit(X)
    return _em.Params(
        model.weights_, model.means_, model.covariances_, model.precisions_cholesky_
    )


def _correlated_rows(n_features, seed=0, n=600):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features)) + 2.0 * np.eye(n_features)
    return rng.normal(size=(n, n_features)) @ mixing + 3.0


SMALL_SHAPES = [(1, 1), (1, 3), (2, 3), (3, 1), (5, 4), (16, 16)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize(("n_features", "n_components"), SMALL_SHAPES)
def test_the_compiled_expansion_agrees_with_numpy(
    compiled, dtype, covariance_type, n_features, n_components
):
    """The expanded E-step's weights in one compiled call, against NumPy's
    calls: the centre and features' pairs the same, the weights to
    rounding (one unit in the last place of float32)."""
    X = _correlated_rows(n_features)
    params = _fitted_params(X, n_components, covariance_type)
    strategy = get_covariance(covariance_type)
    dtype = np.dtype(dtype)
    expected = _em._working_expansion(dtype, params, strategy)
    made = _em._compiled_expansion(compiled, dtype, params, strategy)
    via_kernels = _em._working_expansion(dtype, params, strategy, kernels=compiled)
    assert expected is not None
    if expected.weights.dtype != dtype:
        # float32 rows of 16 correlated features are expanded in float64:
        # the compiled call leaves that to NumPy.
        assert made is None
        np.testing.assert_array_equal(via_kernels.weights, expected.weights)
        return
    assert made is not None
    assert made.weights.dtype == dtype
    assert made.n_quadratic == expected.n_quadratic
    for ours, theirs in [
        (made.centre, expected.centre),
        (made.centre64, expected.centre64),
        *zip(made.pairs, expected.pairs, strict=True),
    ]:
        np.testing.assert_array_equal(ours, theirs)
    rtol = 1e-12 if dtype == np.float64 else float(np.finfo(np.float32).eps)
    scale = np.maximum(1.0, np.abs(expected.weights.astype(np.float64)))
    error = np.abs(made.weights.astype(np.float64) - expected.weights) / scale
    assert error.max() <= rtol
    # And the E-step on the way: the compiled call where asked for.
    np.testing.assert_array_equal(via_kernels.weights, made.weights)


def test_the_compiled_expansion_leaves_the_hard_cases_to_numpy(monkeypatch, compiled):
    """Where the expansion in the data's dtype would lose digits (a
    component far from the centre for float32, correlated features), or
    for other covariances and many features, the compiled call gives
    None and the NumPy path decides as it does: float64 work for float32
    rows, or exact differences."""
    X = _correlated_rows(2)
    strategy = get_covariance("full")
    params = _fitted_params(X, 2, "full")
    far = params._replace(means=params.means + np.array([[0.0, 0.0], [5e3, 0.0]]))
    float32 = np.dtype(np.float32)
    assert _em._compiled_expansion(compiled, float32, far, strategy) is None
    numpy_way = _em._working_expansion(float32, far, strategy)
    assert numpy_way is not None and numpy_way.weights.dtype == np.float64
    via_kernels = _em._working_expansion(float32, far, strategy, kernels=compiled)
    np.testing.assert_array_equal(via_kernels.weights, numpy_way.weights)
    # Correlated beyond float32's conditioning tolerance.
    thin = params._replace(
        covariances=params.covariances * np.array([1.0, 1e-6])[None, :, None]
    )
    monkeypatch.setattr(
        _em, "_CONDITIONING_TOLERANCE", dict(_em._CONDITIONING_TOLERANCE)
    )
    _em._CONDITIONING_TOLERANCE[float32] = 0.0
    assert _em._compiled_expansion(compiled, float32, thin, strategy) is None
    monkeypatch.undo()
    # A weight of zero: log 0 makes the weights infinite.
    empty = params._replace(weights=np.array([1.0, 0.0]))
    assert (
        _em._compiled_expansion(compiled, np.dtype(np.float64), empty, strategy) is None
    )
    assert _em._working_expansion(np.dtype(np.float64), empty, strategy) is None
    diag = _fitted_params(X, 2, "diag")
    assert (
        _em._compiled_expansion(compiled, float32, diag, get_covariance("diag")) is None
    )
    wide = _fitted_params(_correlated_rows(17), 2, "full")
    assert _em._compiled_expansion(compiled, float32, wide, strategy) is None


def _statistics(X, params, covariance_type):
    return _em.e_step(X, None, params, get_covariance(covariance_type))


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize(("n_features", "n_components"), SMALL_SHAPES)
def test_the_compiled_m_step_agrees_with_numpy(
    compiled, covariance_type, n_features, n_components
):
    """The M-step of full and tied covariances in one compiled call, against
    NumPy's: means, covariances and weights to rounding, the precisions'
    Cholesky factors to rounding times their condition, counts equal."""
    X = _correlated_rows(n_features)
    strategy = get_covariance(covariance_type)
    stats = _statistics(
        X, _fitted_params(X, n_components, covariance_type), covariance_type
    )
    eps = float(np.finfo(np.float64).eps)
    floor = np.full(n_features, 1e-6)
    expected, expected_counts = _em.m_step(stats, strategy, 1e-6, floor, eps)
    made = _em._compiled_m_step(compiled, stats, strategy, 1e-6, eps)
    assert made is not None
    params, counts = made
    np.testing.assert_array_equal(counts, expected_counts)
    via_kernels = _em.m_step(stats, strategy, 1e-6, floor, eps, compiled)[0]
    for ours, theirs in zip(via_kernels, params, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs, rtol in zip(
        params, expected, [1e-15, 1e-14, 1e-14, 1e-11], strict=True
    ):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(
            ours, theirs, rtol=0, atol=rtol * np.abs(theirs).max()
        )
    # The factors are upper triangular, and invert the covariances.
    factors = params.precisions_cholesky.reshape(-1, n_features, n_features)
    covariances = params.covariances.reshape(-1, n_features, n_features)
    for factor, covariance in zip(factors, covariances, strict=True):
        np.testing.assert_array_equal(factor, np.triu(factor))
        np.testing.assert_allclose(
            covariance @ factor @ factor.T, np.eye(n_features), atol=1e-9
        )


def test_the_compiled_m_step_leaves_degenerate_components_to_numpy(compiled):
    """An emptied component (re-seeded) and a collapsed covariance (healed
    or an error): the compiled call gives None, and the M-step asked to use
    the kernels does what NumPy's does, warnings included."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2))
    strategy = get_covariance("full")
    params = _fitted_params(X, 2, "full")
    stats = _statistics(X, params, "full")
    eps = float(np.finfo(np.float64).eps)
    floor = np.full(2, 1e-6)
    emptied = dataclasses.replace(
        stats,
        resp_sum=np.array([stats.resp_sum.sum(), 0.0]),
        diff_sum=np.vstack([stats.diff_sum.sum(axis=0), np.zeros(2)]),
        scatter=np.stack([stats.scatter.sum(axis=0), np.zeros((2, 2))]),
    )
    assert _em._compiled_m_step(compiled, emptied, strategy, 1e-6, eps) is None
    with pytest.warns(DegenerateDataWarning, match="re-seeded"):
        via_kernels = _em.m_step(emptied, strategy, 1e-6, floor, eps, compiled)
    with pytest.warns(DegenerateDataWarning, match="re-seeded"):
        numpy_way = _em.m_step(emptied, strategy, 1e-6, floor, eps)
    for ours, theirs in zip(via_kernels[0], numpy_way[0], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # A component on one point: its covariance is zero but for reg_covar=0.
    collapsed = dataclasses.replace(
        stats,
        scatter=stats.scatter * np.array([1.0, 0.0])[:, None, None],
        diff_sum=stats.diff_sum * np.array([[1.0], [0.0]]),
    )
    assert _em._compiled_m_step(compiled, collapsed, strategy, 0.0, eps) is None
    with pytest.warns(DegenerateDataWarning, match="collapsed"):
        healed = _em.m_step(collapsed, strategy, 0.0, floor, eps, compiled)
    with pytest.warns(DegenerateDataWarning, match="collapsed"):
        numpy_healed = _em.m_step(collapsed, strategy, 0.0, floor, eps)
    for ours, theirs in zip(healed[0], numpy_healed[0], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(DegenerateCovarianceError):
        _em.m_step(collapsed, strategy, 0.0, np.zeros(2), eps, compiled)
    # Other covariance types are NumPy's.
    diag_stats = _statistics(X, _fitted_params(X, 2, "diag"), "diag")
    diag = get_covariance("diag")
    assert _em._compiled_m_step(compiled, diag_stats, diag, 1e-6, eps) is None


def test_parameter_steps_compiled_where_the_kernels_run_every_size(
    monkeypatch, compiled
):
    """The M-step and the expansion are compiled only where every size is
    asked for (a fit's own choice, not what ran before it), and a fit then
    runs them there: each once per iteration."""
    monkeypatch.delenv(_kernels.ENV_VAR, raising=False)
    assert _kernels.for_parameters(np.float64) is None
    with _kernels.every_size():
        assert _kernels.for_parameters(np.float32) is compiled
        assert _kernels.for_parameters(np.dtype(">f8")) is None
    calls = {"dense_m_step": 0, "dense_expansion": 0}
    for name in calls:
        function = getattr(compiled, name)

        def counted(*args, name=name, function=function):
            calls[name] += 1
            return function(*args)

        monkeypatch.setattr(compiled, name, counted)
    X = _correlated_rows(2, n=3000)
    params = start_params(X, 3, "tied")
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, covariance_type="tied", max_iter=5, tol=0, **params).fit(X)
    assert calls == {"dense_m_step": 0, "dense_expansion": 0}
    with _kernels.every_size(), pytest.warns(ConvergenceWarning):
        GaussianMixture(3, covariance_type="tied", max_iter=5, tol=0, **params).fit(X)
    assert calls == {"dense_m_step": 5, "dense_expansion": 5}


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_the_compiled_split_of_the_sums_equals_numpys(compiled, covariance_type):
    """The expanded E-step's sums split into counts, sums and scatter in one
    compiled call: the same values as from_expanded's, bit for bit."""
    strategy = get_covariance(covariance_type)
    n_features, n_components = 5, 4
    n_expanded = strategy.n_expanded(n_features)
    sums = np.random.default_rng(5).normal(size=(n_expanded, n_components))
    first, second = (
        np.ascontiguousarray(a, np.intp) for a in strategy.quadratic_pairs(n_features)
    )
    resp_sum = np.empty(n_components)
    diff_sum = np.empty((n_components, n_features))
    scatter = np.empty((n_components, n_features, n_features))
    compiled.dense_statistics(sums, first, second, resp_sum, diff_sum, scatter)
    expected = strategy.from_expanded(sums.T, n_features)
    for ours, theirs in zip((resp_sum, diff_sum, scatter), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_fit_keeps_its_small_e_step_buffers(monkeypatch):
    """Within a fit (em), single-worker E-steps reuse the first one's small
    work arrays; outside one, or for large ones, each E-step makes its own;
    the statistics are the same bit for bit either way."""
    X = _correlated_rows(2, n=3000)
    strategy = get_covariance("full")
    params = _fitted_params(X, 3, "full")
    made = []
    original = _em._ChunkBuffers

    def counted(*args, **kwargs):
        made.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_em, "_ChunkBuffers", counted)
    alone = [_em.e_step(X, None, params, strategy) for _ in range(3)]
    assert len(made) == 3
    made.clear()
    with _em._buffers_kept():
        kept = [_em.e_step(X, None, params, strategy) for _ in range(3)]
    assert len(made) == 1
    for a, b in zip(alone, kept, strict=True):
        for name in ("resp_sum", "diff_sum", "scatter", "loglik_sum"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    made.clear()
    kept_bytes = _em._KEPT_BYTES
    monkeypatch.setattr(_em, "_KEPT_BYTES", 0)
    with _em._buffers_kept():
        [_em.e_step(X, None, params, strategy) for _ in range(3)]
    assert len(made) == 3
    monkeypatch.setattr(_em, "_KEPT_BYTES", kept_bytes)
    # Threads sharing the fit's context (a source's blocks run at once):
    # each its own buffers.
    import contextvars
    import threading

    made.clear()
    results = []
    # Both alive at once, so that their identities differ.
    both = threading.Barrier(2)

    def e_step_in(context):
        both.wait(10)
        results.append(context.run(_em.e_step, X, None, params, strategy))

    with _em._buffers_kept():
        context = contextvars.copy_context()
        threads = [
            threading.Thread(target=e_step_in, args=(context.copy(),)) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(made) == 2
    for result in results:
        np.testing.assert_array_equal(result.scatter, alone[0].scatter)
    # A whole fit: its E-steps' buffers made once.
    made.clear()
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, max_iter=6, tol=0, **start_params(X, 3, "full")).fit(X)
    assert len(made) == 1
