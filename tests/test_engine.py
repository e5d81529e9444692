"""The fast engine: expanded E-step, its exactness checks, threads, init."""

import itertools
import multiprocessing
import operator
import threading
import time

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

from gaussmix import (
    Chunks,
    GaussianMixture,
    _em,
    _init,
    _kernels,
    _parallel,
)
from gaussmix._covariance import get_covariance
from gaussmix._em import (
    Params,
    e_step,
    label_statistics,
    m_step,
    resp_statistics,
    weighted_log_prob,
)
from gaussmix._source import ArraySource
from gaussmix.datasets import make_elliptical_blobs
from helpers import (
    COVARIANCE_TYPES,
    assert_thinnest_directions_kept,
    correlated,
    start_params,
    three_iterations_from_one_start,
)


def _params(model):
    return Params(
        np.asarray(model.weights_, float),
        np.asarray(model.means_, float),
        np.asarray(model.covariances_, float),
        np.asarray(model.precisions_cholesky_, float),
    )


def _rough_params(X, covariance_type):
    """Parameters a few iterations into a fit: unconverged, overlapping."""
    with pytest.warns(ConvergenceWarning):
        model = GaussianMixture(
            3,
            covariance_type=covariance_type,
            max_iter=2,
            tol=0,
            **start_params(X, 3, covariance_type),
        ).fit(X)
    return _params(model)


def _m_step(stats, strategy, dtype=np.float64):
    eps = float(np.finfo(dtype).eps)
    params, _ = m_step(stats, strategy, 1e-6, np.zeros(stats.shift.shape[1]), eps)
    return params


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expanded_e_step_equals_exact_e_step(monkeypatch, blobs, covariance_type):
    # Expanded log-densities below, though the rows are few.
    monkeypatch.setattr(_em, "_EXACT_CHEAPER", 0)
    strategy = get_covariance(covariance_type)
    params = _rough_params(blobs, covariance_type)
    assert _em._expansion(blobs.dtype, params, strategy) is not None
    weights = np.random.RandomState(1).uniform(0, 2, len(blobs))
    fast = e_step(blobs, weights, params, strategy)
    exact = e_step(blobs, weights, params, strategy, exact=True)
    # Different shifts (the mixture's mean against each component's mean)...
    assert not np.allclose(fast.shift, exact.shift)
    # ...but the same likelihood and the same M-step.
    np.testing.assert_allclose(fast.mean_loglik, exact.mean_loglik, rtol=1e-13)
    np.testing.assert_allclose(fast.resp_sum, exact.resp_sum, rtol=1e-12)
    np.testing.assert_array_equal(fast.worst_sample, exact.worst_sample)
    for a, b in zip(_m_step(fast, strategy), _m_step(exact, strategy), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(
        weighted_log_prob(blobs, params, strategy),
        weighted_log_prob(blobs, params, strategy, exact=True),
        rtol=1e-12,
    )


def _far_apart(distance, scale=1.0, seed=0):
    """Two tight clusters ``distance`` apart, each with spread ``scale``."""
    rng = np.random.RandomState(seed)
    a = rng.normal(size=(300, 3)) * scale
    b = rng.normal(size=(300, 3)) * scale + distance
    return np.vstack([a, b])


def _start(X):
    return dict(
        weights_init=np.array([0.5, 0.5]),
        means_init=np.vstack([X[:300].mean(axis=0), X[300:].mean(axis=0)]) + 0.01,
        precisions_init=np.stack([np.eye(3)] * 2),
    )


def test_expansion_refused_where_it_would_lose_digits():
    """Clusters 1e5 standard deviations apart: the expansion would cancel
    terms of 1e9 to get results of about 1, losing nine digits."""
    X = _far_apart(1e5)
    strategy = get_covariance("full")
    start = _start(X)
    covariances = np.stack([np.eye(3)] * 2)
    params = Params(
        start["weights_init"],
        start["means_init"],
        covariances,
        strategy.precision_cholesky(covariances),
    )
    assert _em._expansion(X.dtype, params, strategy) is None
    exact = e_step(X, None, params, strategy)
    # Forcing the expansion shows what the checks protect against (the
    # conditioning about the centre sees these offsets too).
    float64 = np.dtype(np.float64)
    tolerances = (_em._EXPANSION_TOLERANCE, _em._CONDITIONING_TOLERANCE)
    saved = [table[float64] for table in tolerances]
    try:
        for table in tolerances:
            table[float64] = np.inf
        forced = e_step(X, None, params, strategy)
    finally:
        for table, value in zip(tolerances, saved, strict=True):
            table[float64] = value
    exact_params, forced_params = _m_step(exact, strategy), _m_step(forced, strategy)
    error = np.max(
        np.abs(forced_params.covariances - exact_params.covariances)
    ) / np.max(np.abs(exact_params.covariances))
    assert error > 1e-8


def test_the_expansion_noise_is_worked_out_once_per_parameters(monkeypatch):
    """A float32 fit asks for each iteration's noise twice (the convergence
    check, then the E-step) and a source of several blocks once per block;
    it is computed once, and parameters changed in place are not taken for
    the ones kept. (The quicker bound is switched off here, so that every
    E-step asks for the noise itself; and the compiled expansion, which
    takes that bound in its own call, with GAUSSMIX_NUMBA=always.)"""
    monkeypatch.delenv("GAUSSMIX_NUMBA", raising=False)
    strategy = get_covariance("full")
    computed = []
    expansion_error = type(strategy).expansion_error

    def counted(self, means, prec_chol, centre):
        computed.append((means.copy(), prec_chol.copy()))
        return expansion_error(self, means, prec_chol, centre)

    monkeypatch.setattr(type(strategy), "expansion_error", counted)
    monkeypatch.setattr(
        type(strategy), "expansion_error_bound", lambda *_: float("inf")
    )
    X = np.random.default_rng(0).normal(size=(3000, 3)).astype(np.float32)
    X[1000:2000] += 6.0
    params = start_params(X.astype(np.float64), 3, "full")
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, max_iter=6, tol=0, **params).fit(X)
    assert len(computed) >= 6
    for (means, factors), (next_means, next_factors) in itertools.pairwise(computed):
        assert not (
            np.array_equal(means, next_means) and np.array_equal(factors, next_factors)
        )
    source = Chunks(np.array_split(X, 6))
    with pytest.warns(ConvergenceWarning):
        model = GaussianMixture(3, max_iter=1, tol=0, **params).fit(X)
    fitted = _params(model)
    computed.clear()
    many = source.e_step(fitted, strategy)
    assert len(computed) == 1
    one = e_step(X, None, fitted, strategy)
    np.testing.assert_allclose(many.resp_sum, one.resp_sum, rtol=1e-6)

    noise = _em._expansion_noise(np.dtype(np.float32), fitted, strategy)
    fitted.means[0] += 50.0
    moved = _em._expansion_noise(np.dtype(np.float32), fitted, strategy)
    assert moved > 10 * noise
    monkeypatch.setattr(_em, "_noise_memo", _em._NoiseMemo())  # nothing kept
    assert _em._expansion_noise(np.dtype(np.float32), fitted, strategy) == moved


def _random_factors(rng, k, d, covariance_type):
    """Precision Cholesky factors of random covariances, some of them close
    to rank one (one direction far thinner than the others)."""
    strategy = get_covariance(covariance_type)
    dense = []
    for _ in range(k):
        basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
        scales = 10.0 ** rng.uniform(-4, 2, size=d)
        if rng.random() < 0.5:
            scales[1:] = scales[0] * 10.0 ** rng.uniform(3, 6, size=d - 1)
        dense.append((basis * scales) @ basis.T)
    dense = np.array(dense)
    covariances = {
        "full": dense,
        "tied": dense[0],
        "diag": np.diagonal(dense, axis1=1, axis2=2).copy(),
        "spherical": np.diagonal(dense, axis1=1, axis2=2).mean(axis=1),
    }[covariance_type]
    return covariances, strategy.precision_cholesky(covariances)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_expansion_errors_quicker_bound_is_an_upper_bound(covariance_type):
    """For random components (some nearly of rank one, where the Frobenius
    and spectral norms meet), the bound is never below the error, and
    within D times it."""
    strategy = get_covariance(covariance_type)
    rng = np.random.default_rng(0)
    for trial in range(300):
        k, d = int(rng.integers(1, 6)), int(rng.integers(1, 7))
        _, prec_chol = _random_factors(rng, k, d, covariance_type)
        means = rng.normal(scale=10.0 ** rng.uniform(-3, 4), size=(k, d))
        centre = rng.normal(size=d)
        error = strategy.expansion_error(means, prec_chol, centre)
        bound = strategy.expansion_error_bound(means, prec_chol, centre)
        assert error <= bound * _em._BOUND_MARGIN, trial
        assert bound <= d * error * (1 + 1e-12), trial


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_the_quicker_bound_decides_as_the_expansion_error_does(
    monkeypatch, covariance_type, dtype
):
    """Whether the expansion is used is the same decision as comparing the
    error itself with the tolerance, near the tolerance too; the spectral
    norms (full, tied) are worked out only where the bound does not settle
    it (for diag and spherical the bound is the error)."""
    strategy = get_covariance(covariance_type)
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps)
    tolerance = _em._EXPANSION_TOLERANCE[dtype]
    exact = []
    expansion_error = type(strategy).expansion_error

    def counted(self, means, prec_chol, centre):
        exact.append(None)
        return expansion_error(self, means, prec_chol, centre)

    monkeypatch.setattr(type(strategy), "expansion_error", counted)
    monkeypatch.setattr(_em, "_noise_memo", _em._NoiseMemo())
    rng = np.random.default_rng(1)
    decided_by_bound = 0
    outcomes = []
    for trial in range(200):
        k, d = int(rng.integers(2, 5)), int(rng.integers(1, 5))
        covariances, prec_chol = _random_factors(rng, k, d, covariance_type)
        weights = rng.dirichlet(np.ones(k))
        means = rng.normal(size=(k, d))
        centre = (weights @ means).astype(dtype).astype(np.float64)
        # Scale the offsets so that the error lands near the tolerance.
        error = expansion_error(strategy, means, prec_chol, centre)
        if trial % 2:
            ratio = 10.0 ** rng.uniform(-2, 2)
        else:
            ratio = 1.0 + rng.uniform(-3, 3) * 1e-6
        means = centre + (means - centre) * np.sqrt(ratio * tolerance / (eps * error))
        params = Params(weights, means, covariances, prec_chol)
        centre = (weights @ means).astype(dtype).astype(np.float64)
        error = expansion_error(strategy, means, prec_chol, centre)
        expected = eps * error <= tolerance
        exact.clear()
        assert _em._expansion_holds(dtype, params, strategy, centre) == expected, trial
        decided_by_bound += not exact
        outcomes.append(expected)
    # Both decisions, near the tolerance and far from it.
    assert 40 < sum(outcomes) < len(outcomes) - 40
    if covariance_type in ("full", "tied"):
        # Half the trials lie far from the tolerance: the bound settles
        # those below it without the spectral norms.
        assert decided_by_bound > 40


def _anisotropic_mixture(n, d, k, seed=0):
    """``k`` elongated, rotated Gaussians in ``d`` dimensions, ``n`` rows,
    overlapping enough that EM takes a while."""
    return make_elliptical_blobs(n, k, d, separation=2.0, random_state=seed)[0]


def _recorded_fit(monkeypatch, X, tol, max_iter=200, gap=None):
    """A default-start fit of ``X`` (8 components) whose E-steps are
    recorded as "x" (exact) or "." (expanded), and the gaps it measured;
    ``gap`` (a function of the number of E-steps so far) replaces the
    measured gap."""
    import gaussmix._source as source_module

    steps: list[str] = []
    gaps: list[float] = []
    real_step, real_gap = source_module.e_step, ArraySource.expansion_gap

    def recorded_step(X, weights, params, strategy, chunk_size=None, exact=False):
        steps.append("x" if exact else ".")
        return real_step(X, weights, params, strategy, chunk_size, exact)

    def recorded_gap(self, params, strategy):
        gaps.append(
            real_gap(self, params, strategy) if gap is None else gap(len(steps))
        )
        return gaps[-1]

    monkeypatch.setattr(source_module, "e_step", recorded_step)
    monkeypatch.setattr(ArraySource, "expansion_gap", recorded_gap)
    model = GaussianMixture(8, tol=tol, max_iter=max_iter, random_state=0).fit(X)
    monkeypatch.setattr(source_module, "e_step", real_step)
    monkeypatch.setattr(ArraySource, "expansion_gap", real_gap)
    return model, "".join(steps), gaps


@pytest.mark.parametrize("gap", [0.0, 2.5e-6, 2.6e-6, np.inf])
def test_float32_convergence_is_judged_exactly_only_where_the_expansion_is_off(
    monkeypatch, gap
):
    """Where a float32 fit's change comes within the bound on the expansion's
    rounding, the gap between the expanded and exact lower bounds is
    measured: at most a quarter of tol, the expansion stays, and the gap is
    measured again only where the bound has grown fourfold; beyond, every
    later E-step is exact. Here the bound is set (1 for three iterations,
    then 100) and so is the measured gap."""
    X = _anisotropic_mixture(40_000, 4, 8).astype(np.float32)
    tol = 1e-5
    n_iters = [0]
    monkeypatch.setitem(_em._EXPANSION_TOLERANCE, np.dtype(np.float32), np.inf)
    monkeypatch.setattr(
        _em, "_expansion_noise", lambda *_: 1.0 if n_iters[-1] <= 3 else 100.0
    )
    monkeypatch.setattr(
        GaussianMixture,
        "_report_iteration",
        lambda self, n_iter, params, lower_bound: n_iters.append(n_iter),
    )
    model, steps, gaps = _recorded_fit(monkeypatch, X, tol, gap=lambda _: gap)
    assert model.converged_ and model.n_iter_ > 5
    if gap <= _em._TRUSTED_GAP * tol:
        assert steps == "." * model.n_iter_
        assert len(gaps) == 2  # at the second iteration, and when the bound grew
    else:
        assert len(gaps) == 1
        assert steps[:2] == ".." and set(steps[2:]) == {"x"}


def test_float32_expansion_measured_where_it_matters(monkeypatch):
    """Unchanged, the expanded and exact lower bounds agree far better than
    the bound says: at tol=1e-5 a fit measures the gap once and keeps the
    expansion (such fits were 1.2-6x slower than float64 when every E-step
    after the bound was exact); a tol that float32 cannot resolve brings
    exact E-steps; with tol=0 (a fixed number of iterations) nothing is
    judged, and in float64 the bound is below 1e-9 by construction."""
    X = _anisotropic_mixture(40_000, 4, 8)
    X32 = X.astype(np.float32)
    kept_fit, kept, gaps = _recorded_fit(monkeypatch, X32, 1e-5)
    assert kept_fit.converged_ and kept == "." * kept_fit.n_iter_
    assert len(gaps) == 1 and 0.0 < gaps[0] <= 1e-5 / 4
    with pytest.warns(ConvergenceWarning):
        _, unresolved, gaps = _recorded_fit(monkeypatch, X32, 1e-10, max_iter=60)
    first = unresolved.index("x")
    assert len(gaps) == 1 and gaps[0] > 1e-10 / 4
    assert first > 3 and set(unresolved[first:]) == {"x"}
    with pytest.warns(ConvergenceWarning):
        _, fixed, gaps = _recorded_fit(monkeypatch, X32, 0.0, max_iter=30)
    assert fixed == "." * 30 and not gaps
    with pytest.warns(ConvergenceWarning):
        _, in_float64, gaps = _recorded_fit(monkeypatch, X, 1e-10, max_iter=30)
    assert in_float64 == "." * 30 and not gaps


@pytest.mark.parametrize("n_iter", [3, 10, 40])
def test_expansion_gap_on_a_sample_bounds_the_gap_over_all_rows(monkeypatch, n_iter):
    """The gap measured on every row is that of the two E-steps' lower
    bounds; measured on a sample, plus three standard errors, it is at
    least that, and far below the worst-case bound."""
    X = _anisotropic_mixture(60_000, 16, 16, seed=1)
    X32 = X.astype(np.float32)
    strategy = get_covariance("full")
    with pytest.warns(ConvergenceWarning):
        params = _params(
            GaussianMixture(16, max_iter=n_iter, tol=0, random_state=0).fit(X)
        )
    expanded = e_step(X32, None, params, strategy).mean_loglik
    exact = e_step(X32, None, params, strategy, exact=True).mean_loglik
    gap = abs(expanded - exact)
    everything = ArraySource(X32, None).expansion_gap(params, strategy)
    np.testing.assert_allclose(everything, gap, rtol=0.05)
    import gaussmix._source as source_module

    monkeypatch.setattr(source_module, "GAP_ROWS", 8192)
    sampled = ArraySource(X32, None).expansion_gap(params, strategy)
    bound = _em._expansion_noise(np.dtype(np.float32), params, strategy)
    assert gap <= sampled <= bound / 10
    assert _em.expansion_gap(X, None, params, strategy) < 1e-12  # float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("n_components", [1, 3, 32])
def test_logsumexp_of_rows_equals_scipy_and_leaves_its_input(
    dtype, order, n_components
):
    """Blocks of rows are taken transposed; the input, whatever its memory
    order, is not changed (an F-ordered block's transpose is C-ordered: it
    must still be copied), and rows of -inf, inf and NaN give scipy's."""
    rng = np.random.default_rng(0)
    a = np.asarray(rng.normal(scale=30.0, size=(10_000, n_components)), dtype, order)
    a[0] = -np.inf
    a[1, 0] = np.inf
    a[2, -1] = np.nan
    a[3] = -1e4
    before = a.copy()
    with np.errstate(all="ignore"):
        expected = logsumexp(a.astype(np.float64), axis=1)
    got = _em._logsumexp_rows(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(a, before)
    np.testing.assert_array_equal(got[:3], expected[:3])
    # Rounding of the largest term (up to about 150) where the sum is near 0.
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(got[3:], expected[3:], rtol=8 * eps, atol=300 * eps)


@pytest.mark.parametrize("distance", [1e2, 2e3, 1e4])
def test_far_apart_clusters_fit_like_sklearn(distance, e_step_form):
    """2e3 is just inside the expanded E-step's limit, 1e4 just outside;
    both must give scikit-learn's full-covariance fit (which uses
    per-component differences throughout; its other types lose digits on
    such data, so only full is a reference here)."""
    X = _far_apart(distance)
    kwargs = dict(tol=1e-8, max_iter=200, **_start(X))
    ours = GaussianMixture(2, **kwargs).fit(X)
    theirs = SkGaussianMixture(2, **kwargs).fit(X)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-8)


def _ill_conditioned(condition, seed=0):
    """Three clusters with rotated covariances of the given condition number."""
    rng = np.random.RandomState(seed)
    parts = []
    for _ in range(3):
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        scales = np.array([1.0, condition**-0.25, condition**-0.5])
        parts.append(
            rng.normal(size=(400, 3)) * scales @ rotation.T + 4.0 * rng.normal(size=3)
        )
    return np.vstack(parts)


@pytest.mark.parametrize(("condition", "expanded"), [(1e2, True), (1e6, False)])
def test_ill_conditioned_covariances_fit_like_sklearn(condition, expanded):
    """Rotated covariances with condition numbers 1e2 and 1e6: the first is
    fitted by the expanded E-step, the second is refused it (its means are
    far from the centre in units of the smallest standard deviation)."""
    X = _ill_conditioned(condition)
    init = start_params(X, 3, "full")
    init["means_init"] = np.vstack(
        [X[i * 400 : (i + 1) * 400].mean(0) for i in range(3)]
    )
    kwargs = dict(tol=1e-9, max_iter=300, reg_covar=0.0, **init)
    ours = GaussianMixture(3, **kwargs).fit(X)
    theirs = SkGaussianMixture(3, **kwargs).fit(X)
    strategy = get_covariance("full")
    assert (_em._expansion(X.dtype, _params(ours), strategy) is not None) == expanded
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-9, atol=1e-12)
    # Compare precisions too: their largest entries are the smallest directions.
    for name in ("covariances_", "precisions_"):
        np.testing.assert_allclose(
            getattr(ours, name),
            getattr(theirs, name),
            rtol=1e-7,
            atol=1e-10 * np.max(np.abs(getattr(theirs, name))),
            err_msg=name,
        )


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("condition", [1e6, 1e7])
def test_float32_correlated_features_keep_their_thinnest_direction(
    monkeypatch, condition, exact
):
    """float32 rows of one component whose features correlate (condition
    1e6, 1e7, about its own mean, so the expansion's distance bound does not
    see it): sums of products in float32 lost the thinnest direction (lower
    bound 1e-4 and 2e-3 off the float64 fit's; a variance of 1e-7 lost
    whole). Such rows are worked on in float64, expanded or exact."""
    if exact:
        monkeypatch.setattr(_em, "_expansion", lambda *args: None)
    X32 = correlated(condition).astype(np.float32)
    X64 = X32.astype(np.float64)
    m32, m64 = three_iterations_from_one_start(
        X64, (GaussianMixture, X32), (GaussianMixture, X64)
    )
    np.testing.assert_allclose(m32.lower_bound_, m64.lower_bound_, rtol=1e-9)
    # The thinnest direction's variance, to the rounding of float32 entries.
    values, vectors = np.linalg.eigh(m64.covariances_[0])
    thinnest = vectors[:, 0] @ m32.covariances_[0].astype(np.float64) @ vectors[:, 0]
    eps32 = float(np.finfo(np.float32).eps)
    assert abs(thinnest / values[0] - 1) < eps32 * values[-1] / values[0]


@pytest.mark.parametrize("condition", [1e11, 1e12])
def test_float64_correlated_features_fit_like_sklearn(condition):
    """float64 rows of one component whose features correlate (condition
    1e11, 1e12, about its own mean): the expansion's lower bound was 3e-8
    and 1.5e-7 off scikit-learn's (which is within 6e-10 of the exact value
    at 1e12), past the 1e-8 promised; such rows get exact differences."""
    X = correlated(condition)
    ours, theirs = three_iterations_from_one_start(
        X, (GaussianMixture, X), (SkGaussianMixture, X)
    )
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=5e-9)
    params = _params(ours)
    assert _em._working_expansion(X.dtype, params, get_covariance("full")) is None


def test_float64_moderately_correlated_features_stay_expanded():
    """Up to condition 1e8 (and well beyond in most data) float64 rows keep
    the expanded E-step, within 4e-11 of scikit-learn's lower bound."""
    X = correlated(1e8)
    fit = GaussianMixture(1, random_state=0).fit(X)
    working = _em._working_expansion(X.dtype, _params(fit), get_covariance("full"))
    assert working is not None and working.weights.dtype == np.float64


def test_float32_predictions_keep_each_rows_density():
    """Each row's log-density is an output of its own: for float32 rows of
    correlated features (condition 1e4) the float32 expansion was up to
    6e-4 off in some rows (a density 6e-4 off, relative); predictions are
    worked on in float64 there, and stay float32."""
    X32 = correlated(1e4, n_samples=50_000).astype(np.float32)
    model = GaussianMixture(1, random_state=0).fit(X32)
    scores = model.score_samples(X32)
    assert scores.dtype == np.float32
    expected = model.score_samples(X32.astype(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    proba = model.predict_proba(X32)
    assert proba.dtype == np.float32


def test_float32_well_conditioned_rows_stay_in_float32():
    """The conditioning check costs nothing where features do not correlate
    much: the benchmark-like blobs, and a condition of 1e3, stay float32."""
    strategy = get_covariance("full")
    for X in (make_elliptical_blobs(3000, 3, 5, random_state=0)[0], correlated(1e3)):
        k = 3 if X.shape[1] == 5 else 1
        fit = GaussianMixture(k, random_state=0).fit(X)
        params = _em.Params(
            fit.weights_, fit.means_, fit.covariances_, fit.precisions_cholesky_
        )
        working = _em._working_expansion(np.dtype(np.float32), params, strategy)
        assert working is not None and working.weights.dtype == np.float32


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_conditioning_ignores_scales_and_sees_correlations(covariance_type):
    """trace(S P S): the same for features in any units (but spherical's
    one variance); for full and tied between lambda_max(S P S) and D times
    it, and large where a component's features correlate; for diag the
    largest (C_ii + offset_i^2) / C_ii."""
    strategy = get_covariance(covariance_type)
    X = correlated(1e4, n_features=3, seed=1, n_samples=3000)
    X[1500:] += 2.0
    fit = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    means, covariances = fit.means_, fit.covariances_
    centre = fit.weights_ @ means

    def conditioning(means, covariances, centre):
        factors = strategy.precision_cholesky(covariances)
        return strategy.conditioning(means, covariances, factors, centre)

    value = conditioning(means, covariances, centre)
    scales = np.array([1e-3, 1.0, 1e4])
    if covariance_type != "spherical":
        dense_type = covariance_type in ("full", "tied")
        rescaled = covariances * (np.outer(scales, scales) if dense_type else scales**2)
        assert conditioning(means * scales, rescaled, centre * scales) == (
            pytest.approx(value, rel=1e-6)
        )
    dense = strategy.dense(covariances, 2, 3)
    variances = np.diagonal(dense, axis1=1, axis2=2)
    spreads = variances + (means - centre) ** 2
    if covariance_type in ("full", "tied"):
        scaled = np.linalg.inv(dense) * np.sqrt(
            spreads[:, :, None] * spreads[:, None, :]
        )
        largest = np.max(np.linalg.eigvalsh(scaled)[:, -1])
        assert largest <= value * (1 + 1e-9) and value <= 3 * largest
        assert value > 1e3  # the correlated features
    else:
        assert value == pytest.approx(np.max(spreads / variances), rel=1e-12)


def _fit_with_workers(X, n_workers, covariance_type="full", dtype=np.float64):
    original = _parallel.max_workers
    original_values = _em._THREADED_MULTIPLY_ADDS
    _parallel.max_workers = lambda: n_workers
    _em._THREADED_MULTIPLY_ADDS = 0  # thread even these small chunks
    try:
        return GaussianMixture(
            3,
            covariance_type=covariance_type,
            tol=1e-10,
            max_iter=300,
            **start_params(X, 3, covariance_type),
        ).fit(X.astype(dtype))
    finally:
        _parallel.max_workers = original
        _em._THREADED_MULTIPLY_ADDS = original_values


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_threads_give_the_same_fit(covariance_type):
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(20_000, 4)) + 5 * k for k in range(3)])
    one = _fit_with_workers(X, 1, covariance_type)
    three = _fit_with_workers(X, 3, covariance_type)
    again = _fit_with_workers(X, 3, covariance_type)
    for name in ("means_", "covariances_", "weights_", "lower_bound_"):
        # Chunks are summed in chunk order whatever the threads do: bit for
        # bit the same with any number of workers.
        np.testing.assert_array_equal(getattr(three, name), getattr(one, name))
        np.testing.assert_array_equal(getattr(three, name), getattr(again, name))
    assert three.n_iter_ == one.n_iter_


@pytest.mark.parametrize("kernels", [False, True], ids=["numpy", "compiled"])
def test_chunks_of_few_rows_are_taken_a_few_at_a_time(monkeypatch, kernels):
    """Chunks of under _TASK_ROWS rows are taken a few at a time by one
    worker, their statistics summed into one array (at least _LEAST_TASKS
    tasks): the statistics of chunk by chunk, to rounding, and the same bit
    for bit with one worker or three."""
    if kernels:
        pytest.importorskip("numba")
        if _kernels._load() is None:
            pytest.skip(f"{_kernels.ENV_VAR}=0")
        monkeypatch.setattr(_kernels, "_MIN_VALUES", 0)
    else:
        monkeypatch.setattr(_kernels, "_module", None)
    assert _em._chunks_per_task(781, 256) == 8  # case (d) of bench_em.py
    assert _em._chunks_per_task(40, 256) == 2  # at least 16 tasks
    assert _em._chunks_per_task(10, 256) == 1
    assert _em._chunks_per_task(330, 3096) == 1  # case (b)
    assert _em._chunks_per_task(100, 2000) == 2
    X = np.random.default_rng(5).normal(size=(20_003, 6))
    strategy = get_covariance("full")
    expansion = _em._expansion(X.dtype, _rough_params(X, "full"), strategy)
    assert expansion is not None
    monkeypatch.setattr(_em, "_THREADED_MULTIPLY_ADDS", 0)

    def statistics(task_rows, n_workers):
        monkeypatch.setattr(_em, "_TASK_ROWS", task_rows)
        monkeypatch.setattr(_parallel, "max_workers", lambda: n_workers)
        return _em._expanded_e_step(X, None, expansion, strategy, 256)

    alone = statistics(1, 1)
    grouped = statistics(2048, 1)  # 79 chunks, 4 a task (16 tasks at least)
    threaded = statistics(2048, 3)
    for name in ("resp_sum", "diff_sum", "scatter"):
        np.testing.assert_allclose(
            getattr(grouped, name), getattr(alone, name), rtol=1e-12, atol=1e-9
        )
        np.testing.assert_array_equal(getattr(threaded, name), getattr(grouped, name))
    assert grouped.loglik_sum == pytest.approx(alone.loglik_sum, rel=1e-13)
    assert threaded.loglik_sum == grouped.loglik_sum
    assert grouped.worst_loglik == alone.worst_loglik
    np.testing.assert_array_equal(grouped.worst_sample, alone.worst_sample)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("groups", "n"), [(1, 300), (5, 300), (5, 303), (7, 4), (28, 3064)]
)
def test_the_statistics_product_in_groups_of_columns(dtype, groups, n):
    """phi @ resp.T taken as one batched product over groups of columns
    (so that NumPy releases the GIL) and the columns left over: the same
    product, for column views of wider arrays as the chunks pass them."""
    rng = np.random.default_rng(groups)
    phi = rng.normal(size=(6, n + 5)).astype(dtype)
    resp = rng.uniform(size=(3, n + 5)).astype(dtype)
    product = _em._grouped_product(phi[:, 2 : n + 2], resp[:, 2 : n + 2], groups)
    expected = phi[:, 2 : n + 2].astype(float) @ resp[:, 2 : n + 2].T.astype(float)
    assert product.shape == (6, 3)
    rtol = 20 * np.finfo(dtype).eps * np.sqrt(n)
    np.testing.assert_allclose(product, expected, rtol=rtol, atol=rtol)


def test_statistics_products_are_grouped_only_where_threads_share_them():
    """Groups where the NumPy path runs threaded chunks whose product would
    keep the GIL (F x K <= 500); one product otherwise, or with the
    compiled kernels (which call BLAS without the GIL); and threaded
    E-steps of every kind give the statistics of an unthreaded one."""
    X = np.random.default_rng(3).normal(size=(3000, 4))
    params = _rough_params(X, "full")
    strategy = get_covariance("full")
    expansion = _em._expansion(X.dtype, params, strategy)
    assert expansion is not None  # F x K = 15 x 3
    assert _em._ChunkBuffers(expansion, 4, 1000).sums_groups == 1
    threaded = _em._ChunkBuffers(expansion, 4, 1000, threaded=True)
    assert threaded.sums_groups == 500 // 45 + 1
    X32 = np.random.default_rng(4).normal(size=(3000, 32))
    wide = _em._expansion(X.dtype, _rough_params(X32, "full"), strategy)
    assert wide is not None  # F x K = 561 x 3
    assert _em._ChunkBuffers(wide, 32, 1000, threaded=True).sums_groups == 1
    serial = _em._expanded_e_step(X, None, expansion, strategy, 1000)
    original = _em._THREADED_MULTIPLY_ADDS
    try:
        _em._THREADED_MULTIPLY_ADDS = 0
        grouped = _em._expanded_e_step(X, None, expansion, strategy, 1000)
    finally:
        _em._THREADED_MULTIPLY_ADDS = original
    for name in ("resp_sum", "diff_sum", "scatter"):
        np.testing.assert_allclose(
            getattr(grouped, name), getattr(serial, name), rtol=1e-12, atol=1e-9
        )


@pytest.mark.parametrize("n_workers", [1, 2])
def test_chunks_run_with_a_small_ufunc_buffer_and_the_callers_is_restored(n_workers):
    # NumPy's default buffer (8192) slows the E-step's 2-D passes on chunks
    # of at most 4096 rows; chunk workers use _UFUNC_BUFFER instead.
    seen = _parallel.reduce_chunks(
        lambda: None,
        lambda _, rows: [np.getbufsize()],
        [slice(0, 1), slice(1, 2), slice(2, 3)],
        lambda a, b: a + b,
        n_workers=n_workers,
    )
    assert seen == [_parallel._UFUNC_BUFFER] * 3
    previous = np.setbufsize(4096)
    try:
        _parallel.reduce_chunks(
            lambda: None, lambda _, rows: 0, [slice(0, 1)], max, n_workers=1
        )
        assert np.getbufsize() == 4096
    finally:
        np.setbufsize(previous)


def _sum_in_two_workers(n_chunks=40):
    return _parallel.reduce_chunks(
        lambda: None,
        lambda _, rows: rows.start,
        [slice(i, i + 1) for i in range(n_chunks)],
        operator.add,
        n_workers=2,
    )


def _child_sums(queue):
    queue.put(_sum_in_two_workers())


def test_worker_threads_are_kept_and_made_again_after_a_fork():
    assert _sum_in_two_workers() == sum(range(40))
    pool = _parallel._pool
    assert _sum_in_two_workers() == sum(range(40))
    assert _parallel._pool is pool  # kept between calls
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_sums, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("reduce_chunks in a forked child hung on its parent's pool")
    assert child.exitcode == 0 and queue.get(timeout=5) == sum(range(40))


def test_work_from_a_worker_thread_runs_in_place():
    """A chunk function that itself reduces over chunks: no waiting on the
    pool its caller occupies (which could deadlock)."""
    inner = []

    def chunk(_, rows):
        inner.append(threading.current_thread().name)
        return _sum_in_two_workers(4)

    total = _parallel.reduce_chunks(
        lambda: None, chunk, [slice(0, 1), slice(1, 2)], operator.add, n_workers=2
    )
    assert total == 2 * sum(range(4))
    assert all(name.startswith("gaussmix") for name in inner)


def test_a_failing_chunk_stops_every_worker_before_the_error_is_raised():
    started = []

    def chunk(_, rows):
        started.append(rows.start)
        if rows.start == 3:
            raise RuntimeError("chunk 3 failed")
        time.sleep(0.01)
        return 0

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        _parallel.reduce_chunks(
            lambda: None, chunk, [slice(i, i + 1) for i in range(200)], max, n_workers=2
        )
    count = len(started)
    time.sleep(0.1)
    assert len(started) == count < 20  # none still running, the rest skipped


def test_results_waiting_for_a_held_up_chunk_are_bounded():
    """A worker held up on one chunk: the others go on until as many results
    as there are workers wait for it, then wait too, so the memory those
    results hold stays bounded; the total is still the ordered sum."""
    done = threading.Event()
    started_while_held = []

    def chunk(_, rows):
        if rows.start == 0:
            time.sleep(0.3)
            done.set()
        elif not done.is_set():
            started_while_held.append(rows.start)
        return [rows.start]

    total = _parallel.reduce_chunks(
        lambda: None, chunk, [slice(i, i + 1) for i in range(40)], operator.add, 2
    )
    assert total == list(range(40))
    assert started_while_held == [1, 2]  # _MAX_PENDING (1) per worker (2)


def test_small_expanded_chunks_run_on_one_thread(monkeypatch):
    # Chunks of few multiply-adds are faster on one thread than two (the
    # GIL); large ones are shared out (gaussmix._em.expanded_chunks).
    seen = []
    original = _em.reduce_chunks

    def spy(make_state, *args, n_workers=None, **kwargs):
        if isinstance(make_state(), _em._ChunkBuffers):  # an expanded E-step
            seen.append(n_workers)
        return original(make_state, *args, n_workers=n_workers, **kwargs)

    monkeypatch.setattr(_em, "reduce_chunks", spy)
    rng = np.random.default_rng(0)
    small = rng.normal(size=(20_000, 2))
    large = rng.normal(size=(300_000, 8))
    for X, k, expected in ((small, 4, 1), (large, 4, 1), (large, 8, None)):
        seen.clear()
        model = GaussianMixture(k, max_iter=2, tol=0.0, **start_params(X, k, "full"))
        with pytest.warns(ConvergenceWarning):  # stopped early, on purpose
            model.fit(X)
        assert seen and all(workers == expected for workers in seen), (X.shape, k)


def test_one_worker_sums_its_chunks_in_one_task_bit_for_bit(monkeypatch):
    """Chunks one to a task and one worker: the E-step is one task summing
    chunk after chunk into one array, the same terms in the same order as
    one-chunk tasks folded in turn, bit for bit."""
    seen = []
    original = _em.reduce_chunks

    def spy(make_state, process, chunks, add, n_workers=None):
        seen.append((len(chunks), n_workers))
        return original(make_state, process, chunks, add, n_workers=n_workers)

    X = np.random.default_rng(4).normal(size=(40_000, 2))
    strategy = get_covariance("full")
    expansion = _em._expansion(X.dtype, _rough_params(X, "full"), strategy)
    assert expansion is not None
    assert _em._chunks_per_task(16, 2560) == 1
    monkeypatch.setattr(_em, "reduce_chunks", spy)
    one_task = _em._expanded_e_step(X, None, expansion, strategy, 2560)
    assert seen == [(1, 1)]
    # One-chunk tasks, folded in chunk order.
    buffers = _em._buffer_factory(
        X, expansion, 2560, _em._e_step_kernels(X, expansion)
    )()
    folded = None
    for rows in _em._chunks(len(X), 2560):
        part = _em._expanded_chunk_statistics(
            X, None, expansion, strategy, buffers, rows, _em._expanded_sums(expansion)
        )
        folded = part if folded is None else _em._fold(folded, part)
    expected = strategy.from_expanded(folded.sums.T, X.shape[1])
    for got, want in zip(
        (one_task.resp_sum, one_task.diff_sum, one_task.scatter), expected, strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert one_task.loglik_sum == folded.loglik_sum
    assert one_task.worst_loglik == folded.worst[0]


def test_small_exact_chunks_run_on_one_thread(monkeypatch):
    """The exact E-step's chunks are shared among threads by the same rule as
    the expanded one's, on the same measure of work; either way its sums are
    the same bit for bit (folded in chunk order)."""
    seen = []
    original, rule = _em.reduce_chunks, _em._exact_workers

    def spy(make_state, process, chunks, add, n_workers=None):
        seen.append(n_workers)
        return original(make_state, process, chunks, add, n_workers=n_workers)

    monkeypatch.setattr(_em, "reduce_chunks", spy)
    rng = np.random.default_rng(0)
    strategy = get_covariance("full")
    for n, d, k, expected in ((30_000, 2, 3, 1), (6_000, 48, 24, None)):
        X = rng.normal(size=(n, d))
        covariances = np.repeat(np.eye(d)[None], k, axis=0)
        params = Params(
            np.full(k, 1.0 / k),
            X[:k].copy(),
            covariances,
            strategy.precision_cholesky(covariances),
        )
        seen.clear()
        stats = e_step(X, None, params, strategy, exact=True)
        assert seen == [expected], (n, d, k)
        swapped = 2 if expected == 1 else 1
        monkeypatch.setattr(_em, "_exact_workers", lambda *_, w=swapped: w)
        other = e_step(X, None, params, strategy, exact=True)
        monkeypatch.setattr(_em, "_exact_workers", rule)
        assert seen[-1] == swapped
        for name in ("resp_sum", "diff_sum", "scatter", "loglik_sum"):
            np.testing.assert_array_equal(getattr(stats, name), getattr(other, name))


def _e_step_forms(monkeypatch, X, k, **kwargs):
    """A fit of ``X`` from a fixed start and the forms of its E-steps: "x"
    exact, "." expanded."""
    import gaussmix._source as source_module

    steps = []
    real_step = source_module.e_step

    def recorded_step(X, weights, params, strategy, chunk_size=None, exact=False):
        steps.append("x" if exact else ".")
        return real_step(X, weights, params, strategy, chunk_size, exact)

    monkeypatch.setattr(source_module, "e_step", recorded_step)
    model = GaussianMixture(k, tol=1e-10, max_iter=300, **kwargs).fit(X)
    monkeypatch.setattr(source_module, "e_step", real_step)
    return model, "".join(steps)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_few_rows_take_exact_e_steps_from_the_first(
    monkeypatch, faithful, covariance_type
):
    """On few rows the exact E-step is the quicker (the expansion's fixed
    costs outweigh it): a fit of Old Faithful takes it from the first
    E-step, gives scikit-learn's fit from the same start, and the expanded
    fit's to rounding; more rows (or components) are expanded."""
    k = 3
    assert _em.exact_is_cheaper(len(faithful), k)
    init = start_params(faithful, k, covariance_type)
    kwargs = dict(covariance_type=covariance_type, **init)
    exact, forms = _e_step_forms(monkeypatch, faithful, k, **kwargs)
    assert forms == "x" * len(forms) and exact.converged_
    theirs = SkGaussianMixture(k, tol=1e-10, max_iter=300, **kwargs).fit(faithful)
    np.testing.assert_allclose(exact.lower_bound_, theirs.lower_bound_, rtol=1e-12)
    monkeypatch.setattr(_em, "_EXACT_CHEAPER", 0)
    expanded, forms = _e_step_forms(monkeypatch, faithful, k, **kwargs)
    assert forms == "." * len(forms)
    assert expanded.n_iter_ == exact.n_iter_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            getattr(exact, name), getattr(expanded, name), rtol=1e-10, err_msg=name
        )
    monkeypatch.undo()
    more = np.vstack([faithful] * 3)
    assert not _em.exact_is_cheaper(len(more), k)
    _, forms = _e_step_forms(monkeypatch, more, k, **kwargs)
    assert forms.startswith("...")
    # Chunks of rows (Dask, files) are expanded whatever their size.
    _, forms = _e_step_forms(monkeypatch, Chunks([faithful[:136], faithful[136:]]), k)
    assert forms.startswith("...")


def test_expanded_chunks_keep_buffers_a_small_share_of_the_data():
    """Every worker's buffers together: at most a sixth of the input, unless
    that would be fewer than 256 rows per chunk (float32: 128) or under
    128 KiB."""
    usable = _parallel.usable_cpus()
    for n, d, k in [
        (100_000, 2, 3),
        (1_000_000, 16, 16),
        (100_000, 16, 16),
        (2_000_000, 4, 8),
        (10_000, 2, 3),
        (20_000, 64, 32),
    ]:
        n_expanded = 1 + d + d * (d + 1) // 2
        for itemsize in (4, 8):
            data_bytes = n * d * itemsize
            rows, workers = _em.expanded_chunks(n_expanded, k, itemsize, data_bytes)
            buffers = rows * (n_expanded + k + 4) * itemsize
            buffers *= usable if workers is None else 1
            allowed = max(data_bytes / 6, 2**17, 256 * buffers / rows)
            fewest = 256 * itemsize // 8
            assert fewest <= rows and buffers <= allowed, (n, d, k, itemsize)
            assert (rows * itemsize) % 4096 != 0 and rows % 8 == 0


def test_float32_chunks_of_wide_products_are_shorter():
    """Where the multiply-adds per product cap the chunks (case (d)'s 2145
    features and 32 components), float32 chunks hold half the rows, down
    to 128; float64 keeps 256. Where they do not ((a)'s shape), the
    dtypes' chunks are sized by the buffers' share alike."""
    d = (2145, 32, 200_000 * 64)
    assert _em.expanded_chunks(*d[:2], 8, d[2] * 8)[0] == 256
    assert _em.expanded_chunks(*d[:2], 4, d[2] * 4)[0] == 128
    a = (6, 3, 100_000 * 2)
    rows64 = _em.expanded_chunks(*a[:2], 8, a[2] * 8)[0]
    rows32 = _em.expanded_chunks(*a[:2], 4, a[2] * 4)[0]
    assert abs(rows64 - rows32) <= 8


def test_limited_blas_means_one_worker():
    with threadpool_limits(1, user_api="blas"):
        assert _parallel.max_workers() == 1
    assert _parallel.max_workers() >= 1


def test_blas_is_single_threaded_during_a_fit_and_restored_after(blobs):
    seen = []

    def record(*_):
        from threadpoolctl import threadpool_info

        seen.append(
            [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        )

    before = [
        i["num_threads"]
        for i in __import__("threadpoolctl").threadpool_info()
        if i["user_api"] == "blas"
    ]
    original = _em.m_step

    def spying_m_step(*args, **kwargs):
        record()
        return original(*args, **kwargs)

    _em.m_step = spying_m_step
    try:
        GaussianMixture(3, random_state=0).fit(blobs)
    finally:
        _em.m_step = original
    assert seen and all(threads == [1] * len(threads) for threads in seen)
    after = [
        i["num_threads"]
        for i in __import__("threadpoolctl").threadpool_info()
        if i["user_api"] == "blas"
    ]
    assert after == before


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_label_statistics_equal_one_hot_responsibilities(blobs, covariance_type):
    strategy = get_covariance(covariance_type)
    rng = np.random.RandomState(3)
    labels = rng.randint(-1, 3, len(blobs))
    weights = rng.uniform(0, 2, len(blobs))
    shift = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-4.0, 5.0, 1.0]])

    def one_hot(rows):
        return (labels[rows, None] == np.arange(3)[None, :]).astype(float)

    by_labels = label_statistics(blobs, weights, labels, shift, strategy)
    by_resp = resp_statistics(blobs, weights, one_hot, shift, strategy)
    for field in ("resp_sum", "diff_sum", "scatter"):
        np.testing.assert_allclose(
            getattr(by_labels, field), getattr(by_resp, field), rtol=1e-12, atol=1e-12
        )
    assert by_labels.weight_sum == pytest.approx(by_resp.weight_sum, rel=1e-14)


def test_large_data_starts_from_kmeans_on_a_sample():
    """Above KMEANS_SAMPLE rows k-means sees a sample, then labels every row.

    The start differs from scikit-learn's (which runs k-means on every row),
    but on clustered data both reach the same optimum.
    """
    rng = np.random.RandomState(0)
    n = _init.KMEANS_SAMPLE + 5000
    centres = rng.normal(scale=6.0, size=(4, 3))
    X = centres[rng.randint(4, size=n)] + rng.normal(size=(n, 3))
    ours = GaussianMixture(4, random_state=0, tol=1e-6).fit(X)
    theirs = SkGaussianMixture(4, random_state=0, tol=1e-6).fit(X)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-6)
    order = np.lexsort(ours.means_.T)
    their_order = np.lexsort(theirs.means_.T)
    np.testing.assert_allclose(
        ours.means_[order], theirs.means_[their_order], rtol=1e-4, atol=1e-4
    )


def test_distinct_integers_are_a_uniform_sample_in_little_memory():
    import tracemalloc

    from scipy.stats import chisquare

    generator = np.random.default_rng(0)
    counts = np.zeros(20)
    pairs = np.zeros((20, 20))
    for _ in range(4000):
        chosen = _init.distinct_integers(generator, 20, 5)
        assert chosen.size == 5 and np.all(np.diff(chosen) > 0)
        assert 0 <= chosen[0] and chosen[-1] < 20
        counts[chosen] += 1
        pairs[np.ix_(chosen, chosen)] += 1
    # Every value, and every pair of values, equally often.
    assert chisquare(counts).pvalue > 1e-3
    upper = pairs[np.triu_indices(20, 1)]
    assert chisquare(upper).pvalue > 1e-3
    for n, size in [(7, 7), (7, 0), (10**6, 62_500)]:
        tracemalloc.start()
        chosen = _init.distinct_integers(generator, n, size)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert chosen.size == size and np.unique(chosen).size == size
        assert peak < 64 * size + 4096  # O(size), not 8 bytes per row of n
    with pytest.raises(ValueError, match="distinct"):
        _init.distinct_integers(generator, 5, 6)


def test_kmeans_sample_is_sized_by_memory():
    """At most a sixteenth of the rows and 65,536; fewer where the rows are
    narrow, so that k-means's float64 copies stay a sixth of a float32
    input (and a twelfth of a float64 one)."""
    state = np.random.RandomState(0)
    for n, n_features, k, expected in [
        (100_000, 2, 5, 1388),  # 1/6 * 100000 * 8 / (2 * 16 + 64)
        (1_000_000, 16, 5, 33_333),  # 1/6 * 1e6 * 64 / (2 * 128 + 64)
        (2_000_000, 16, 5, 2**16),
        (500_000, 64, 5, 19_607),  # 1/6 * 5e5 * 256 / (2 * 512 + 64)
        (70_000, 1, 40, 64 * 40),  # at least 64 per component
    ]:
        rows = _init.sample_rows(None, n, k, state, n_features)
        assert rows.size == expected, (n, n_features)
        assert np.all(np.diff(rows) > 0) and rows[-1] < n
    assert _init.sample_rows(None, _init.KMEANS_SAMPLE, 5, state, 2) is None


def test_float32_and_float64_default_fits_start_from_the_same_sample():
    """Above 65,536 rows k-means runs on a sample sized by memory, counted
    in float32 rows whatever the dtype, so both dtypes draw the same rows
    and reach the same fit. (Sized by each dtype's own rows, this data's
    float32 fit ended at another optimum, its means 2 apart.)"""
    X = _anisotropic_mixture(100_000, 3, 5, seed=1)
    state = np.random.RandomState(0)
    sample = _init.sample_rows(None, X.shape[0], 5, state, X.shape[1])
    assert sample.size < X.shape[0] // 16  # sized by memory
    m64 = GaussianMixture(5, random_state=0).fit(X)
    m32 = GaussianMixture(5, random_state=0).fit(X.astype(np.float32))
    assert m32.n_iter_ == m64.n_iter_
    np.testing.assert_allclose(m32.lower_bound_, m64.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(m32.means_, m64.means_, atol=1e-4)
    np.testing.assert_allclose(m32.covariances_, m64.covariances_, atol=1e-4)


@pytest.mark.parametrize("method", ["kmeans", "k-means++"])
def test_float32_rows_start_where_float64_rows_do(method):
    """k-means (and k-means++) run on the sample in float64, whatever the
    rows' dtype: on the float32 sample of this data scikit-learn's k-means
    stopped at other centres, 1.2e-5 apart (relative). The starts now
    differ by the rows' rounding only."""
    X = make_elliptical_blobs(400_000, 8, 4, separation=3.0, random_state=4)[0]
    means = {}
    for dtype in (np.float64, np.float32):
        stats = _init.initial_statistics(
            ArraySource(X.astype(dtype), None),
            8,
            method,
            np.random.RandomState(0),
            get_covariance("full"),
        )
        means[dtype] = stats.shift + stats.diff_sum / stats.resp_sum[:, None]
    gap = np.max(np.abs(means[np.float32] - means[np.float64]))
    assert gap < 1e-6 * np.max(np.abs(means[np.float64]))


@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_float32_starts_keep_the_thinnest_direction(method):
    """The start's statistics (of labels, or of random responsibilities)
    are summed in float64 for float32 rows too: in float32 the covariance of
    these correlated features (condition 1e9) lost its thinnest direction
    (5e5 times its size off), and the default float32 fit ended 1.9e-3 from
    the float64 one in lower bound."""
    X32 = correlated(1e9, 5, seed=1, n_samples=30_000, clusters=3).astype(np.float32)
    strategy = get_covariance("full")
    starts = {}
    for rows in (X32, X32.astype(np.float64)):
        stats = _init.initial_statistics(
            ArraySource(rows, None), 3, method, np.random.RandomState(0), strategy
        )
        starts[rows.dtype] = _em.m_step(stats, strategy, 0.0, np.zeros(5), 1e-16)[0]
    assert_thinnest_directions_kept(
        starts[np.dtype(np.float32)].covariances,
        starts[np.dtype(np.float64)].covariances,
        rel=1e-5,
    )


def test_sampled_kmeans_uses_only_positive_weights():
    rng = np.random.RandomState(1)
    n = _init.KMEANS_SAMPLE + 1000
    X = rng.normal(size=(n, 2))
    X[:500] += 1000.0  # these rows weigh nothing
    weights = np.ones(n)
    weights[:500] = 0.0
    source = ArraySource(X, weights)
    stats = _init.initial_statistics(
        source, 3, "kmeans", np.random.RandomState(0), get_covariance("full")
    )
    means = stats.shift + stats.diff_sum / stats.resp_sum[:, None]
    assert np.all(np.abs(stats.shift) < 100.0)
    assert np.all(np.abs(means) < 100.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "n, n_features, n_components",
    [(600_000, 8, 4), (100_000, 2, 3)],  # the second: case (a), 1.5 MiB
)
def test_extra_memory_of_a_default_fit_is_a_small_share_of_the_input(
    n, n_features, n_components, dtype
):
    """No N x K x D, N x D or N x F temporaries: the fit's extra peak memory
    (the sampled k-means start included) stays under a quarter of the
    input's size, and the input is unchanged (k-means centres its own copy
    of the sample in place).

    The compiled kernels, where numba is installed, are compiled first:
    numba's compiler allocates some 35 MB once per process, whatever the
    data (see gaussmix._kernels)."""
    import tracemalloc

    _kernels.warm_up()
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, n_features)) * rng.uniform(0.5, 3.0, n_features)
    X += 6.0 * rng.randint(n_components, size=(n, 1))
    X = X.astype(dtype)  # float32: the same fixed costs, against half the bytes
    original = X.copy()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with pytest.warns(ConvergenceWarning):
            GaussianMixture(n_components, random_state=0, max_iter=3, tol=0).fit(X)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * X.nbytes, peak / X.nbytes
    np.testing.assert_array_equal(X, original)


def test_precision_cholesky_factors_and_the_component_that_fails():
    """Batched factorisation, triangular inverses: against a triangular
    solve per component, and the first failing component named."""
    import scipy.linalg

    from gaussmix._covariance import _precision_cholesky_factors

    rng = np.random.default_rng(0)
    factors = rng.normal(size=(6, 5, 5))
    covariances = factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(5)
    ours = _precision_cholesky_factors(covariances)
    for covariance, factor in zip(covariances, ours, strict=True):
        chol = np.linalg.cholesky(covariance)
        expected = scipy.linalg.solve_triangular(chol, np.eye(5), lower=True).T
        np.testing.assert_allclose(factor, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            factor @ factor.T, np.linalg.inv(covariance), rtol=1e-10, atol=1e-12
        )
    for k, broken in [(2, np.zeros((5, 5))), (4, np.full((5, 5), np.nan))]:
        bad = covariances.copy()
        bad[k] = broken
        bad[5] = -np.eye(5)  # a later failure is not the one named
        with pytest.raises(np.linalg.LinAlgError) as raised:
            _precision_cholesky_factors(bad)
        assert raised.value.component == k
