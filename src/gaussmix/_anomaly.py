"""Anomaly detection: points of low density under a fitted mixture are outliers."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._covariance import COVARIANCE_TYPES
from ._init import INIT_METHODS
from ._mixture import GaussianMixture
from ._source import array_library, rows_for_fit, rows_for_prediction

Array = np.ndarray

__all__ = ["GaussianMixtureAnomalyDetector"]


def training_offset(scores: Any, contamination: float) -> float:
    """``np.percentile(scores, 100 * contamination)``, its default (linear)
    method, of the training rows' log-densities.

    NumPy scores go to ``np.percentile``. Over a Dask array or a tensor the
    two order statistics around the quantile's rank are found where the
    scores are (Dask's ``topk`` of the smallest, up to that rank, brought to
    the client; a sort on the device, two values brought to the host), and
    interpolated as ``np.percentile`` does: the value it gives for the same
    scores, bit for bit (tested).
    """
    if isinstance(scores, np.ndarray):
        return float(np.percentile(scores, 100.0 * contamination))
    n = int(scores.shape[0])
    quantile = 100.0 * contamination / 100.0
    # NumPy's virtual index for its linear method.
    virtual = (n - 1) * quantile
    below = min(max(math.floor(virtual), 0), n - 1)
    above = min(below + 1, n - 1)
    if array_library(scores) == "dask":
        import dask.array as da

        smallest = np.asarray(da.topk(scores, -(above + 1)).compute())
        low, high = float(smallest[below]), float(smallest[above])
    else:
        from array_api_compat import array_namespace

        ordered = array_namespace(scores).sort(scores)
        low, high = float(ordered[below]), float(ordered[above])
    gamma = virtual - below
    difference = high - low
    if gamma >= 0.5:
        return high - difference * (1 - gamma)
    return low + difference * gamma


class GaussianMixtureAnomalyDetector(OutlierMixin, BaseEstimator):
    """Flag the samples of lowest density under a Gaussian mixture as outliers.

    Fits a :class:`~gaussmix.GaussianMixture` to the training data and sets
    ``offset_`` to the ``contamination`` quantile of the training samples'
    log-densities: the fraction ``contamination`` of the training data with
    the lowest density is then flagged. Follows scikit-learn's outlier
    detector contract (like :class:`sklearn.covariance.EllipticEnvelope`),
    so it works in a :class:`~sklearn.pipeline.Pipeline`.

    X may be anything :class:`~gaussmix.GaussianMixture` fits: a Dask array
    or a torch or CuPy tensor stays on its cluster or device, where the
    mixture is fitted and the threshold found, and the outputs of
    :meth:`score_samples`, :meth:`decision_function` and :meth:`predict`
    are then arrays of the same kind.

    Parameters
    ----------
    n_components : int, default=1
        Components of the mixture that models the normal data.
    contamination : float, default=0.05
        The expected fraction of outliers in the training data, in (0, 0.5].
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Covariance type of the mixture.
    tol : float, default=1e-3
        EM convergence threshold.
    reg_covar : float, default=1e-6
        Added to the diagonal of the covariances.
    max_iter : int, default=100
        EM iterations per initialisation.
    n_init : int, default=1
        Initialisations; the best is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, \
default="kmeans"
        How EM starts.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation.

    Attributes
    ----------
    mixture_ : GaussianMixture
        The fitted density model.
    n_iter_ : int
        EM iterations of the mixture's best initialisation.
    offset_ : float
        The log-density threshold: ``decision_function = score_samples -
        offset_``, negative for outliers.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during fit, when X had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixtureAnomalyDetector
    >>> from gaussmix.datasets import load_faithful
    >>> X = load_faithful().data
    >>> detector = GaussianMixtureAnomalyDetector(
    ...     n_components=2, contamination=0.02, random_state=0).fit(X)
    >>> labels = detector.predict(X)
    >>> int(np.sum(labels == -1))
    6
    >>> detector.predict([[3.5, 70.0], [2.0, 90.0]])
    array([ 1, -1])
    """

    mixture_: GaussianMixture
    n_iter_: int
    offset_: float

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "contamination": [Interval(Real, 0.0, 0.5, closed="right")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        contamination: float = 0.05,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        random_state: Any = None,
    ) -> None:
        self.n_components = n_components
        self.contamination = contamination
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> GaussianMixtureAnomalyDetector:
        """Fit the mixture and set the threshold from the training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, mostly normal.
        y : Ignored
            Present for API consistency.

        Returns
        -------
        self : GaussianMixtureAnomalyDetector
            The fitted detector.
        """
        self._validate_params()
        X = rows_for_fit(self, X)
        self.mixture_ = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            random_state=self.random_state,
        ).fit(X)
        self.n_iter_ = self.mixture_.n_iter_
        scores = self.mixture_.score_samples(X)
        self.offset_ = training_offset(scores, self.contamination)
        return self

    def _validated(self, X: Any) -> Any:
        check_is_fitted(self)
        return rows_for_prediction(self, X)

    def score_samples(self, X: Any) -> Array:
        """Log-density of each sample under the mixture (lower is more abnormal).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        X = self._validated(X)
        return self.mixture_.score_samples(X)

    def decision_function(self, X: Any) -> Array:
        """``score_samples(X) - offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> Array:
        """+1 for inliers, -1 for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        decision = self.decision_function(X)
        if isinstance(decision, np.ndarray) or array_library(decision) == "dask":
            return np.where(decision >= 0, 1, -1)
        from array_api_compat import array_namespace

        return array_namespace(decision).where(decision >= 0, 1, -1)
