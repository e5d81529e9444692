"""Example data: Old Faithful, shipped inside the package, and a generator of
elliptical clusters.

>>> from gaussmix.datasets import load_faithful
>>> faithful = load_faithful()
>>> faithful.data.shape
(272, 2)
>>> faithful.feature_names
['eruptions', 'waiting']
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import Any

import numpy as np
from sklearn.utils import Bunch, check_random_state

__all__ = ["load_faithful", "make_elliptical_blobs"]

_FAITHFUL_DESCR = """\
Old Faithful geyser, Yellowstone National Park: 272 eruptions.

eruptions  eruption time (minutes)
waiting    waiting time to the next eruption (minutes)

Source: R's datasets package, ``faithful`` (Haerdle 1991; Azzalini and Bowman
1990, Applied Statistics 39:357-365). Two clear clusters, short and long
eruptions; mclust's BIC chooses three components with a shared (tied)
covariance (EEE,3).
"""


def load_faithful(*, return_X_y: bool = False) -> Any:
    """The Old Faithful geyser data (272 x 2), embedded in the package.

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return only the data array.

    Returns
    -------
    data : sklearn.utils.Bunch or ndarray of shape (272, 2)
        A Bunch with ``data`` (float64, columns eruptions and waiting, in
        minutes), ``feature_names`` and ``DESCR``; or the array alone.
    """
    text = resources.files("gaussmix").joinpath("data/faithful.csv").read_text("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    data = np.array([[float(v) for v in row] for row in body], dtype=np.float64)
    if return_X_y:
        return data
    return Bunch(data=data, feature_names=header, DESCR=_FAITHFUL_DESCR)


def make_elliptical_blobs(
    n_samples: int = 500,
    n_components: int = 3,
    n_features: int = 2,
    *,
    separation: float = 6.0,
    elongation: float = 4.0,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Elongated, rotated Gaussian clusters: where k-means fails and a GMM does not.

    Each cluster is a Gaussian with a random rotation and axis lengths that
    differ by up to ``elongation``; centres are spread ``separation`` units
    apart on average.

    Parameters
    ----------
    n_samples : int, default=500
        Total number of points, split as evenly as possible.
    n_components : int, default=3
        Number of clusters.
    n_features : int, default=2
        Dimension.
    separation : float, default=6.0
        Scale of the spread of the cluster centres.
    elongation : float, default=4.0
        Ratio of the longest to the shortest axis of each cluster (>= 1).
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        The cluster of each point.

    Examples
    --------
    >>> from gaussmix.datasets import make_elliptical_blobs
    >>> X, y = make_elliptical_blobs(300, random_state=0)
    >>> X.shape, sorted(set(y.tolist()))
    ((300, 2), [0, 1, 2])
    """
    if n_samples < n_components or n_components < 1 or n_features < 1:
        raise ValueError(
            "make_elliptical_blobs needs n_samples >= n_components >= 1 and "
            f"n_features >= 1, got {n_samples}, {n_components}, {n_features}."
        )
    if elongation < 1:
        raise ValueError(f"elongation must be >= 1, got {elongation}.")
    rng = check_random_state(random_state)
    counts = np.full(n_components, n_samples // n_components)
    counts[: n_samples % n_components] += 1
    centres = rng.uniform(-separation, separation, size=(n_components, n_features))
    blocks, labels = [], []
    for k, count in enumerate(counts):
        rotation, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        axes = np.geomspace(1.0, 1.0 / elongation, n_features) * rng.uniform(0.7, 1.3)
        z = rng.standard_normal((count, n_features)) * axes
        blocks.append(centres[k] + z @ rotation.T)
        labels.append(np.full(count, k))
    return np.vstack(blocks), np.concatenate(labels)
