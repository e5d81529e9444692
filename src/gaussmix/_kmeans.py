"""k-means where the rows live: scikit-learn's algorithm through the array API.

The initialisation's k-means (:mod:`gaussmix._init`) runs on the host with
scikit-learn when the rows are on the host. Rows on an accelerator use
these functions instead, so that nothing but a few numbers per centre
crosses to the host. They follow scikit-learn's ``kmeans_plusplus`` and
``KMeans(n_init=1)`` (Lloyd's algorithm) step by step, and draw the same
random numbers from the same ``RandomState`` in the same order, so on the
same rows they choose the same seeds and find the same partition. Only
the rounding differs (sums are ordered differently on a device), which can
move a label only for a row equidistant from two centres to the last digit
(or a seed whose random draw falls within rounding of a boundary).

Steps that scikit-learn leaves to an unspecified order (the farthest rows
given to empty clusters, through ``np.argpartition``) are taken on the host
with the same NumPy call.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from array_api_compat import array_namespace, to_device
from array_api_compat import device as device_of
from sklearn.exceptions import ConvergenceWarning

__all__ = ["kmeans", "kmeans_plusplus"]

Array = Any  # an array of the array API standard

# scikit-learn's KMeans defaults.
_MAX_ITER = 300
_TOL = 1e-4


def _to_numpy(a: Array) -> np.ndarray:
    return np.asarray(to_device(a, "cpu"))


def _squared_distances(xp: Any, A: Array, B: Array, b_norms: Array) -> Array:
    """``||a - b||^2`` for rows of A (m x D) and B (n x D): m x n, in B's dtype.

    As scikit-learn's ``euclidean_distances(A, B, Y_norm_squared=b_norms,
    squared=True)``: ``-2 A B^T + ||a||^2 + ||b||^2``, floored at zero,
    float32 computed in float64.
    """
    dtype = B.dtype
    if dtype == xp.float32:
        A, B = xp.astype(A, xp.float64), xp.astype(B, xp.float64)
        b_norms = xp.sum(B * B, axis=1)
    a_norms = xp.sum(A * A, axis=1)
    distances = -2.0 * (A @ xp.matrix_transpose(B))
    distances = distances + xp.expand_dims(a_norms, axis=1)
    distances = distances + xp.expand_dims(b_norms, axis=0)
    distances = xp.maximum(distances, xp.zeros_like(distances))
    return xp.astype(distances, dtype)


def kmeans_plusplus(
    X: Array,
    n_clusters: int,
    sample_weight: np.ndarray,
    random_state: np.random.RandomState,
    x_squared_norms: Array | None = None,
) -> np.ndarray:
    """Greedy k-means++ seeds, as scikit-learn's ``kmeans_plusplus``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The rows, on their device.
    n_clusters : int
        Number of seeds.
    sample_weight : ndarray of shape (n_samples,)
        The rows' weights on the host, in X's dtype.
    random_state : numpy.random.RandomState
        Advanced exactly as scikit-learn advances it.
    x_squared_norms : array of shape (n_samples,), optional
        ``||x||^2`` of every row, on X's device.

    Returns
    -------
    indices : ndarray of shape (n_clusters,)
        The rows chosen as seeds, in the order chosen.
    """
    xp = array_namespace(X)
    device = device_of(X)
    n_samples = int(X.shape[0])
    if x_squared_norms is None:
        x_squared_norms = xp.sum(X * X, axis=1)
    n_local_trials = 2 + int(np.log(n_clusters))
    weights = xp.asarray(sample_weight, device=device)

    first = int(random_state.choice(n_samples, p=sample_weight / sample_weight.sum()))
    indices = [first]
    closest = _squared_distances(xp, X[first : first + 1, :], X, x_squared_norms)[0]
    potential = xp.sum(closest * weights)
    for _ in range(1, n_clusters):
        draws = random_state.uniform(size=n_local_trials) * _to_numpy(potential)
        cumulative = xp.cumulative_sum(weights * closest)
        candidates = xp.searchsorted(
            cumulative, xp.asarray(draws, dtype=cumulative.dtype, device=device)
        )
        candidates = xp.clip(candidates, max=n_samples - 1)
        distances = _squared_distances(
            xp, xp.take(X, candidates, axis=0), X, x_squared_norms
        )
        distances = xp.minimum(xp.expand_dims(closest, axis=0), distances)
        potentials = distances @ weights
        best = int(_to_numpy(xp.argmin(potentials)))
        potential = potentials[best]
        closest = distances[best, :]
        indices.append(int(_to_numpy(candidates[best])))
    return np.asarray(indices, dtype=np.int64)


def _nearest(xp: Any, X: Array, centres: Array) -> Array:
    """Nearest centre of every row, as scikit-learn's Lloyd step finds it."""
    scores = xp.expand_dims(xp.sum(centres * centres, axis=1), axis=0) - 2.0 * (
        X @ xp.matrix_transpose(centres)
    )
    return xp.argmin(scores, axis=1)


def _relocate_empty(
    xp: Any,
    X: Array,
    weights: Array,
    host_weights: np.ndarray,
    old: Array,
    labels: Array,
    sums: Array,
    totals: np.ndarray,
) -> Array:
    """Give each empty cluster one of the rows farthest from their centres.

    scikit-learn's ``_relocate_empty_clusters_dense``: the choice of rows
    goes through ``np.argpartition`` on the host, as there.
    """
    empty = np.flatnonzero(totals == 0)
    if empty.size == 0:
        return sums
    own = xp.take(old, labels, axis=0)
    distances = _to_numpy(xp.sum((X - own) ** 2, axis=1))
    if np.max(distances) == 0:
        return sums
    far = np.argpartition(distances, -empty.size)[: -empty.size - 1 : -1].copy()
    host_sums = _to_numpy(sums).copy()
    host_labels = _to_numpy(labels)
    rows = _to_numpy(xp.take(X, xp.asarray(far, device=device_of(X)), axis=0))
    for cluster, row, values in zip(empty, far, rows, strict=True):
        weight = host_weights[row]
        source = host_labels[row]
        host_sums[source] -= values * weight
        host_sums[cluster] = values * weight
        totals[cluster] = weight
        totals[source] -= weight
    return xp.asarray(host_sums, device=device_of(X))


def _lloyd_step(
    xp: Any, X: Array, weights: Array, host_weights: np.ndarray, centres: Array
) -> tuple[Array, Array]:
    """Labels of every row and the new centres (scikit-learn's Lloyd step)."""
    n_clusters = int(centres.shape[0])
    labels = _nearest(xp, X, centres)
    clusters = xp.arange(n_clusters, device=device_of(X))
    member = xp.astype(
        xp.expand_dims(labels, axis=1) == xp.expand_dims(clusters, axis=0), X.dtype
    )
    member = member * xp.expand_dims(weights, axis=1)
    sums = xp.matrix_transpose(member) @ X
    totals = _to_numpy(xp.sum(member, axis=0))
    sums = _relocate_empty(xp, X, weights, host_weights, centres, labels, sums, totals)
    filled = totals > 0
    scale = np.where(filled, 1.0 / np.where(filled, totals, 1.0), 0.0)
    new = sums * xp.asarray(scale[:, None].astype(totals.dtype), device=device_of(X))
    if not filled.all():
        # As scikit-learn: an empty cluster sits on the heaviest one.
        heaviest = int(np.argmax(totals))
        index = np.where(filled, np.arange(n_clusters), heaviest)
        new = xp.take(new, xp.asarray(index, device=device_of(X)), axis=0)
    return labels, new


def kmeans(
    X: Array,
    n_clusters: int,
    sample_weight: np.ndarray,
    random_state: np.random.RandomState,
) -> tuple[np.ndarray, Array]:
    """k-means++ seeds, then Lloyd's algorithm: scikit-learn's ``KMeans(n_init=1)``.

    The parameters are those of :func:`kmeans_plusplus` (``n_clusters``
    clusters); ``random_state`` is advanced as scikit-learn's KMeans
    advances it.

    Returns
    -------
    centres : ndarray of shape (n_clusters, n_features)
        The cluster centres, on the host, float64.
    labels : array of shape (n_samples,)
        The cluster of every row, on X's device.
    """
    xp = array_namespace(X)
    device = device_of(X)
    tol = float(_to_numpy(xp.mean(xp.var(X, axis=0)))) * _TOL
    # scikit-learn centres the rows for more accurate distances.
    mean = xp.mean(X, axis=0)
    X = X - mean
    x_squared_norms = xp.sum(X * X, axis=1)
    weights = xp.asarray(sample_weight, device=device)
    seeds = kmeans_plusplus(
        X, n_clusters, sample_weight, random_state, x_squared_norms=x_squared_norms
    )
    centres = xp.take(X, xp.asarray(seeds, device=device), axis=0)

    previous = None
    strict = False
    for _ in range(_MAX_ITER):
        labels, new = _lloyd_step(xp, X, weights, sample_weight, centres)
        shift = float(_to_numpy(xp.sum((new - centres) ** 2)))
        centres = new
        if previous is not None and bool(_to_numpy(xp.all(labels == previous))):
            strict = True
            break
        if shift <= tol:
            break
        previous = labels
    if not strict:
        # The labels of the final centres, as scikit-learn's last E-step.
        labels = _nearest(xp, X, centres)
    distinct = int(xp.unique_values(labels).shape[0])
    if distinct < n_clusters:
        warnings.warn(  # scikit-learn's warning, word for word
            f"Number of distinct clusters ({distinct}) found smaller than "
            f"n_clusters ({n_clusters}). Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return _to_numpy(centres + mean).astype(np.float64), labels
