"""GaussianMixture(callback=...): what EM reports after every iteration."""

import numpy as np
import pytest
from sklearn.base import clone

from gaussmix import EMHistory, EMIteration, GaussianMixture
from helpers import COVARIANCE_TYPES


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_last_iteration_is_the_fitted_model(blobs, covariance_type):
    history = EMHistory()
    model = GaussianMixture(
        3, covariance_type=covariance_type, random_state=0, callback=history
    ).fit(blobs)
    assert [step.n_iter for step in history] == list(range(model.n_iter_ + 1))
    last = history[-1]
    assert isinstance(last, EMIteration)
    assert last.covariance_type == covariance_type
    np.testing.assert_allclose(last.weights, model.weights_, rtol=1e-12)
    np.testing.assert_allclose(last.means, model.means_, rtol=1e-12)
    np.testing.assert_allclose(last.covariances, model.covariances_, rtol=1e-12)
    assert last.covariances.shape == model.covariances_.shape
    # The lower bound of iteration i is the i-th entry of lower_bounds_.
    np.testing.assert_array_equal(
        [step.lower_bound for step in history[1:]], model.lower_bounds_
    )
    assert history[0].lower_bound == -np.inf


def test_every_initialisation_starts_at_iteration_zero(faithful):
    history = EMHistory()
    model = GaussianMixture(
        2, n_init=3, random_state=0, callback=history, tol=1e-6
    ).fit(faithful)
    starts = [step.init for step in history if step.n_iter == 0]
    assert starts == [0, 1, 2]
    ends = [history.of_init(i)[-1] for i in range(3)]
    best = max(ends, key=lambda step: step.lower_bound)
    assert best.lower_bound == model.lower_bound_
    np.testing.assert_allclose(best.means, model.means_, rtol=1e-12)


def test_starting_parameters_are_the_given_ones(faithful):
    means = np.array([[2.0, 55.0], [4.5, 80.0]])
    precisions = np.array([np.diag([4.0, 0.02])] * 2)
    history = EMHistory()
    GaussianMixture(
        2,
        weights_init=[0.4, 0.6],
        means_init=means,
        precisions_init=precisions,
        callback=history,
    ).fit(faithful)
    start = history[0]
    np.testing.assert_allclose(start.means, means)
    np.testing.assert_allclose(start.weights, [0.4, 0.6])
    np.testing.assert_allclose(start.covariances, np.linalg.inv(precisions))


def test_units_of_rescaled_data_are_the_users(faithful):
    # Data beyond 2**60 is fitted after a power-of-two rescaling; the
    # callback still reports parameters in the data's units.
    X = faithful * 2.0**70
    history = EMHistory()
    model = GaussianMixture(2, random_state=0, callback=history).fit(X)
    np.testing.assert_allclose(history[-1].means, model.means_, rtol=1e-12)
    np.testing.assert_allclose(history[-1].covariances, model.covariances_, rtol=1e-12)
    assert history[-1].lower_bound == model.lower_bound_
    # The starting means lie among the data, not 2**70 times too small.
    assert np.all(history[0].means > 2.0**70)


def test_callback_does_not_change_the_fit(blobs):
    plain = GaussianMixture(3, n_init=2, random_state=1).fit(blobs)
    seen = []
    watched = GaussianMixture(3, n_init=2, random_state=1, callback=seen.append)
    watched.fit(blobs)
    assert len(seen) > 2
    np.testing.assert_array_equal(plain.means_, watched.means_)
    np.testing.assert_array_equal(plain.covariances_, watched.covariances_)


def test_warm_start_and_no_iteration(faithful):
    history = EMHistory()
    model = GaussianMixture(2, random_state=0, warm_start=True, callback=history)
    model.fit(faithful)
    previous = model.means_.copy()
    history.iterations.clear()
    model.fit(faithful)
    np.testing.assert_allclose(history[0].means, previous, rtol=1e-12)

    history = EMHistory()
    GaussianMixture(2, random_state=0, max_iter=0, callback=history).fit(faithful)
    assert [step.n_iter for step in history] == [0]


def test_callback_is_a_validated_hyperparameter(faithful):
    history = EMHistory()
    model = GaussianMixture(2, callback=history)
    assert model.get_params()["callback"] is history
    assert clone(model).callback is not None
    with pytest.raises(ValueError, match="callback"):
        GaussianMixture(2, callback="print").fit(faithful)


def test_history_sequence_protocol():
    history = EMHistory()
    step = EMIteration(
        0, 0, -np.inf, np.ones(1), np.zeros((1, 2)), np.eye(2)[None], "full"
    )
    history(step)
    assert len(history) == 1 and list(history) == [step] and history[:1] == [step]
    assert "1 iterations" in repr(history)
