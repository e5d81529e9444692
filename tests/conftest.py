"""Shared fixtures: small, seeded data sets."""

import numpy as np
import pytest

from gaussmix.datasets import load_faithful, make_elliptical_blobs


@pytest.fixture(scope="session")
def faithful() -> np.ndarray:
    return load_faithful().data


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    """600 points in 3-D from 3 elongated, rotated clusters."""
    X, _ = make_elliptical_blobs(600, 3, 3, random_state=7)
    return X
