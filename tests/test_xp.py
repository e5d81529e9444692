"""Arrays of the array API standard (torch): the NumPy engine's answer, on the device.

Every fit here is compared with the NumPy fit of the same data from the same
start, to float64 rounding (rtol 1e-10). The tests run on torch's CPU device
everywhere and again on CUDA where a GPU is present (they skip without one).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("array_api_compat")

from gaussmix import DegenerateDataWarning, GaussianMixture  # noqa: E402
from gaussmix._covariance import get_covariance  # noqa: E402
from gaussmix._em import _expansion  # noqa: E402
from gaussmix._source import ArraySource  # noqa: E402
from gaussmix._xp import XpSource  # noqa: E402
from gaussmix.datasets import make_elliptical_blobs  # noqa: E402
from helpers import COVARIANCE_TYPES, start_params  # noqa: E402

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
