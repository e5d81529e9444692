"""Online EM: one stepwise update per chunk, for streams read only once.

Stepwise EM (Sato and Ishii 2000; Cappé and Moulines 2009; Liang and Klein
2009) keeps running sufficient statistics per unit weight, ``s``. Chunk
``t`` (counting from 0) goes through one E-step under the current
parameters, giving statistics ``s_t`` per unit weight, which are blended in
with the step size ``eta_t = (t + 1) ** -STEP_DECAY``:

    s <- (1 - eta_t) * s + eta_t * s_t

and the M-step turns ``s`` into the new parameters. ``eta_0 = 1``, so the
first chunk replaces whatever came before; ``STEP_DECAY`` in (0.5, 1] is
what makes the updates converge (the sum of the steps diverges, the sum of
their squares does not): 1 averages all the chunks' statistics, smaller
values forget the early chunks (taken under poorer parameters) faster.

Statistics are taken about the shift of their own E-step, so the running
statistics are re-centred (:meth:`SufficientStatistics.recentred`) before
they are blended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils import check_random_state

from ._covariance import CovarianceStrategy
from ._em import Params, m_step
from ._source import array_source, column_variances
from ._stats import SufficientStatistics

if TYPE_CHECKING:
    from ._mixture import GaussianMixture

Array = np.ndarray

__all__ = ["STEP_DECAY", "blend", "model_statistics", "partial_fit", "step_size"]

# Measured on streams of 300 chunks of a 3-component mixture in 3-D: from
# a good k-means start (1,000-row chunks), 1.0 ends closest to the batch fit
# and 0.7 close behind (held-out log-likelihood 3e-4 below the batch fit's);
# from a poor start (random_from_data, 200-row chunks), 0.6 to 0.7 recover
# within 100 chunks while 1.0, which forgets the early chunks only as 1/t,
# is still 0.1 below after 300. 0.7 is safe in both.
STEP_DECAY = 0.7


def step_size(t: int, decay: float = STEP_DECAY) -> float:
    """``eta_t = (t + 1) ** -decay``: 1 for the first chunk (t = 0)."""
    return float((t + 1) ** -decay)


def blend(
    running: SufficientStatistics, new: SufficientStatistics, eta: float
) -> SufficientStatistics:
    """``(1 - eta) * running + eta * new`` (both per unit weight).

    ``running`` is re-centred to ``new``'s shift first. The worst-explained
    sample is the newer one, so that an emptied component is re-seeded
    from data still in view.
    """
    mixed = running.recentred(new.shift).scaled(1.0 - eta) + new.scaled(eta)
    return SufficientStatistics(
        mixed.shift,
        mixed.resp_sum,
        mixed.diff_sum,
        mixed.scatter,
        mixed.weight_sum,
        mixed.loglik_sum,
        new.worst_loglik,
        new.worst_sample,
    )


def model_statistics(
    params: Params, strategy: CovarianceStrategy, reg_covar: float
) -> SufficientStatistics:
    """Statistics per unit weight whose M-step gives back ``params``.

    Taken about the means: the weights as effective counts, no mean
    differences, and each component's weight times its covariance less
    ``reg_covar`` (which the M-step adds back) as scatter.
    """
    n_components, n_features = params.means.shape
    dense = strategy.dense(params.covariances, n_components, n_features)
    dense = strategy.scatter_from_dense(dense - reg_covar * np.eye(n_features))
    weights = np.asarray(params.weights, dtype=np.float64)
    scatter = weights.reshape((-1,) + (1,) * (dense.ndim - 1)) * dense
    return SufficientStatistics(
        shift=np.asarray(params.means, dtype=np.float64),
        resp_sum=weights,
        diff_sum=np.zeros((n_components, n_features)),
        scatter=scatter,
        weight_sum=1.0,
        loglik_sum=0.0,
    )


@dataclass
class _OnlineState:
    """What ``partial_fit`` carries from one call to the next (fitting units)."""

    statistics: SufficientStatistics  # running, per unit weight
    n_steps: int  # chunks blended in so far (a prior fit counts as one)
    scale: float
    reg_covar: float
    variance_floor: Array
    means: Array  # the estimator's means_ when this state was left


def partial_fit(estimator: GaussianMixture, X: Any, sample_weight: Any) -> None:
    """One stepwise EM update of ``estimator`` with the rows X (see module)."""
    estimator._validate_params()
    state: _OnlineState | None = getattr(estimator, "_online_state", None)
    fitted = hasattr(estimator, "means_")
    if state is not None and (not fitted or state.means is not estimator.means_):
        state = None  # refitted or reloaded since: continue from that model
    if fitted:
        dtype = estimator.means_.dtype.type
        source = array_source(estimator, X, sample_weight, reset=False, dtype=dtype)
    else:
        source = array_source(
            estimator,
            X,
            sample_weight,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2,
        )
    X = source.X
    strategy = estimator._strategy()
    eps = float(np.finfo(X.dtype).eps)

    if state is None:
        scale = estimator._fitting_scale(source.magnitude())
        scaled = source.scaled(scale)
        variances = column_variances(scaled)
        reg_covar = float(estimator.reg_covar) * scale * scale
        variance_floor = 1e3 * eps * (variances + np.mean(variances))
        if fitted:
            params = estimator._scaled_params(scale)
            running = model_statistics(params, strategy, reg_covar)
            state = _OnlineState(
                running, 1, scale, reg_covar, variance_floor, estimator.means_
            )
        else:
            if scaled.n_effective() < estimator.n_components:
                raise ValueError(
                    "The first chunk given to partial_fit initialises the "
                    f"mixture, so it needs n_samples >= n_components "
                    f"= {estimator.n_components}, but got "
                    f"{scaled.n_effective()} (with positive weight). Give a "
                    "larger first chunk."
                )
            init = estimator._checked_initial_parameters(strategy, X.shape[1], X.dtype)
            params = estimator._initial_params(
                scaled,
                strategy,
                init,
                scale,
                reg_covar,
                variance_floor,
                check_random_state(estimator.random_state),
            )
            running = model_statistics(params, strategy, reg_covar)  # replaced
            state = _OnlineState(
                running, 0, scale, reg_covar, variance_floor, np.empty(0)
            )
        estimator._callback_context = (0, scale)
        estimator._notify_callback(0, params, -math.inf)
    else:
        scaled = source.scaled(state.scale)
        params = estimator._scaled_params(state.scale)

    stats = scaled.e_step(params, strategy)
    lower_bound = stats.mean_loglik
    if not math.isfinite(lower_bound):
        raise ValueError(
            "The log-likelihood of this chunk is not finite: its values are "
            "far outside the scale of the first chunk. Scale the input data "
            "(for instance with sklearn.preprocessing.StandardScaler)."
        )
    eta = step_size(state.n_steps)
    state.statistics = blend(
        state.statistics, stats.scaled(1.0 / stats.weight_sum), eta
    )
    state.n_steps += 1
    params, _ = m_step(
        state.statistics, strategy, state.reg_covar, state.variance_floor, eps
    )
    estimator._set_fitted(params, X.dtype, state.scale)
    shift = X.shape[1] * math.log(state.scale)
    estimator.converged_ = False
    estimator.n_iter_ = state.n_steps
    estimator.lower_bound_ = lower_bound + shift
    previous = getattr(estimator, "lower_bounds_", []) if fitted else []
    estimator.lower_bounds_ = [*previous, lower_bound + shift]
    state.means = estimator.means_
    estimator._online_state = state
    estimator._callback_context = (0, state.scale)
    estimator._notify_callback(state.n_steps, params, lower_bound)
