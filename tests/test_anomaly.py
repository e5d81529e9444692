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
