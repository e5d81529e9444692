"""What a fit reports after each EM iteration, and a recorder for it.

:class:`GaussianMixture` calls its ``callback`` with an :class:`EMIteration`
once with the starting parameters of every initialisation (``n_iter == 0``)
and then after every M-step. :class:`EMHistory` is a ready-made callback that
keeps them all; the plots of EM (:mod:`gaussmix.plotting`) and the command
line's progress bar are driven by it, not by a copy of the EM loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, overload

import numpy as np

__all__ = ["EMHistory", "EMIteration"]


class EMIteration(NamedTuple):
    """The state of EM after one iteration, in the units of the data.

    Attributes
    ----------
    init : int
        Which initialisation (0 to ``n_init - 1``) this iteration belongs to.
    n_iter : int
        0 for the starting parameters, then 1, 2, ... after each M-step.
    lower_bound : float
        Mean log-likelihood of the data under the parameters *before* this
        iteration's M-step (the E-step that started it), as scikit-learn
        records it; ``-inf`` for ``n_iter == 0``.
    weights : ndarray of shape (n_components,)
        The component weights after this iteration.
    means : ndarray of shape (n_components, n_features)
        The component means after this iteration.
    covariances : ndarray
        The covariances after this iteration, shaped as ``covariances_`` of a
        fitted model with this ``covariance_type``.
    covariance_type : str
        The covariance type, which tells how to read ``covariances``.
    """

    init: int
    n_iter: int
    lower_bound: float
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance_type: str


class EMHistory:
    """A callback that records every :class:`EMIteration` of a fit.

    Pass an instance as ``callback`` to :class:`~gaussmix.GaussianMixture`;
    after ``fit`` it holds the starting parameters and every iteration of
    every initialisation, in order. It is a sequence of :class:`EMIteration`.

    Examples
    --------
    >>> from gaussmix import EMHistory, GaussianMixture
    >>> from gaussmix.datasets import load_faithful
    >>> X = load_faithful().data
    >>> history = EMHistory()
    >>> gm = GaussianMixture(2, random_state=0, callback=history).fit(X)
    >>> history[0].n_iter, len(history) == gm.n_iter_ + 1
    (0, True)
    >>> bool(history[-1].lower_bound == gm.lower_bound_)
    True
    """

    def __init__(self) -> None:
        self.iterations: list[EMIteration] = []

    def __call__(self, iteration: EMIteration) -> None:
        self.iterations.append(iteration)

    def __len__(self) -> int:
        return len(self.iterations)

    def __iter__(self) -> Iterator[EMIteration]:
        return iter(self.iterations)

    @overload
    def __getitem__(self, index: int) -> EMIteration: ...

    @overload
    def __getitem__(self, index: slice) -> list[EMIteration]: ...

    def __getitem__(self, index: int | slice) -> EMIteration | list[EMIteration]:
        return self.iterations[index]

    def of_init(self, init: int) -> list[EMIteration]:
        """The iterations of one initialisation, starting parameters first.

        Parameters
        ----------
        init : int
            The initialisation, 0 to ``n_init - 1``.

        Returns
        -------
        iterations : list of EMIteration
        """
        return [it for it in self.iterations if it.init == init]

    def __repr__(self) -> str:
        return f"EMHistory({len(self.iterations)} iterations)"
