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


@pytest.fixture(autouse=True)
def _kernels_for_their_own_sizes(monkeypatch):
    """Every test starts with the compiled kernels (where numba is
    installed) kept to large E-steps, whatever a test before it asked for
    (``gaussmix._kernels.warm_up(every_size=True)``)."""
    from gaussmix import _kernels

    monkeypatch.setattr(_kernels, "_every_size", False)


@pytest.fixture(params=["by size", "expanded"])
def e_step_form(request, monkeypatch) -> str:
    """Both forms a fit of few rows may take its E-steps in: as the engine
    chooses by size (exact, per-component differences, for so few rows:
    ``gaussmix._em.exact_is_cheaper``), and expanded wherever the expansion
    holds, as on more rows."""
    if request.param == "expanded":
        from gaussmix import _em

        monkeypatch.setattr(_em, "_EXACT_CHEAPER", 0)
    return request.param
