"""Exceptions and warnings raised by gaussmix."""

from __future__ import annotations

__all__ = ["DegenerateCovarianceError", "DegenerateDataWarning"]


class DegenerateDataWarning(UserWarning):
    """EM met degenerate data and healed it.

    Raised as a warning when a component lost all its samples and was
    re-seeded, or when a collapsed covariance was floored relative to the
    data's scale. The fit is usable, but the data or the number of
    components deserves a look.
    """


class DegenerateCovarianceError(ValueError):
    """A covariance is not positive definite.

    A :class:`ValueError`, so code that catches scikit-learn's error keeps
    working. ``component`` is the index of the offending component, or None
    for a tied covariance.
    """

    def __init__(self, message: str, component: int | None) -> None:
        super().__init__(message)
        self.component = component
