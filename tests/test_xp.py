"""Arrays of the array API standard (torch): the NumPy engine's answer, on the device.

Every fit here is compared with the NumPy fit of the same data from the same
start, to float64 rounding (rtol 1e-10). The tests run on torch's CPU device
everywhere and again on CUDA where a GPU is present (they skip without one).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

torch = pytest.importorskip("torch")
pytest.importorskip("array_api_compat")

from gaussmix import DegenerateDataWarning, GaussianMixture, _em, _init, _xp  # noqa: E402
from gaussmix._covariance import get_covariance  # noqa: E402
from gaussmix._em import _expansion  # noqa: E402
from gaussmix._source import ArraySource  # noqa: E402
from gaussmix._xp import XpSource  # noqa: E402
from gaussmix.datasets import make_elliptical_blobs  # noqa: E402
from helpers import (  # noqa: E402
    COVARIANCE_TYPES,
    assert_thinnest_directions_kept,
    correlated,
    start_params,
    three_iterations_from_one_start,
)

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA)]
RTOL = 1e-10
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _tensor(X: np.ndarray, device: str = "cpu") -> torch.Tensor:
    return torch.asarray(X, device=device)


def assert_same_fit(ours, reference, rtol=RTOL):
    """Fitted parameters agree to ``rtol`` of each attribute's largest value."""
    for name in FITTED:
        got, want = getattr(ours, name), getattr(reference, name)
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype, name
        atol = rtol * float(np.max(np.abs(want)))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    assert ours.n_iter_ == reference.n_iter_
    assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=rtol)


def assert_same_statistics(ours, reference, spread, rtol=RTOL):
    """Statistics agree to ``rtol`` of their natural size.

    Sums of differences from a shift near the mean nearly cancel, so they
    are compared in units of ``spread`` (the data's extent) times the total
    responsibility.
    """
    np.testing.assert_array_equal(ours.shift, reference.shift)
    total = float(np.sum(reference.resp_sum))
    sizes = {
        "resp_sum": total,
        "diff_sum": total * spread,
        "scatter": total * spread**2,
    }
    for name, size in sizes.items():
        want = getattr(reference, name)
        atol = rtol * size
        np.testing.assert_allclose(
            getattr(ours, name), want, rtol=rtol, atol=atol, err_msg=name
        )
    assert ours.weight_sum == pytest.approx(reference.weight_sum, rel=rtol)
    assert ours.loglik_sum == pytest.approx(reference.loglik_sum, rel=rtol)
    assert ours.worst_loglik == pytest.approx(reference.worst_loglik, rel=rtol)


def _spread(X: np.ndarray) -> float:
    return float(np.max(np.abs(X - X.mean(axis=0))))


def _far_apart(n_per_cluster: int = 300) -> np.ndarray:
    """Two unit-variance clusters 1e5 standard deviations apart."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2 * n_per_cluster, 2))
    X[n_per_cluster:] += 1e5
    return X


@pytest.fixture(autouse=True)
def array_api_path_on_the_cpu(monkeypatch):
    """The tests here run the array API path (XpSource) on torch's CPU
    device too, where by default the NumPy engine takes CPU tensors (see
    the tests of that at the end)."""
    monkeypatch.setattr(_xp, "_NUMPY_ON_CPU", False)


@pytest.fixture(scope="module")
def blobs_xp() -> np.ndarray:
    X, _ = make_elliptical_blobs(900, 3, 3, random_state=11)
    return X


# ------------------------------------------------------------- the pieces
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_quadratic_pairs_are_the_rows_expand_writes(covariance_type):
    strategy = get_covariance(covariance_type)
    n_features = 4
    z = np.random.default_rng(0).standard_normal((n_features, 5))
    quadratic = strategy.n_quadratic(n_features)
    phi = np.empty((quadratic + n_features + 1, 5))
    phi[quadratic : quadratic + n_features] = z
    strategy.expand(phi, n_features)
    first, second = strategy.quadratic_pairs(n_features)
    np.testing.assert_array_equal(phi[:quadratic], z[first] * z[second])


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("n_features", [1, 2, 5, 16])
def test_quadratic_pairs_are_the_upper_triangle_once_each(covariance_type, n_features):
    first, second = get_covariance(covariance_type).quadratic_pairs(n_features)
    pairs = sorted(zip(first.tolist(), second.tolist(), strict=True))
    upper_i, upper_j = np.triu_indices(n_features)
    assert pairs == sorted(zip(upper_i.tolist(), upper_j.tolist(), strict=True))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expanded_weights_take_a_centre_per_component(blobs_xp, covariance_type):
    model = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    model.fit(blobs_xp)
    strategy = get_covariance(covariance_type)
    params = model._params()
    log_weights = np.log(params.weights)
    centres = params.means + 0.25
    together = strategy.expanded_weights(
        log_weights, params.means, params.precisions_cholesky, centres
    )
    for k in range(3):
        alone = strategy.expanded_weights(
            log_weights, params.means, params.precisions_cholesky, centres[k]
        )
        np.testing.assert_allclose(together[k], alone[k], rtol=1e-14)


def _sources(X, weights=None, device="cpu"):
    """The same rows as a NumPy source and as a torch source."""
    return ArraySource(X, weights), XpSource(_tensor(X, device), weights)


def _params_of(X, covariance_type):
    model = GaussianMixture(
        3, covariance_type=covariance_type, max_iter=3, tol=0.0, random_state=0
    )
    with pytest.warns(Warning):  # stopped before converging, on purpose
        model.fit(X)
    return model._params()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exact", [False, True], ids=["expanded", "exact"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_statistics_equal_numpy(blobs_xp, covariance_type, exact, device):
    weights = np.random.default_rng(1).uniform(0.0, 2.0, blobs_xp.shape[0])
    weights[::7] = 0.0
    strategy = get_covariance(covariance_type)
    params = _params_of(blobs_xp, covariance_type)
    for w in (None, weights):
        host, xp = _sources(blobs_xp, w, device)
        want = host.e_step(params, strategy, exact=exact)
        got = xp.e_step(params, strategy, exact=exact)
        assert_same_statistics(got, want, _spread(blobs_xp))
        np.testing.assert_array_equal(got.worst_sample, want.worst_sample)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_moments_equal_numpy(dtype, device):
    rng = np.random.default_rng(6)
    X = (1e3 + rng.normal(size=(30_001, 3)) * [1.0, 1e-2, 1e2]).astype(dtype)
    weights = rng.uniform(0.0, 2.0, len(X)).astype(dtype)
    weights[:10_000] = 0.0
    for w in (None, weights):
        host, xp = _sources(X, w, device)
        got, want = xp.column_moments(), host.column_moments()
        assert got.weight == pytest.approx(want.weight, rel=1e-12)
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-13)
        np.testing.assert_allclose(got.variances, want.variances, rtol=1e-9)
        assert isinstance(got.variances, np.ndarray)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_initialisation_statistics_equal_numpy(blobs_xp, covariance_type, device):
    strategy = get_covariance(covariance_type)
    rng = np.random.default_rng(2)
    n = blobs_xp.shape[0]
    shift = blobs_xp[rng.choice(n, 3, replace=False)]
    resp = rng.uniform(size=(n, 3))
    labels = rng.integers(-1, 3, size=n).astype(np.int32)
    weights = rng.uniform(0.0, 2.0, n)
    for w in (None, weights):
        host, xp = _sources(blobs_xp, w, device)
        pairs = [
            (
                xp.resp_statistics(lambda rows: resp[rows], shift, strategy),
                host.resp_statistics(lambda rows: resp[rows], shift, strategy),
            ),
            (
                xp.label_statistics(labels, shift, strategy),
                host.label_statistics(labels, shift, strategy),
            ),
            (
                xp.nearest_statistics(shift, strategy),
                host.nearest_statistics(shift, strategy),
            ),
            (
                xp.seed_statistics(np.array([5, 2, 9]), strategy),
                host.seed_statistics(np.array([5, 2, 9]), strategy),
            ),
        ]
        for got, want in pairs:
            assert_same_statistics(got, want, _spread(blobs_xp))


# ----------------------------------------------------------- whole fits
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_fit_as_numpy(blobs_xp, covariance_type, device):
    start = start_params(blobs_xp, 3, covariance_type)
    reference = GaussianMixture(3, covariance_type=covariance_type, **start)
    ours = GaussianMixture(3, covariance_type=covariance_type, **start)
    assert_same_fit(ours.fit(_tensor(blobs_xp, device)), reference.fit(blobs_xp))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("init_params", INIT_METHODS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_random_state_same_fit_as_numpy(
    blobs_xp, covariance_type, init_params, device
):
    def model():
        return GaussianMixture(
            3,
            covariance_type=covariance_type,
            init_params=init_params,
            random_state=5,
        )

    assert_same_fit(model().fit(_tensor(blobs_xp, device)), model().fit(blobs_xp))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("init_params", "covariance_type"),
    [("kmeans", "full"), ("kmeans", "diag"), ("k-means++", "tied")],
)
def test_sampled_kmeans_start_same_fit_as_numpy(init_params, covariance_type, device):
    # Above 65536 rows k-means runs on a host sample and every row is then
    # labelled by its nearest centre on the device.
    X, _ = make_elliptical_blobs(70_000, 3, 4, random_state=2)

    def model():
        return GaussianMixture(
            4, covariance_type=covariance_type, init_params=init_params, random_state=0
        )

    assert_same_fit(model().fit(_tensor(X, device)), model().fit(X))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_components_far_apart_same_fit_as_numpy(covariance_type, device):
    X = _far_apart()
    reference = GaussianMixture(2, covariance_type=covariance_type, random_state=0)
    # Each cluster's variance is below 1e-8 of the data's: both paths say so.
    with pytest.warns(DegenerateDataWarning, match="collapsed"):
        reference.fit(X)
    # The expanded form about the mixture's mean is refused here, so the
    # per-component centring is what this test exercises.
    strategy = get_covariance(covariance_type)
    assert _expansion(X.dtype, reference._params(), strategy) is None
    ours = GaussianMixture(2, covariance_type=covariance_type, random_state=0)
    with pytest.warns(DegenerateDataWarning, match="collapsed"):
        ours.fit(_tensor(X, device))
    assert_same_fit(ours, reference)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_weight_as_tensor(blobs_xp, device):
    weights = np.random.default_rng(4).uniform(0.0, 3.0, blobs_xp.shape[0])
    weights[:50] = 0.0

    def model():
        return GaussianMixture(3, random_state=0)

    ours = model().fit(
        _tensor(blobs_xp, device), sample_weight=_tensor(weights, device)
    )
    assert_same_fit(ours, model().fit(blobs_xp, sample_weight=weights))
    from_numpy_weights = model().fit(_tensor(blobs_xp, device), sample_weight=weights)
    assert_same_fit(from_numpy_weights, ours)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_close_to_float64(blobs_xp, covariance_type, device):
    start = start_params(blobs_xp, 3, covariance_type)
    X32 = _tensor(blobs_xp.astype(np.float32), device)
    ours = GaussianMixture(3, covariance_type=covariance_type, **start).fit(X32)
    reference = GaussianMixture(3, covariance_type=covariance_type, **start)
    reference.fit(blobs_xp)
    for name in FITTED:
        got, want = getattr(ours, name), getattr(reference, name)
        assert got.dtype == np.float32
        atol = 1e-4 * float(np.max(np.abs(want)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=name)
    assert ours.score_samples(X32).dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_float32_correlated_features_worked_on_in_float64(monkeypatch, device):
    """One component whose 4 features correlate (condition 1e7): float32
    sums would lose its thinnest direction (lower bound 7e-4 off, scores
    up to 2 off), so float32 tensors are worked on in float64, as NumPy
    arrays are, in chunks half as long, and the outputs stay float32."""
    requested = []
    chunks = XpSource._chunks

    def spy(self, values_per_row):
        requested.append(values_per_row)
        return chunks(self, values_per_row)

    monkeypatch.setattr(XpSource, "_chunks", spy)
    X32 = correlated(1e7).astype(np.float32)
    X64 = X32.astype(np.float64)
    reference, ours, numpy_float32 = three_iterations_from_one_start(
        X64,
        (GaussianMixture, X64),
        (GaussianMixture, _tensor(X32, device)),
        (GaussianMixture, X32),
    )
    assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-9)
    scores = ours.score_samples(_tensor(X32, device))
    assert scores.dtype == torch.float32
    # Within what float32 parameters hold (2.7e-4 here, where the scores
    # are about 10), and as the NumPy engine scores float32 rows.
    expected = reference.score_samples(X64)
    np.testing.assert_allclose(
        scores.cpu().numpy(), expected, atol=1e-4 * np.max(np.abs(expected))
    )
    np.testing.assert_allclose(
        scores.cpu().numpy(), numpy_float32.score_samples(X32), rtol=1e-6
    )
    assert ours.predict_proba(_tensor(X32, device)).dtype == torch.float32
    # 15 features (quadratic, linear, constant), two values each, in float64.
    assert 2 * 2 * 15 in requested


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("condition", [1e11, 1e12])
def test_float64_correlated_features_fit_like_sklearn(condition, device):
    """float64 tensors of one component whose 4 features correlate
    (condition 1e11, 1e12): the expansion about the component's own mean
    had lower bounds 4.6e-10 and 4.4e-8 off scikit-learn's. Its
    log-densities are whitened instead, as the NumPy engine's exact E-step
    takes them, and the fit is the NumPy engine's."""
    X = correlated(condition)
    ours, numpy_fit, theirs = three_iterations_from_one_start(
        X,
        (GaussianMixture, _tensor(X, device)),
        (GaussianMixture, X),
        (SkGaussianMixture, X),
    )
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=5e-9)
    np.testing.assert_allclose(ours.lower_bound_, numpy_fit.lower_bound_, rtol=1e-10)
    # The fits' thinnest variances (1e-12 of the largest) hold about 1e-4
    # (eps times the condition), and so do their scores: each model scores
    # the rows as the NumPy engine does with it.
    scores = ours.score_samples(_tensor(X, device)).cpu().numpy()
    expected = ours.score_samples(X)
    np.testing.assert_allclose(scores, expected, atol=1e-9 * np.max(np.abs(expected)))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_predictions_keep_each_rows_density(device):
    """Each row's log-density is an output of its own: for float32 tensors
    of correlated features (condition 1e4), predicted in float32, some rows
    were 5e-4 off. As NumPy arrays are, they are worked on in float64
    there, and the outputs stay float32."""
    X32 = correlated(1e4, n_samples=50_000).astype(np.float32)
    model = GaussianMixture(1, random_state=0).fit(X32)
    scores = model.score_samples(_tensor(X32, device))
    assert scores.dtype == torch.float32
    expected = model.score_samples(X32.astype(np.float64))
    np.testing.assert_allclose(scores.cpu().numpy(), expected, rtol=0, atol=1e-5)
    assert model.predict_proba(_tensor(X32, device)).dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_float32_starts_keep_the_thinnest_direction(method, device):
    """The start's statistics (of labels, or of random responsibilities) of
    float32 tensors are summed in float64, as the NumPy engine sums them:
    in float32 the covariance of these correlated features (condition
    1e9) lost its thinnest direction."""
    X32 = correlated(1e9, 5, seed=1, n_samples=30_000, clusters=3).astype(np.float32)
    strategy = get_covariance("full")
    starts = []
    for source in (
        XpSource(_tensor(X32, device), None),
        ArraySource(X32.astype(np.float64), None),
    ):
        stats = _init.initial_statistics(
            source, 3, method, np.random.RandomState(0), strategy
        )
        starts.append(_em.m_step(stats, strategy, 0.0, np.zeros(5), 1e-16)[0])
    assert_thinnest_directions_kept(
        starts[0].covariances, starts[1].covariances, rel=1e-5
    )


# ----------------------------------------------------------- prediction
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_outputs_keep_namespace_device_and_dtype(blobs_xp, dtype, device):
    X = blobs_xp.astype(dtype)
    Xt = _tensor(X, device)
    model = GaussianMixture(3, random_state=0).fit(Xt)
    expected_device = Xt.device
    outputs = {
        "fit_predict": GaussianMixture(3, random_state=0).fit_predict(Xt),
        "predict": model.predict(Xt),
        "predict_proba": model.predict_proba(Xt),
        "score_samples": model.score_samples(Xt),
    }
    for name, out in outputs.items():
        assert isinstance(out, torch.Tensor), name
        assert out.device == expected_device, name
    assert outputs["predict"].dtype == torch.int64
    assert outputs["predict_proba"].dtype == Xt.dtype
    assert outputs["score_samples"].dtype == Xt.dtype
    assert torch.equal(outputs["fit_predict"], outputs["predict"])
    assert isinstance(model.score(Xt), float)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_on_one_predict_on_the_other(blobs_xp, covariance_type, device):
    Xt = _tensor(blobs_xp, device)
    on_torch = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    on_numpy = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    on_torch.fit(Xt)
    on_numpy.fit(blobs_xp)
    for model in (on_torch, on_numpy):
        np.testing.assert_array_equal(
            model.predict(Xt).cpu().numpy(), on_numpy.predict(blobs_xp)
        )
        np.testing.assert_allclose(
            model.predict_proba(Xt).cpu().numpy(),
            on_numpy.predict_proba(blobs_xp),
            rtol=1e-10,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            model.score_samples(Xt).cpu().numpy(),
            on_numpy.score_samples(blobs_xp),
            rtol=1e-10,
        )
    np.testing.assert_array_equal(
        on_torch.predict(blobs_xp), on_numpy.predict(blobs_xp)
    )


@pytest.mark.parametrize("device", DEVICES)
def test_prediction_far_apart_matches_numpy(device):
    X = _far_apart()
    model = GaussianMixture(2, covariance_type="full", random_state=0)
    with pytest.warns(DegenerateDataWarning, match="collapsed"):
        model.fit(X)
    np.testing.assert_allclose(
        model.score_samples(_tensor(X, device)).cpu().numpy(),
        model.score_samples(X),
        rtol=1e-10,
    )


def test_integer_and_grad_tracking_tensors_are_accepted(blobs_xp):
    rounded = np.round(blobs_xp * 10)
    reference = GaussianMixture(3, random_state=0).fit(rounded.astype(np.int64))
    as_int = GaussianMixture(3, random_state=0).fit(torch.asarray(rounded).long())
    assert_same_fit(as_int, reference)
    tracked = torch.asarray(blobs_xp).requires_grad_(True)
    model = GaussianMixture(3, random_state=0).fit(tracked)
    assert_same_fit(model, GaussianMixture(3, random_state=0).fit(blobs_xp))
    assert model.score_samples(tracked).shape == (blobs_xp.shape[0],)


@pytest.mark.parametrize("device", DEVICES)
def test_model_selection_on_the_device(blobs_xp, device, monkeypatch):
    """GaussianMixtureIC fits every candidate on the tensor's device: the
    criteria of the NumPy fits, predictions as tensors there, and on a GPU
    the rows never copied to the host as a whole (on torch's CPU device
    scikit-learn's k-means takes its sample on the host: here, every row)."""
    from gaussmix import GaussianMixtureIC

    kwargs = dict(
        n_components=[1, 2, 3], covariance_type=["full", "diag"], n_init=1,
        random_state=0,
    )  # fmt: skip
    reference = GaussianMixtureIC(**kwargs).fit(blobs_xp)
    X = _tensor(blobs_xp, device)
    to_host = torch.Tensor.__array__

    def small_to_host(tensor, *args, **kwargs):
        if tensor.numel() >= len(blobs_xp):
            pytest.fail(f"{tuple(tensor.shape)} values copied to the host")
        return to_host(tensor, *args, **kwargs)

    if device != "cpu":
        monkeypatch.setattr(torch.Tensor, "__array__", small_to_host)
    ours = GaussianMixtureIC(**kwargs).fit(X)
    labels, proba = ours.predict(X), ours.predict_proba(X)
    monkeypatch.undo()
    assert ours.best_params_ == reference.best_params_
    assert ours.n_features_in_ == 3
    for name in ("log_likelihood", "bic", "aic", "icl"):
        np.testing.assert_allclose(
            ours.criteria_[name], reference.criteria_[name], rtol=RTOL, err_msg=name
        )
    assert isinstance(labels, torch.Tensor) and labels.device.type == device
    assert proba.device.type == device
    np.testing.assert_array_equal(labels.cpu().numpy(), reference.predict(blobs_xp))
    np.testing.assert_allclose(
        proba.cpu().numpy(), reference.predict_proba(blobs_xp), rtol=1e-8, atol=1e-12
    )


@pytest.mark.parametrize("device", DEVICES)
def test_anomaly_detection_on_the_device(blobs_xp, device):
    """The detector's mixture and threshold on the tensor's device: the
    NumPy detector's threshold and labels, the labels a tensor there."""
    from gaussmix import GaussianMixtureAnomalyDetector

    kwargs = dict(n_components=3, contamination=0.05, random_state=0)
    reference = GaussianMixtureAnomalyDetector(**kwargs).fit(blobs_xp)
    X = _tensor(blobs_xp, device)
    ours = GaussianMixtureAnomalyDetector(**kwargs).fit(X)
    labels = ours.predict(X)
    np.testing.assert_allclose(ours.offset_, reference.offset_, rtol=RTOL)
    assert isinstance(labels, torch.Tensor) and labels.device.type == device
    np.testing.assert_array_equal(labels.cpu().numpy(), reference.predict(blobs_xp))
    decision = ours.decision_function(X)
    assert isinstance(decision, torch.Tensor)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixtureAn"):
        ours.predict(X[:, :2])


# -------------------------------------------------------------- bad input
def _with_value(value: float) -> torch.Tensor:
    X = torch.asarray(np.random.default_rng(0).standard_normal((20, 2)))
    X[3, 1] = value
    return X


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda m: m.fit(_with_value(np.nan)), "Input X contains NaN"),
        (lambda m: m.fit(_with_value(np.inf)), "Input X contains infinity"),
        (lambda m: m.fit(torch.zeros(10)), "Expected 2D array, got 1D array"),
        (lambda m: m.fit(torch.zeros((4, 2, 2))), "Expected 2D array, got 3D array"),
        (lambda m: m.fit(torch.zeros((1, 2))), "minimum of 2 is required"),
        (lambda m: m.fit(torch.zeros((5, 0))), "0 feature"),
        (lambda m: m.fit(torch.zeros((5, 2), dtype=torch.complex64)), "real numbers"),
        (
            lambda m: m.fit(torch.zeros((20, 2)), sample_weight=torch.ones(19)),
            r"sample_weight must have shape \(20,\)",
        ),
        (
            lambda m: m.fit(
                torch.zeros((20, 2)), sample_weight=-torch.ones(20, dtype=torch.float64)
            ),
            "negative",
        ),
    ],
    ids=[
        "nan",
        "inf",
        "1d",
        "3d",
        "one-sample",
        "no-features",
        "complex",
        "weights-shape",
        "negative-weights",
    ],
)
def test_bad_input_says_what_is_wrong(action, match):
    with pytest.raises(ValueError, match=match):
        action(GaussianMixture(2, random_state=0))


def test_bad_prediction_input_says_what_is_wrong(blobs_xp):
    model = GaussianMixture(3, random_state=0).fit(_tensor(blobs_xp))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture"):
        model.predict(torch.zeros((4, 2), dtype=torch.float64))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.score_samples(torch.full((4, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="Expected 2D array"):
        model.predict_proba(torch.zeros(3, dtype=torch.float64))


def test_statistics_do_not_depend_on_the_chunk_size(blobs_xp):
    strategy = get_covariance("full")
    params = _params_of(blobs_xp, "full")
    whole = XpSource(_tensor(blobs_xp), None)
    chunked = XpSource(_tensor(blobs_xp), None)
    chunked.budget = 300 * 8 * 2 * 10  # a few hundred rows per chunk
    assert len(list(chunked._chunks(2 * 10))) > 1
    for exact in (False, True):
        assert_same_statistics(
            chunked.e_step(params, strategy, exact),
            whole.e_step(params, strategy, exact),
            _spread(blobs_xp),
        )
    np.testing.assert_array_equal(
        chunked.labels(params, strategy).numpy(), whole.labels(params, strategy).numpy()
    )


# ------------------------------------------------------ k-means on the device
# Rows on an accelerator run the initialisation's k-means there
# (gaussmix._kmeans): scikit-learn's algorithm with scikit-learn's random
# draws. On the CPU these tests call it directly, or switch it on for a fit.
KMEANS_DATA = [
    pytest.param(2_000, 3, 2, 4, id="n2000-K4-D2"),
    pytest.param(5_000, 8, 16, 16, id="n5000-K16-D16"),
    pytest.param(3_000, 10, 6, 12, id="n3000-K12-D6-overlapping"),
]


def _kmeans_rows(n, clusters, features, seed, separation=6.0):
    X, _ = make_elliptical_blobs(
        n, clusters, features, separation=separation, random_state=seed
    )
    return X


def _next_draw(random_state):
    return random_state.randint(2**30)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("n", "clusters", "features", "k"), KMEANS_DATA)
def test_device_kmeans_is_sklearns_kmeans(n, clusters, features, k, weighted, device):
    from sklearn.cluster import KMeans

    from gaussmix._kmeans import kmeans

    X = _kmeans_rows(n, clusters, features, seed=k, separation=3.0)
    weights = np.random.default_rng(k).uniform(0.2, 3.0, n) if weighted else None
    for seed in range(3):
        ours_state = np.random.RandomState(seed)
        theirs_state = np.random.RandomState(seed)
        centres, labels = kmeans(
            _tensor(X, device),
            k,
            np.ones(n) if weights is None else weights,
            ours_state,
        )
        reference = KMeans(k, n_init=1, random_state=theirs_state)
        reference.fit(X, sample_weight=weights)
        np.testing.assert_array_equal(labels.cpu().numpy(), reference.labels_)
        scale = float(np.max(np.abs(reference.cluster_centers_)))
        np.testing.assert_allclose(
            centres, reference.cluster_centers_, rtol=0, atol=RTOL * scale
        )
        # The same random numbers were drawn: what follows is the same too.
        assert _next_draw(ours_state) == _next_draw(theirs_state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("n", "clusters", "features", "k"), KMEANS_DATA)
def test_device_kmeans_plusplus_is_sklearns(n, clusters, features, k, weighted, device):
    from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

    from gaussmix._kmeans import kmeans_plusplus

    X = _kmeans_rows(n, clusters, features, seed=k)
    weights = np.random.default_rng(k).uniform(0.2, 3.0, n) if weighted else None
    for seed in range(3):
        ours_state = np.random.RandomState(seed)
        theirs_state = np.random.RandomState(seed)
        ours = kmeans_plusplus(
            _tensor(X, device),
            k,
            np.ones(n) if weights is None else weights,
            ours_state,
        )
        _, theirs = sklearn_kmeans_plusplus(
            X, k, random_state=theirs_state, sample_weight=weights
        )
        np.testing.assert_array_equal(ours, theirs)
        assert _next_draw(ours_state) == _next_draw(theirs_state)


@pytest.mark.parametrize("device", DEVICES)
def test_device_kmeans_float32_finds_sklearns_partition(device):
    from sklearn.cluster import KMeans

    from gaussmix._kmeans import kmeans

    X = _kmeans_rows(4_000, 6, 5, seed=4).astype(np.float32)
    centres, labels = kmeans(
        _tensor(X, device), 6, np.ones(4_000, np.float32), np.random.RandomState(1)
    )
    reference = KMeans(6, n_init=1, random_state=np.random.RandomState(1)).fit(X)
    np.testing.assert_array_equal(labels.cpu().numpy(), reference.labels_)
    np.testing.assert_allclose(centres, reference.cluster_centers_, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_device_lloyd_step_relocates_empty_clusters_as_sklearn(device):
    # All rows are nearest the first of three identical centres, so two
    # clusters are empty and take the rows farthest from their centres.
    from sklearn.cluster import KMeans

    from gaussmix._kmeans import _lloyd_step

    X = np.array([-10.0, -9.5, -9, -8.5, -8, -1, 1, 9, 9.5, 10]).reshape(-1, 1)
    weights = np.linspace(0.5, 2.0, 10)
    init = np.array([[-10.0], [-10.0], [-10.0]])
    reference = KMeans(3, init=init, n_init=1, max_iter=1)
    reference.fit(X, sample_weight=weights)
    mean = X.mean(axis=0)
    _, new = _lloyd_step(
        array_namespace_of(X, device),
        _tensor(X - mean, device),
        _tensor(weights, device),
        weights,
        _tensor(init - mean, device),
    )
    np.testing.assert_allclose(
        new.cpu().numpy() + mean, reference.cluster_centers_, rtol=1e-12
    )
    # The empty clusters moved to the two rows farthest from -10.
    assert sorted(reference.cluster_centers_[1:, 0]) == pytest.approx([9.5, 10.0])


def array_namespace_of(X, device):
    from array_api_compat import array_namespace

    return array_namespace(_tensor(X, device))


@pytest.fixture
def kmeans_on_the_device(monkeypatch):
    """Fits of CPU tensors run the device k-means (as a GPU's would)."""
    import gaussmix._xp

    monkeypatch.setattr(gaussmix._xp, "_DEVICE_KMEANS_ON_CPU", True)


@pytest.mark.usefixtures("kmeans_on_the_device")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_fit_with_device_kmeans_same_as_numpy(
    blobs_xp, covariance_type, init_params, weighted
):
    weights = np.random.default_rng(0).uniform(0.0, 2.0, len(blobs_xp))
    weights = weights if weighted else None

    def model():
        return GaussianMixture(
            3, covariance_type=covariance_type, init_params=init_params, random_state=5
        )

    source = XpSource(_tensor(blobs_xp), None)
    assert source.device_kmeans
    ours = model().fit(_tensor(blobs_xp), sample_weight=weights)
    assert_same_fit(ours, model().fit(blobs_xp, sample_weight=weights))


@pytest.mark.usefixtures("kmeans_on_the_device")
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_sampled_device_kmeans_same_fit_as_numpy(init_params):
    # Above 65536 rows k-means runs on a sample, taken on the device.
    X, _ = make_elliptical_blobs(70_000, 3, 4, random_state=2)

    def model():
        return GaussianMixture(4, init_params=init_params, random_state=0)

    assert_same_fit(model().fit(_tensor(X)), model().fit(X))


def test_cpu_tensors_use_sklearns_kmeans_by_default(blobs_xp, monkeypatch):
    import gaussmix._kmeans

    def refuse(*args, **kwargs):
        raise AssertionError("the device k-means ran for a CPU tensor")

    monkeypatch.setattr(gaussmix._kmeans, "kmeans", refuse)
    monkeypatch.setattr(gaussmix._kmeans, "kmeans_plusplus", refuse)
    for init_params in ("kmeans", "k-means++"):
        GaussianMixture(3, init_params=init_params, random_state=0).fit(
            _tensor(blobs_xp)
        )


@pytest.mark.parametrize("device", DEVICES)
def test_device_kmeans_warns_as_sklearn_on_duplicated_points(device):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    from gaussmix._kmeans import kmeans

    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 20, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(2\)") as ours:
        _, labels = kmeans(_tensor(X, device), 3, np.ones(40), np.random.RandomState(0))
    with pytest.warns(ConvergenceWarning) as theirs:
        reference = KMeans(3, n_init=1, random_state=np.random.RandomState(0)).fit(X)
    assert str(ours[0].message) == str(theirs[0].message)
    np.testing.assert_array_equal(labels.cpu().numpy(), reference.labels_)


# ------------------------------------------- CPU tensors, the NumPy engine
@pytest.fixture
def numpy_on_the_cpu(monkeypatch):
    monkeypatch.setattr(_xp, "_NUMPY_ON_CPU", True)


@pytest.mark.usefixtures("numpy_on_the_cpu")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cpu_tensors_go_to_the_numpy_engine(blobs_xp, covariance_type, dtype):
    """A CPU tensor is fitted by the NumPy engine over a view of its memory
    (no copy): the NumPy fit bit for bit, and outputs as tensors of the
    input's dtype."""
    X = blobs_xp.astype(dtype)
    tensor = torch.from_numpy(X.copy())
    weights = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[0])
    source = _xp.fit_source(GaussianMixture(), tensor, weights)
    assert isinstance(source, ArraySource)
    assert np.shares_memory(source.X, tensor.numpy())
    kwargs = dict(covariance_type=covariance_type, random_state=0)
    ours = GaussianMixture(3, **kwargs).fit(tensor, sample_weight=weights)
    reference = GaussianMixture(3, **kwargs).fit(X, sample_weight=weights)
    for name in FITTED:
        np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name))
    assert ours.lower_bound_ == reference.lower_bound_
    outputs = {
        "predict": (ours.predict(tensor), reference.predict(X), torch.int64),
        "predict_proba": (ours.predict_proba(tensor), reference.predict_proba(X), None),
        "score_samples": (ours.score_samples(tensor), reference.score_samples(X), None),
    }
    for name, (got, want, dtype_wanted) in outputs.items():
        assert isinstance(got, torch.Tensor), name
        assert got.device.type == "cpu", name
        assert got.dtype == (dtype_wanted or tensor.dtype), name
        np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
    # The mean of the scores, taken by torch, adds them in its own order.
    rel = 8 * float(np.finfo(dtype).eps)
    assert ours.score(tensor) == pytest.approx(reference.score(X), rel=rel)


@pytest.mark.usefixtures("numpy_on_the_cpu")
def test_cpu_tensors_of_every_kind_are_read_in_place():
    """Strided, integer and grad-tracking CPU tensors take the NumPy
    engine too (the last two through the copy their checks make), with
    the answer of the same values as a NumPy array: to rounding, as the
    sums over strided rows are added in another order than over
    contiguous ones (bit for bit only by chance)."""
    X = make_elliptical_blobs(400, 2, 3, random_state=0)[0]
    reference = GaussianMixture(2, random_state=0).fit(X)
    strided = torch.from_numpy(np.ascontiguousarray(X.T)).T
    grad = torch.from_numpy(X.copy()).requires_grad_(True)
    for tensor in (strided, grad):
        ours = GaussianMixture(2, random_state=0).fit(tensor)
        assert isinstance(_xp.fit_source(GaussianMixture(), tensor, None), ArraySource)
        assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-13)
        assert isinstance(ours.predict(tensor), torch.Tensor)
    integers = torch.from_numpy(np.rint(X * 10).astype(np.int64))
    ours = GaussianMixture(2, random_state=0).fit(integers)
    theirs = GaussianMixture(2, random_state=0).fit(np.rint(X * 10))
    assert ours.lower_bound_ == theirs.lower_bound_


@pytest.mark.usefixtures("numpy_on_the_cpu")
@pytest.mark.parametrize("action", ["fit", "score_samples"])
def test_cpu_tensors_with_nan_say_so(blobs_xp, action):
    """The NumPy engine's path keeps the array API path's clear errors."""
    X = blobs_xp.copy()
    model = GaussianMixture(2, random_state=0).fit(X)
    X[5, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        getattr(model, action)(torch.from_numpy(X))
    X[5, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        getattr(model, action)(torch.from_numpy(X))
