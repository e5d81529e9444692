"""Bad inputs raise a clear ValueError, TypeError or NotFittedError.

Every case asserts the exception type and a fragment of the message that
says what is wrong. Where scikit-learn's GaussianMixture supports the same
call, it must raise the same exception type (gaussmix is a drop-in
replacement). The file also covers data at extreme scales and checks that
``fit`` never writes back to its hyperparameters or inputs.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError

from gaussmix import DegenerateDataWarning, GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# 20 rows, 2 well separated clusters, 2 features: fits in a few milliseconds.
X_SMALL, _ = make_blobs(n_samples=20, centers=2, n_features=2, random_state=0)
# The 2-cluster float64 blob set of the extreme-scale tests.
BLOBS, _ = make_blobs(n_samples=200, centers=2, n_features=2, random_state=0)


def _with(value: float) -> np.ndarray:
    X = X_SMALL.copy()
    X[3, 1] = value
    return X


X_NAN = _with(np.nan)
X_INF = _with(np.inf)
X_THREE_FEATURES = np.ones((4, 3))


def _fitted(Est, **kwargs):
    return Est(n_components=2, random_state=0, **kwargs).fit(X_SMALL)


def _fit(Est, X=X_SMALL, **kwargs):
    kwargs.setdefault("n_components", 2)
    kwargs.setdefault("random_state", 0)
    return Est(**kwargs).fit(X)


def _fit_weighted(Est, sample_weight, n_components=2):
    return Est(n_components=n_components, random_state=0).fit(
        X_SMALL, sample_weight=sample_weight
    )


def _param(name, value, **extra):
    """A hyperparameter case: InvalidParameterError naming the parameter."""
    return pytest.param(
        lambda Est: _fit(Est, **{name: value}, **extra),
        InvalidParameterError,
        rf"The '{name}' parameter of GaussianMixture must be",
        True,
        id=f"{name}={value!r}",
    )


def _case(action, exc, match, sklearn_too, id):
    return pytest.param(action, exc, match, sklearn_too, id=id)


EYE2 = np.eye(2)
NOT_PD = np.array([[1.0, 2.0], [2.0, 1.0]])  # symmetric, eigenvalues 3 and -1

# (action(Est), exception type, message fragment, does scikit-learn support it)
CASES = [
    # --- X in fit ---------------------------------------------------------
    _case(
        lambda E: _fit(E, X_NAN), ValueError, "Input X contains NaN", True, "fit-nan"
    ),
    _case(
        lambda E: _fit(E, X_INF),
        ValueError,
        "Input X contains infinity",
        True,
        "fit-inf",
    ),
    _case(
        lambda E: _fit(E, -X_INF),
        ValueError,
        "Input X contains infinity",
        True,
        "fit-minus-inf",
    ),
    _case(
        lambda E: _fit(E, X_SMALL[:, 0]),
        ValueError,
        "Expected 2D array, got 1D array",
        True,
        "fit-1d",
    ),
    _case(
        lambda E: _fit(E, X_SMALL.reshape(20, 2, 1)),
        ValueError,
        "Found array with dim 3",
        True,
        "fit-3d",
    ),
    _case(
        lambda E: _fit(E, np.empty((0, 2))),
        ValueError,
        r"Found array with 0 sample\(s\)",
        True,
        "fit-empty",
    ),
    _case(
        lambda E: _fit(E, X_SMALL[:1], n_components=1),
        ValueError,
        r"Found array with 1 sample\(s\) .* minimum of 2",
        True,
        "fit-one-sample",
    ),
    _case(
        lambda E: _fit(E, X_SMALL[:3], n_components=5),
        ValueError,
        r"Expected n_samples >= n_components but got n_components = 5, "
        r"n_samples = 3",
        True,
        "more-components-than-samples",
    ),
    _case(
        lambda E: _fit(E, [["a", "b"], ["c", "d"], ["e", "f"]]),
        ValueError,
        "could not convert string to float",
        True,
        "fit-strings",
    ),
    _case(
        lambda E: _fit(E, X_SMALL + 1j),
        ValueError,
        "Complex data not supported",
        True,
        "fit-complex",
    ),
    # --- hyperparameters ----------------------------------------------------
    _param("n_components", 0),
    _param("n_components", -1),
    _param("n_components", 1.5),
    _param("covariance_type", "bogus"),
    _param("tol", -1),
    _param("reg_covar", -1),
    _param("max_iter", -1),
    _param("n_init", 0),
    _param("init_params", "bogus"),
    _param("verbose_interval", 0),
    # --- weights_init -------------------------------------------------------
    _case(
        lambda E: _fit(E, weights_init=[1.0]),
        ValueError,
        r"The parameter 'weights' should have the shape of \(2,\), but got \(1,\)",
        True,
        "weights-init-shape",
    ),
    _case(
        lambda E: _fit(E, weights_init=[1.5, -0.5]),
        ValueError,
        r"The parameter 'weights' should be in the range \[0, 1\]",
        True,
        "weights-init-range",
    ),
    _case(
        lambda E: _fit(E, weights_init=[0.2, 0.2]),
        ValueError,
        r"The parameter 'weights' should be normalized, "
        r"but got sum\(weights\) = 0\.40000",
        True,
        "weights-init-not-normalised",
    ),
    # --- means_init ---------------------------------------------------------
    _case(
        lambda E: _fit(E, means_init=[[0.0, 0.0]]),
        ValueError,
        r"The parameter 'means' should have the shape of \(2, 2\), "
        r"but got \(1, 2\)",
        True,
        "means-init-shape",
    ),
    _case(
        lambda E: _fit(E, means_init=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
        ValueError,
        r"The parameter 'means' should have the shape of \(2, 2\)",
        True,
        "means-init-features",
    ),
    # --- precisions_init: shape ---------------------------------------------
    _case(
        lambda E: _fit(E, precisions_init=EYE2),
        ValueError,
        r"The parameter 'full precision' should have the shape of \(2, 2, 2\)",
        True,
        "precisions-init-shape-full",
    ),
    _case(
        lambda E: _fit(
            E, covariance_type="tied", precisions_init=np.stack([EYE2, EYE2])
        ),
        ValueError,
        r"The parameter 'tied precision' should have the shape of \(2, 2\), "
        r"but got \(2, 2, 2\)",
        True,
        "precisions-init-shape-tied",
    ),
    _case(
        lambda E: _fit(E, covariance_type="tied", precisions_init=np.eye(3)),
        ValueError,
        r"The parameter 'tied precision' should have the shape of \(2, 2\)",
        True,
        "precisions-init-shape-tied-2d",
    ),
    _case(
        lambda E: _fit(E, covariance_type="diag", precisions_init=[1.0, 1.0]),
        ValueError,
        r"The parameter 'diag precision' should have the shape of \(2, 2\)",
        True,
        "precisions-init-shape-diag",
    ),
    _case(
        lambda E: _fit(E, covariance_type="spherical", precisions_init=EYE2),
        ValueError,
        r"The parameter 'spherical precision' should have the shape of \(2,\)",
        True,
        "precisions-init-shape-spherical",
    ),
    # --- precisions_init: values --------------------------------------------
    _case(
        lambda E: _fit(E, precisions_init=np.stack([EYE2, NOT_PD])),
        ValueError,
        "'full precision' should be symmetric, positive-definite",
        True,
        "precisions-init-full-not-pd",
    ),
    _case(
        lambda E: _fit(E, precisions_init=[[[1, 0.5], [0, 1]], EYE2]),
        ValueError,
        "'full precision' should be symmetric, positive-definite",
        True,
        "precisions-init-full-not-symmetric",
    ),
    _case(
        lambda E: _fit(E, covariance_type="tied", precisions_init=NOT_PD),
        ValueError,
        "'tied precision' should be symmetric, positive-definite",
        True,
        "precisions-init-tied-not-pd",
    ),
    _case(
        lambda E: _fit(
            E, covariance_type="diag", precisions_init=[[1.0, 0.0], [1.0, 1.0]]
        ),
        ValueError,
        "'diag precision' should be positive",
        True,
        "precisions-init-diag-zero",
    ),
    _case(
        lambda E: _fit(E, covariance_type="spherical", precisions_init=[1.0, -1.0]),
        ValueError,
        "'spherical precision' should be positive",
        True,
        "precisions-init-spherical-negative",
    ),
    # --- prediction-time X --------------------------------------------------
    _case(
        lambda E: _fitted(E).predict(X_NAN),
        ValueError,
        "Input X contains NaN",
        True,
        "predict-nan",
    ),
    _case(
        lambda E: _fitted(E).predict(X_INF),
        ValueError,
        "Input X contains infinity",
        True,
        "predict-inf",
    ),
    _case(
        lambda E: _fitted(E).score_samples(X_NAN),
        ValueError,
        "Input X contains NaN",
        True,
        "score-samples-nan",
    ),
    _case(
        lambda E: _fitted(E).predict(X_THREE_FEATURES),
        ValueError,
        "X has 3 features, but GaussianMixture is expecting 2 features",
        True,
        "predict-n-features",
    ),
    _case(
        lambda E: _fitted(E).predict_proba(X_THREE_FEATURES),
        ValueError,
        "X has 3 features, but GaussianMixture is expecting 2 features",
        True,
        "predict-proba-n-features",
    ),
    _case(
        lambda E: _fitted(E).score_samples(X_THREE_FEATURES),
        ValueError,
        "X has 3 features, but GaussianMixture is expecting 2 features",
        True,
        "score-samples-n-features",
    ),
    _case(
        lambda E: _fitted(E).score(X_THREE_FEATURES),
        ValueError,
        "X has 3 features, but GaussianMixture is expecting 2 features",
        True,
        "score-n-features",
    ),
    _case(
        lambda E: _fitted(E).predict(X_SMALL[0]),
        ValueError,
        "Expected 2D array, got 1D array",
        True,
        "predict-1d",
    ),
    # --- not fitted ---------------------------------------------------------
    _case(
        lambda E: E(2).predict(X_SMALL),
        NotFittedError,
        "This GaussianMixture instance is not fitted yet",
        True,
        "predict-before-fit",
    ),
    _case(
        lambda E: E(2).predict_proba(X_SMALL),
        NotFittedError,
        "not fitted yet",
        True,
        "predict-proba-before-fit",
    ),
    _case(
        lambda E: E(2).score_samples(X_SMALL),
        NotFittedError,
        "not fitted yet",
        True,
        "score-samples-before-fit",
    ),
    _case(
        lambda E: E(2).sample(3),
        NotFittedError,
        "not fitted yet",
        True,
        "sample-before-fit",
    ),
    # --- sample -------------------------------------------------------------
    _case(
        lambda E: _fitted(E).sample(n_samples=0),
        ValueError,
        "Invalid value for 'n_samples'",
        True,
        "sample-zero",
    ),
    _case(
        lambda E: _fitted(E).sample(n_samples=-1),
        ValueError,
        "Invalid value for 'n_samples'",
        True,
        "sample-negative",
    ),
    # --- sample_weight (scikit-learn's fit takes none) ----------------------
    _case(
        lambda E: _fit_weighted(E, -np.ones(20)),
        ValueError,
        "sample_weight contains negative values",
        False,
        "weight-negative",
    ),
    _case(
        lambda E: _fit_weighted(E, np.r_[np.ones(19), -1e-3]),
        ValueError,
        "sample_weight contains negative values",
        False,
        "weight-one-negative",
    ),
    _case(
        lambda E: _fit_weighted(E, np.ones(19)),
        ValueError,
        r"sample_weight must have shape \(20,\).*got shape \(19,\)",
        False,
        "weight-wrong-length",
    ),
    _case(
        lambda E: _fit_weighted(E, np.ones((20, 1))),
        ValueError,
        r"sample_weight must have shape \(20,\).*got shape \(20, 1\)",
        False,
        "weight-2d",
    ),
    _case(
        lambda E: _fit_weighted(E, np.zeros(20)),
        ValueError,
        "sample_weight is zero for every sample",
        False,
        "weight-all-zero",
    ),
    _case(
        lambda E: _fit_weighted(E, np.r_[np.nan, np.ones(19)]),
        ValueError,
        "sample_weight contains NaN or infinity",
        False,
        "weight-nan",
    ),
    _case(
        lambda E: _fit_weighted(E, np.r_[np.inf, np.ones(19)]),
        ValueError,
        "sample_weight contains NaN or infinity",
        False,
        "weight-inf",
    ),
    _case(
        lambda E: _fit_weighted(E, ["a"] * 20),
        TypeError,
        "sample_weight must be numeric",
        False,
        "weight-strings",
    ),
    _case(
        lambda E: _fit_weighted(E, [1.0, None] * 10),
        TypeError,
        "sample_weight must be numeric",
        False,
        "weight-object",
    ),
    _case(
        lambda E: _fit_weighted(E, np.r_[1.0, 1.0, np.zeros(18)], 3),
        ValueError,
        r"Expected n_samples >= n_components but got n_components = 3, "
        r"n_samples = 2 \(samples with positive weight\)",
        False,
        "fewer-positive-weights-than-components",
    ),
]


@pytest.mark.parametrize(("action", "exc", "match", "sklearn_too"), CASES)
def test_bad_input_raises_clear_error(action, exc, match, sklearn_too):
    with pytest.raises(exc, match=match):
        action(GaussianMixture)


def test_invalid_parameter_error_is_a_value_error():
    with pytest.raises(ValueError, match="'tol' parameter"):
        GaussianMixture(tol=-1).fit(X_SMALL)


def test_not_fitted_error_is_a_value_error_and_attribute_error():
    with pytest.raises(ValueError, match="not fitted yet"):
        GaussianMixture(2).predict(X_SMALL)
    with pytest.raises(AttributeError, match="not fitted yet"):
        GaussianMixture(2).sample()


def _raised(action, Est):
    try:
        action(Est)
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("action", "exc", "match", "sklearn_too"),
    [case for case in CASES if case.values[3]],
)
def test_same_exception_type_as_sklearn(action, exc, match, sklearn_too):
    ours = _raised(action, GaussianMixture)
    theirs = _raised(action, SkGaussianMixture)
    assert theirs is not None, "scikit-learn accepted the input"
    assert ours is not None, "gaussmix accepted the input"
    assert type(ours) is type(theirs), (ours, theirs)


def test_sklearn_table_is_not_empty():
    # The comparison above must cover most cases, not silently none.
    assert sum(case.values[3] for case in CASES) >= 40


# ---------------------------------------------------------------- extreme scales
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    ("scale", "reg_covar"), [(1e150, 1e-6), (1e-150, 1e-306)], ids=["1e150", "1e-150"]
)
def test_extreme_scale_fits_like_the_unscaled_data(covariance_type, scale, reg_covar):
    reference = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(
        BLOBS
    )
    model = GaussianMixture(
        2, covariance_type=covariance_type, reg_covar=reg_covar, random_state=0
    )
    try:
        model.fit(BLOBS * scale)
    except ValueError as exc:
        # Refusing is allowed, provided the message says why.
        assert str(exc)
        assert any(
            word in str(exc).lower()
            for word in ("scale", "range", "overflow", "underflow", "large", "small")
        ), str(exc)
        return
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert np.all(np.isfinite(getattr(model, name))), name
    np.testing.assert_allclose(model.means_, reference.means_ * scale, rtol=1e-6)
    np.testing.assert_allclose(
        model.covariances_, reference.covariances_ * scale**2, rtol=1e-5
    )
    np.testing.assert_allclose(model.weights_, reference.weights_, rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_tiny_scale_with_default_reg_covar_warns_and_stays_finite(covariance_type):
    model = GaussianMixture(2, covariance_type=covariance_type, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(BLOBS * 1e-150)
    messages = [str(w.message) for w in caught]
    # Only gaussmix's own warnings (a collapse warning may follow), and one of
    # them says that reg_covar dominates.
    assert all(w.category is DegenerateDataWarning for w in caught), messages
    assert any("reg_covar=1e-06 exceeds the variance" in m for m in messages)
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert np.all(np.isfinite(getattr(model, name))), name
    # reg_covar (1e-6) dwarfs the data's variance (~1e-300).
    if covariance_type == "full":
        variances = np.diagonal(model.covariances_, axis1=1, axis2=2)
    elif covariance_type == "tied":
        variances = np.diagonal(model.covariances_)
    else:
        variances = model.covariances_
    np.testing.assert_allclose(variances, 1e-6, rtol=1e-6)
    assert np.all(np.abs(model.means_) < 1e-148)


@pytest.mark.parametrize(
    "X",
    [
        BLOBS * 1e200,
        (np.random.default_rng(0).normal(size=(100, 2)) * 1e38).astype(np.float32),
    ],
    ids=["float64-1e200", "float32-1e38"],
)
def test_data_whose_variance_overflows_is_refused_clearly(X):
    # Covariances near 1e402 (float64) or 1e76 (float32) are not
    # representable, so a clear refusal is the only correct answer; no numpy
    # RuntimeWarning may escape on the way (float32 values near their
    # largest overflowed scikit-learn's check for NaN, a sum).
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(
            ValueError, match=r"(?i)overflow|too large|scale|range|finite|varian"
        ):
            GaussianMixture(2, random_state=0).fit(X)


def test_tiny_magnitude_below_squares_underflow_warns_and_stays_finite():
    model = GaussianMixture(2, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(BLOBS * 1e-200)
    messages = [str(w.message) for w in caught]
    assert all(w.category is DegenerateDataWarning for w in caught), messages
    assert any("reg_covar=1e-06 exceeds the variance" in m for m in messages)
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert np.all(np.isfinite(getattr(model, name))), name


@pytest.mark.parametrize(
    ("dtype", "weight"),
    [(np.float32, 1e39), (np.float64, 1e308)],
    ids=["float32-1e39", "float64-1e308"],
)
def test_huge_sample_weights_are_refused_or_handled(dtype, weight):
    X = BLOBS.astype(dtype)
    reference = GaussianMixture(2, random_state=0).fit(X)
    model = GaussianMixture(2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            model.fit(X, sample_weight=np.full(len(X), weight))
        except ValueError as exc:
            assert "sample_weight" in str(exc), str(exc)
            return
    # Equal weights count every row equally, so the fit is the unweighted one.
    rtol = 1e-4 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(model.means_, reference.means_, rtol=rtol)


# ---------------------------------------------------------- no write-back
def _init_lists(covariance_type):
    reference = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(
        X_SMALL
    )
    return {
        "weights_init": reference.weights_.tolist(),
        "means_init": reference.means_.tolist(),
        "precisions_init": reference.precisions_.tolist(),
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_never_writes_back_to_hyperparameters(covariance_type):
    inits = _init_lists(covariance_type)
    model = GaussianMixture(2, covariance_type=covariance_type, random_state=0, **inits)
    before = copy.deepcopy(model.get_params())
    model.fit(X_SMALL)
    after = model.get_params()
    assert after == before
    for name, value in inits.items():
        # The very same list objects, unmodified, not arrays.
        assert getattr(model, name) is value
        assert type(after[name]) is list
    assert hasattr(model, "means_")
    model.fit(X_SMALL)  # a second fit sees the same hyperparameters
    assert model.get_params() == before


def test_fit_does_not_modify_x_or_sample_weight():
    X = BLOBS * 1e150
    X_before = X.copy()
    weights = np.linspace(0.5, 2.0, len(X))
    weights_before = weights.copy()
    GaussianMixture(2, random_state=0).fit(X, sample_weight=weights)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(weights, weights_before)


@pytest.mark.parametrize("estimator", ["selection", "anomalies"])
def test_chunks_are_refused_by_the_estimators_that_predict_on_every_row(estimator):
    from gaussmix import Chunks, GaussianMixtureAnomalyDetector, GaussianMixtureIC

    X = np.random.default_rng(0).normal(size=(300, 2))
    model = (
        GaussianMixtureIC(n_components=[1, 2])
        if estimator == "selection"
        else GaussianMixtureAnomalyDetector(2)
    )
    with pytest.raises(TypeError, match=r"needs an array, not a Chunks.*mmap_mode"):
        model.fit(Chunks(np.array_split(X, 3)))
