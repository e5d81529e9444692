"""Contract tier for the workflow estimators: scikit-learn's own checks."""

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussmix import (
    DegenerateDataWarning,
    GaussianMixtureAnomalyDetector,
    GaussianMixtureIC,
)


@parametrize_with_checks(
    [
        GaussianMixtureIC(
            n_components=(1, 2),
            covariance_type=("full", "diag"),
            n_init=1,
            tol=1e-3,
            max_iter=100,
            random_state=0,
        ),
        GaussianMixtureAnomalyDetector(random_state=0),
        GaussianMixtureAnomalyDetector(
            n_components=2, covariance_type="tied", contamination=0.1, random_state=0
        ),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    # As in test_estimator_checks.py: the checks' toy data are often
    # degenerate on purpose, which is not what they test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        check(estimator)
