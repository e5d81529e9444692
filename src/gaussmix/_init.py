"""Initialisation strategies: each gives the responsibilities EM starts from.

Hard strategies (k-means, k-means++, random_from_data) return labels, with
-1 for rows that start in no component, and a centre per component; the
initial M-step then takes one pass over the rows. ``"random"`` returns a
function of a row slice, so the M-step streams its dense N x K matrix in
chunks. The random draws are made in the same order as scikit-learn's, so
the same ``random_state`` gives the same start.

On large data (more than ``KMEANS_SAMPLE`` rows with positive weight)
k-means and k-means++ run on a uniform sample of a sixteenth of the rows
(at least 64 per component, at most ``KMEANS_SAMPLE``), and every row is
then labelled by its nearest centre. Such a sample places the centres about
as well as all the rows, costs a fraction of one EM iteration, and keeps
the initialisation's memory a small fraction of the input's; below that
size the start is scikit-learn's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import pairwise_distances_argmin

Array = np.ndarray
RespOfRows = Callable[[slice], Array]

__all__ = ["INIT_METHODS", "KMEANS_SAMPLE", "Start", "initial_responsibilities"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
KMEANS_SAMPLE = 2**16
_LABEL_ROWS = 8192


class Start(NamedTuple):
    """Either hard ``labels`` with ``centres``, or dense ``resp_of_rows``."""

    labels: Array | None = None
    centres: Array | None = None
    resp_of_rows: RespOfRows | None = None


def _sample(
    sample_weight: Array | None,
    n_samples: int,
    n_components: int,
    random_state: np.random.RandomState,
) -> Array | None:
    """Sorted rows to run k-means on, or None to use all of them.

    A sixteenth of the rows (at least 64 per component, at most
    ``KMEANS_SAMPLE``), so that k-means's copies of the sample stay a small
    fraction of the input.
    """
    candidates = None if sample_weight is None else np.flatnonzero(sample_weight > 0)
    n_candidates = n_samples if candidates is None else candidates.size
    if n_candidates <= KMEANS_SAMPLE:
        return None
    size = min(KMEANS_SAMPLE, max(n_candidates // 16, 64 * n_components))
    # A Generator seeded from the RandomState draws without replacement in
    # O(size) memory (RandomState.choice permutes all n rows).
    generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    chosen = np.sort(generator.choice(n_candidates, size=size, replace=False))
    return chosen if candidates is None else candidates[chosen]


def _nearest(X: Array, centres: Array) -> Array:
    """Label of the nearest centre for every row, in chunks."""
    labels = np.empty(X.shape[0], dtype=np.int32)
    centres = centres.astype(X.dtype)
    for start in range(0, X.shape[0], _LABEL_ROWS):
        rows = slice(start, min(start + _LABEL_ROWS, X.shape[0]))
        labels[rows] = pairwise_distances_argmin(X[rows], centres)
    return labels


def initial_responsibilities(
    X: Array,
    sample_weight: Array | None,
    n_components: int,
    method: str,
    random_state: np.random.RandomState,
) -> Start:
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
    if method in ("kmeans", "k-means++"):
        rows = _sample(sample_weight, n_samples, n_components, random_state)
        Xs = X if rows is None else X[rows]
        ws = sample_weight if rows is None or sample_weight is None else None
        if rows is not None and sample_weight is not None:
            ws = sample_weight[rows]
        if method == "kmeans":
            kmeans = KMeans(
                n_clusters=n_components, n_init=1, random_state=random_state
            )
            kmeans.fit(Xs, sample_weight=ws)
            centres = kmeans.cluster_centers_
            labels = kmeans.labels_ if rows is None else _nearest(X, centres)
            return Start(labels=labels, centres=centres)
        centres, indices = kmeans_plusplus(
            Xs, n_components, random_state=random_state, sample_weight=ws
        )
        if rows is not None:
            indices = rows[indices]
        return _seeds(indices, X, n_components)
    if method == "random":
        resp = random_state.uniform(size=(n_samples, n_components))
        resp /= resp.sum(axis=1)[:, None]
        return Start(resp_of_rows=lambda rows: resp[rows])
    if method == "random_from_data":
        if sample_weight is None:
            indices = random_state.choice(n_samples, size=n_components, replace=False)
        else:
            p = sample_weight.astype(np.float64) / np.sum(sample_weight, dtype=float)
            indices = random_state.choice(
                n_samples, size=n_components, replace=False, p=p
            )
        return _seeds(indices, X, n_components)
    raise ValueError(f"init_params must be one of {INIT_METHODS}, got {method!r}")


def _seeds(indices: Array, X: Array, n_components: int) -> Start:
    """One chosen row per component, all other rows unassigned."""
    indices = np.asarray(indices)
    labels = np.full(X.shape[0], -1, dtype=np.int32)
    labels[indices] = np.arange(n_components)
    return Start(labels=labels, centres=X[indices].astype(np.float64))
