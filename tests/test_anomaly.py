"""GaussianMixtureAnomalyDetector: scikit-learn's outlier-detector contract."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gaussmix import GaussianMixtureAnomalyDetector


@pytest.mark.parametrize("contamination", [0.01, 0.05, 0.2])
def test_flags_the_contamination_fraction_of_the_training_data(blobs, contamination):
    detector = GaussianMixtureAnomalyDetector(
        3, contamination=contamination, random_state=0
    ).fit(blobs)
    labels = detector.predict(blobs)
    assert set(np.unique(labels).tolist()) <= {-1, 1}
    expected = contamination * len(blobs)
    assert abs(np.sum(labels == -1) - expected) <= 1
    scores = detector.score_samples(blobs)
    assert detector.offset_ == np.percentile(scores, 100 * contamination)
    # The flagged points are exactly the lowest scores.
    assert np.max(scores[labels == -1]) < np.min(scores[labels == 1])


@pytest.mark.parametrize("backend", ["dask", "torch"])
def test_the_threshold_of_scores_off_the_host_is_numpys_percentile(backend):
    """Over a Dask array or a tensor the threshold comes from two order
    statistics found where the scores are, interpolated as np.percentile
    does: its value bit for bit, for every rank and fraction."""
    from gaussmix._anomaly import training_offset

    if backend == "dask":
        da = pytest.importorskip("dask.array")

        def convert(a):
            return da.from_array(a, chunks=300)
    else:
        torch = pytest.importorskip("torch")
        pytest.importorskip("array_api_compat")
        convert = torch.asarray
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 10, 999, 1000, 1001, 4097):
        for contamination in (0.001, 0.01, 0.05, 0.1, 0.123, 0.25, 0.3, 0.5):
            scores = rng.normal(size=n) * 10
            expected = np.percentile(scores, 100 * contamination)
            got = training_offset(convert(scores), contamination)
            assert got == expected, (n, contamination)


def test_decision_function_is_score_minus_offset(faithful):
    detector = GaussianMixtureAnomalyDetector(2, random_state=0).fit(faithful)
    np.testing.assert_array_equal(
        detector.decision_function(faithful),
        detector.score_samples(faithful) - detector.offset_,
    )
    np.testing.assert_array_equal(
        detector.score_samples(faithful), detector.mixture_.score_samples(faithful)
    )
    assert detector.n_iter_ == detector.mixture_.n_iter_
    np.testing.assert_array_equal(
        detector.predict(faithful),
        np.where(detector.decision_function(faithful) >= 0, 1, -1),
    )


def test_scores_match_scikit_learns_gaussian(blobs):
    # One full Gaussian has a closed-form fit: scikit-learn's own mixture gives
    # the same log-densities, hence the same outliers.
    ours = GaussianMixtureAnomalyDetector(1, contamination=0.1).fit(blobs)
    theirs = SkGaussianMixture(1).fit(blobs).score_samples(blobs)
    np.testing.assert_allclose(ours.score_samples(blobs), theirs, rtol=1e-10)
    expected = np.where(theirs >= np.percentile(theirs, 10), 1, -1)
    np.testing.assert_array_equal(ours.predict(blobs), expected)


def test_finds_planted_outliers(blobs):
    rng = np.random.RandomState(0)
    directions = rng.normal(size=(12, 3))
    # Scattered far from every cluster, in all directions.
    far = 40 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    X = np.vstack([blobs, far])
    detector = GaussianMixtureAnomalyDetector(
        3, contamination=12 / len(X), random_state=0
    )
    labels = detector.fit_predict(X)
    np.testing.assert_array_equal(np.flatnonzero(labels == -1), np.arange(600, 612))
    np.testing.assert_array_equal(detector.predict(X), labels)


def test_works_in_a_pipeline(faithful):
    pipeline = make_pipeline(
        StandardScaler(),
        GaussianMixtureAnomalyDetector(2, contamination=0.05, random_state=0),
    ).fit(faithful)
    scaled = StandardScaler().fit_transform(faithful)
    alone = GaussianMixtureAnomalyDetector(2, contamination=0.05, random_state=0)
    alone.fit(scaled)
    np.testing.assert_array_equal(pipeline.predict(faithful), alone.predict(scaled))
    np.testing.assert_allclose(
        pipeline.decision_function(faithful), alone.decision_function(scaled)
    )
    assert pipeline.fit_predict(faithful).shape == (272,)


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1])
def test_contamination_must_be_in_range(faithful, contamination):
    with pytest.raises(ValueError, match="contamination"):
        GaussianMixtureAnomalyDetector(contamination=contamination).fit(faithful)


def test_wrong_number_of_features(faithful):
    detector = GaussianMixtureAnomalyDetector(random_state=0).fit(faithful)
    with pytest.raises(ValueError, match="features"):
        detector.predict(np.ones((3, 3)))
