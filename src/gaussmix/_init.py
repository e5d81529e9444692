"""Initialisation strategies: each gives the responsibilities EM starts from.

A strategy returns a function of a row slice, so that the initial M-step
streams the rows in chunks like every other pass and never needs a dense
N x K matrix unless the strategy itself is dense (``"random"``). The random
draws are made in the same order as scikit-learn's, so the same
``random_state`` gives the same start.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

Array = np.ndarray
RespOfRows = Callable[[slice], Array]

__all__ = ["INIT_METHODS", "initial_responsibilities"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


def _one_hot(labels: Array, n_components: int) -> RespOfRows:
    """Rows whose label is -1 get no responsibility at all."""
    components = np.arange(n_components)

    def resp_of_rows(rows: slice) -> Array:
        return (labels[rows, None] == components[None, :]).astype(np.float64)

    return resp_of_rows


def initial_responsibilities(
    X: Array,
    sample_weight: Array | None,
    n_components: int,
    method: str,
    random_state: np.random.RandomState,
) -> RespOfRows:
    """Starting responsibilities for ``method``, using the sample weights.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,) or None
        Rows with zero weight are never chosen as a seed.
    n_components : int
    method : {"kmeans", "k-means++", "random", "random_from_data"}
    random_state : numpy.random.RandomState
        Consumed in the same order as scikit-learn consumes it.
    """
    n_samples = X.shape[0]
    if method == "kmeans":
        kmeans = KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
        labels = kmeans.fit(X, sample_weight=sample_weight).labels_
        return _one_hot(labels, n_components)
    if method == "k-means++":
        _, indices = kmeans_plusplus(
            X, n_components, random_state=random_state, sample_weight=sample_weight
        )
        return _seeds(indices, n_samples, n_components)
    if method == "random":
        resp = random_state.uniform(size=(n_samples, n_components))
        resp /= resp.sum(axis=1)[:, None]
        return lambda rows: resp[rows]
    if method == "random_from_data":
        if sample_weight is None:
            indices = random_state.choice(n_samples, size=n_components, replace=False)
        else:
            p = sample_weight.astype(np.float64) / np.sum(sample_weight, dtype=float)
            indices = random_state.choice(
                n_samples, size=n_components, replace=False, p=p
            )
        return _seeds(indices, n_samples, n_components)
    raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}")


def _seeds(indices: Array, n_samples: int, n_components: int) -> RespOfRows:
    """One chosen row per component, all other rows unassigned."""
    labels = np.full(n_samples, -1, dtype=np.intp)
    labels[np.asarray(indices)] = np.arange(n_components)
    return _one_hot(labels, n_components)
