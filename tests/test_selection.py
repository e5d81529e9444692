"""GaussianMixtureIC: choosing K and the covariance type."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from gaussmix import EMHistory, GaussianMixture, GaussianMixtureIC
from gaussmix._selection import _criteria, icl

# Published mclust results for Old Faithful (mclust vignette, "A quick tour of
# mclust", and ?icl): BIC and ICL in mclust's sign (higher is better); ours is
# the negative. mclust's names: EEE = tied, VVV = full, VVI = diag, VII =
# spherical.
MCLUST_BIC = {
    ("full", 1): -2607.623,
    ("tied", 1): -2607.623,
    ("diag", 1): -3055.835,
    ("spherical", 1): -4024.721,
    ("full", 2): -2322.192,
    ("tied", 2): -2325.220,
    ("diag", 2): -2346.065,
    ("spherical", 2): -3458.305,
    ("tied", 3): -2314.316,
    ("spherical", 3): -3336.598,
}
MCLUST_EEE3_ICL = -2357.824


@pytest.fixture(scope="module")
def faithful_bic(faithful):
    return GaussianMixtureIC(range(1, 6), random_state=0).fit(faithful)


def _row(selector, covariance_type, k):
    table = selector.criteria_
    rows = np.flatnonzero(
        (table["covariance_type"] == covariance_type) & (table["n_components"] == k)
    )
    assert rows.size == 1
    return int(rows[0])


def test_bic_chooses_what_mclust_chooses(faithful_bic):
    assert faithful_bic.best_params_ == {"covariance_type": "tied", "n_components": 3}
    # At least as good as mclust's EEE,3 and no better than its loose
    # tolerance allows.
    assert 2314.316 - 0.1 <= faithful_bic.best_criterion_ <= 2314.316 + 0.001
    assert faithful_bic.best_estimator_.covariance_type == "tied"
    assert faithful_bic.best_estimator_.n_components == 3


def test_every_candidates_bic_matches_mclust(faithful_bic):
    for (covariance_type, k), theirs in MCLUST_BIC.items():
        ours = faithful_bic.criteria_["bic"][_row(faithful_bic, covariance_type, k)]
        assert -theirs - 0.1 <= ours <= -theirs + 0.001, (covariance_type, k)


def test_icl_of_mclusts_parameters_is_mclusts_icl(faithful):
    # mclust's published EEE,3 fit, set as the model's parameters.
    means = [[2.037596, 54.491158], [3.793066, 77.521051], [4.463245, 80.833439]]
    covariance = np.array([[0.07825448, 0.4801979], [0.4801979, 33.7671464]])
    model = GaussianMixture(
        3,
        covariance_type="tied",
        weights_init=[0.3563696, 0.1656784, 0.4779520],
        means_init=means,
        precisions_init=np.linalg.inv(covariance),
        max_iter=0,
    ).fit(faithful)
    # Within the rounding of the published parameters (BIC: 2314.31 vs
    # 2314.316). Soft responsibilities' entropy would give about 2399.
    assert icl(model, faithful) == pytest.approx(-MCLUST_EEE3_ICL, abs=0.1)
    resp = model.predict_proba(faithful)
    expected = model.bic(faithful) - 2 * np.sum(np.log(resp.max(axis=1)))
    assert icl(model, faithful) == pytest.approx(expected, rel=1e-12)


def test_icl_of_our_eee3_fit_is_near_mclusts(faithful_bic):
    # The two overlapping components sit on a flat ridge of the likelihood,
    # so tightly and loosely converged fits have the same BIC to 0.02 but
    # hard assignments that differ for a few points: ICL agrees to about 1.
    ours = faithful_bic.criteria_["icl"][_row(faithful_bic, "tied", 3)]
    assert ours == pytest.approx(-MCLUST_EEE3_ICL, abs=1.0)


def test_icl_prefers_well_separated_clusters(faithful):
    selector = GaussianMixtureIC(
        range(1, 5), covariance_type=("full", "tied"), criterion="icl", random_state=0
    ).fit(faithful)
    # The two eruption types; EEE,3 splits the long eruptions into two
    # overlapping components, which ICL penalises.
    assert selector.best_params_["n_components"] == 2
    assert selector.best_index_ == int(np.nanargmin(selector.criteria_["icl"]))


def test_aic_is_minimised_when_asked(faithful_bic, faithful):
    selector = clone(faithful_bic).set_params(criterion="aic").fit(faithful)
    assert selector.best_index_ == int(np.nanargmin(selector.criteria_["aic"]))
    np.testing.assert_allclose(selector.criteria_["bic"], faithful_bic.criteria_["bic"])
    best = selector.best_estimator_
    assert selector.best_criterion_ == pytest.approx(best.aic(faithful), rel=1e-12)


def test_criteria_table_is_consistent(faithful_bic, faithful):
    table = faithful_bic.criteria_
    n = 5 * 4
    assert {len(column) for column in table.values()} == {n}
    assert table["covariance_type"].tolist()[:5] == ["full"] * 5
    assert table["n_components"].tolist()[:5] == [1, 2, 3, 4, 5]
    best = faithful_bic.best_estimator_
    i = faithful_bic.best_index_
    assert table["bic"][i] == pytest.approx(best.bic(faithful), rel=1e-12)
    assert table["log_likelihood"][i] == pytest.approx(
        best.score(faithful) * len(faithful), rel=1e-12
    )
    assert table["n_parameters"][_row(faithful_bic, "tied", 3)] == 11
    ok = ~table["singular"]
    np.testing.assert_allclose(
        table["aic"][ok],
        -2 * table["log_likelihood"][ok] + 2 * table["n_parameters"][ok],
    )


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("X", ["faithful", "blobs"])
def test_criteria_in_two_passes_equal_the_models_own(request, X, covariance_type):
    """The table's criteria come from one ``score`` and one
    ``predict_proba`` per candidate: the same values, bit for bit, as the
    model's ``score``, ``bic`` and ``aic`` and :func:`icl` give."""
    X = request.getfixturevalue(X)
    for k in (1, 3):
        model = GaussianMixture(k, covariance_type=covariance_type, random_state=0)
        model.fit(X)
        expected = (
            model.score(X) * len(X),
            model.bic(X),
            model.aic(X),
            icl(model, X),
        )
        assert _criteria(model, X) == expected


def test_criteria_table_makes_a_dataframe(faithful_bic):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(faithful_bic.criteria_)
    assert frame.shape == (20, 10)


def _data_with_repeated_values():
    rng = np.random.RandomState(0)
    return np.vstack(
        [
            rng.normal(size=(150, 2)),
            rng.normal(size=(150, 2)) + np.array([6.0, 0.0]),
            np.tile([[3.0, 3.0]], (12, 1)),  # one value, repeated
        ]
    )


def test_singular_candidates_are_never_chosen():
    X = _data_with_repeated_values()
    selector = GaussianMixtureIC((1, 2, 3, 4), covariance_type="full", random_state=0)
    selector.fit(X)
    singular = selector.criteria_["singular"]
    assert singular.tolist() == [False, False, True, True]
    assert np.all(np.isnan(selector.criteria_["bic"][singular]))
    assert selector.best_params_ == {"covariance_type": "full", "n_components": 2}
    # Without the rule the spike on the repeated value would win by far.
    with pytest.warns(Warning, match="collapsed"):
        spike = GaussianMixture(
            3, n_init=3, tol=1e-6, max_iter=1000, random_state=0
        ).fit(X)
    assert spike.bic(X) < selector.best_criterion_ - 100


def test_all_singular_is_an_error():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 20, axis=0)
    with pytest.raises(ValueError, match="Every candidate's covariance collapsed"):
        GaussianMixtureIC((2,), covariance_type="full", random_state=0).fit(X)


def test_delegates_to_the_best_model(faithful_bic, faithful):
    best = faithful_bic.best_estimator_
    np.testing.assert_array_equal(
        faithful_bic.predict(faithful), best.predict(faithful)
    )
    np.testing.assert_array_equal(
        faithful_bic.predict_proba(faithful), best.predict_proba(faithful)
    )
    np.testing.assert_array_equal(
        faithful_bic.score_samples(faithful), best.score_samples(faithful)
    )
    assert faithful_bic.score(faithful) == best.score(faithful)
    assert faithful_bic.bic(faithful) == best.bic(faithful)
    assert faithful_bic.aic(faithful) == best.aic(faithful)
    X1, y1 = faithful_bic.sample(20, random_state=3)
    X2, y2 = best.sample(20, random_state=3)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


def test_parallel_fits_give_the_same_table(blobs):
    kwargs = {"covariance_type": ("full", "diag"), "n_init": 1, "random_state": 0}
    serial = GaussianMixtureIC((2, 3), **kwargs).fit(blobs)
    parallel = GaussianMixtureIC((2, 3), n_jobs=2, **kwargs).fit(blobs)
    np.testing.assert_array_equal(serial.criteria_["bic"], parallel.criteria_["bic"])
    assert serial.best_params_ == parallel.best_params_


def test_random_state_instance_is_reproducible(blobs):
    a = GaussianMixtureIC(
        (2, 3), covariance_type="full", n_init=1, random_state=np.random.RandomState(5)
    )
    b = GaussianMixtureIC(
        (2, 3), covariance_type="full", n_init=1, random_state=np.random.RandomState(5)
    )
    np.testing.assert_array_equal(
        a.fit(blobs).criteria_["bic"], b.fit(blobs).criteria_["bic"]
    )


def test_candidate_warnings_are_raised_once_with_their_candidates(faithful):
    selector = GaussianMixtureIC(
        (2, 3), covariance_type="full", max_iter=1, n_init=1, random_state=0
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        selector.fit(faithful)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert len(messages) == 1
    assert "candidates: full K=2, full K=3" in messages[0]


def test_callback_reaches_every_candidate(faithful):
    history = EMHistory()
    GaussianMixtureIC(
        (1, 2), covariance_type=("full", "spherical"), n_init=2, callback=history
    ).set_params(random_state=0).fit(faithful)
    starts = [(s.covariance_type, len(s.weights)) for s in history if s.n_iter == 0]
    assert starts == [
        ("full", 1),
        ("full", 1),
        ("full", 2),
        ("full", 2),
        ("spherical", 1),
        ("spherical", 1),
        ("spherical", 2),
        ("spherical", 2),
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_components": [0, 1]}, "integers >= 1"),
        ({"n_components": [2.5]}, "integers >= 1"),
        ({"n_components": []}, "must not be empty"),
        ({"covariance_type": ["full", "round"]}, "covariance_type"),
        ({"n_components": [2, 500]}, "only 272 samples"),
        ({"criterion": "bic2"}, "criterion"),
    ],
)
def test_bad_parameters(faithful, params, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixtureIC(**params).fit(faithful)


def test_range_parameter_survives_clone():
    selector = GaussianMixtureIC(range(1, 4))
    assert clone(selector).n_components == range(1, 4)
