"""Helpers shared by the tests."""

from pathlib import Path

import numpy as np

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
