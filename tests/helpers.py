"""Helpers shared by the tests."""

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import DegenerateDataWarning

DATA = Path(__file__).parent / "data"
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def read_csv(name: str, columns: slice | None = None) -> np.ndarray:
    """A CSV file of tests/data (one header row) as a float64 array."""
    rows = (DATA / name).read_text().strip().splitlines()[1:]
    values = [row.split(",") for row in rows]
    if columns is not None:
        values = [row[columns] for row in values]
    return np.array(values, dtype=np.float64)


def start_params(X, n_components, covariance_type, seed=0):
    """Deliberately rough but valid starting parameters for EM."""
    rng = np.random.RandomState(seed)
    means = X[rng.choice(len(X), n_components, replace=False)] + 0.1
    weights = rng.uniform(0.5, 1.5, n_components)
    weights /= weights.sum()
    var = X.var(axis=0)
    if covariance_type == "full":
        prec = np.stack([np.diag(1.0 / var)] * n_components)
    elif covariance_type == "tied":
        prec = np.diag(1.0 / var)
    elif covariance_type == "diag":
        prec = np.tile(1.0 / var, (n_components, 1))
    else:
        prec = np.full(n_components, 1.0 / var.mean())
    return {"weights_init": weights, "means_init": means, "precisions_init": prec}


def correlated(condition, n_features=4, seed=0, n_samples=20_000, clusters=1):
    """One component, rotated, its covariance of the given condition number;
    or as many ``clusters`` of it, 3 apart along its widest direction."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(n_features, n_features)))[0]
    spreads = np.sqrt(np.geomspace(1.0, 1.0 / condition, n_features))
    X = (rng.normal(size=(n_samples, n_features)) * spreads) @ rotation.T
    if clusters > 1:
        X += 3.0 * rng.integers(clusters, size=(n_samples, 1)) * rotation[:, 0]
    return X


def three_iterations_from_one_start(X_start, *fits):
    """One component fitted three EM iterations by each (estimator, rows) of
    ``fits``, all from the component of one iteration on ``X_start``, with
    no regularisation. A variance 1e-12 of the largest is taken for a
    collapse (a warning), and three iterations do not converge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DegenerateDataWarning)
        start = SkGaussianMixture(1, max_iter=1, reg_covar=0.0).fit(X_start)
        kwargs = dict(
            tol=0, max_iter=3, reg_covar=0.0,
            means_init=start.means_, precisions_init=start.precisions_,
        )  # fmt: skip
        return [estimator(1, **kwargs).fit(rows) for estimator, rows in fits]


def assert_thinnest_directions_kept(covariances, references, rel):
    """Each covariance's variance along its reference's thinnest direction
    is that direction's variance, to ``rel``."""
    for covariance, reference in zip(covariances, references, strict=True):
        values, vectors = np.linalg.eigh(reference)
        thinnest = vectors[:, 0] @ covariance @ vectors[:, 0]
        assert abs(thinnest - values[0]) <= rel * values[0]
