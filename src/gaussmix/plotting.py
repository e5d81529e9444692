"""Pictures of Gaussian mixtures and of EM at work (matplotlib).

Import it explicitly (``import gaussmix.plotting``); it is the only module
of gaussmix that needs matplotlib (``pip install 'gaussmix[plot]'``). Every
function returns the :class:`~matplotlib.axes.Axes` or
:class:`~matplotlib.figure.Figure` it drew on; functions that take ``ax``
draw into it, the others create a figure with :mod:`matplotlib.pyplot`, so
``plt.show()`` and notebooks work as usual. Nothing is shown or saved unless
you ask (:func:`animate_em` writes the GIF it makes).

With more than two features, ``features`` picks the pair of columns drawn;
ellipses and densities are then those of the mixture's marginal on that pair
(exact for a Gaussian mixture).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from gaussmix import GaussianMixture
>>> from gaussmix.datasets import load_faithful
>>> from gaussmix.plotting import plot_mixture
>>> faithful = load_faithful()
>>> gm = GaussianMixture(2, random_state=0).fit(faithful.data)
>>> ax = plot_mixture(gm, faithful.data, feature_names=faithful.feature_names)
>>> len(ax.patches)                  # 1-, 2- and 3-sigma ellipses of 2 components
6
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.utils import check_random_state

try:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse
except ImportError as exc:  # pragma: no cover - exercised without matplotlib
    raise ImportError(
        "gaussmix.plotting needs matplotlib, which is not installed "
        f"({exc}). Install it with: pip install 'gaussmix[plot]'"
    ) from None

from ._covariance import get_covariance
from ._history import EMHistory, EMIteration
from ._mixture import GaussianMixture

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ._anomaly import GaussianMixtureAnomalyDetector
    from ._segmentation import Segmentation
    from ._selection import GaussianMixtureIC

Array = np.ndarray

__all__ = [
    "animate_em",
    "plot_anomalies",
    "plot_criteria",
    "plot_density",
    "plot_em_stages",
    "plot_generated",
    "plot_gmm_vs_kmeans",
    "plot_mixture",
    "plot_segmentation",
    "record_em",
]

_SIGMA_ALPHAS = {1: 0.95, 2: 0.6, 3: 0.35}
_CRITERION_NAMES = {"bic": "BIC", "aic": "AIC", "icl": "ICL"}


# --------------------------------------------------------------- internals
@dataclass
class _Mixture:
    """Weights, means and dense covariances (K x D x D) of any mixture-like."""

    weights: Array
    means: Array
    covariances: Array
    model: GaussianMixture | None = None

    def marginal(self, features: tuple[int, int]) -> _Mixture:
        idx = list(features)
        return _Mixture(
            self.weights,
            self.means[:, idx],
            self.covariances[:, idx][:, :, idx],
        )

    def log_weighted(self, X: Array) -> Array:
        """``log w_k + log N(x | mu_k, Sigma_k)``, n x K."""
        return np.column_stack(
            [
                np.log(w) + multivariate_normal.logpdf(X, m, c, allow_singular=True)
                for w, m, c in zip(
                    self.weights, self.means, self.covariances, strict=True
                )
            ]
        ).reshape(len(X), -1)

    def responsibilities(self, X: Array) -> Array:
        if self.model is not None:
            return self.model.predict_proba(X)
        weighted = self.log_weighted(X)
        return np.exp(weighted - logsumexp(weighted, axis=1, keepdims=True))

    def log_density(self, X: Array) -> Array:
        return logsumexp(self.log_weighted(X), axis=1)


def _as_mixture(obj: Any) -> _Mixture:
    """A fitted GaussianMixture, GaussianMixtureIC, anomaly detector or EMIteration."""
    if isinstance(obj, EMIteration):
        k, d = obj.means.shape
        dense = get_covariance(obj.covariance_type).dense(obj.covariances, k, d)
        return _Mixture(np.asarray(obj.weights), np.asarray(obj.means), dense)
    model = getattr(obj, "best_estimator_", None) or getattr(obj, "mixture_", obj)
    if not hasattr(model, "means_"):
        raise ValueError(
            "expected a fitted GaussianMixture, GaussianMixtureIC, "
            f"GaussianMixtureAnomalyDetector or an EMIteration, got {obj!r}; "
            "call fit first."
        )
    k, d = model.means_.shape
    dense = get_covariance(model.covariance_type).dense(
        np.asarray(model.covariances_, dtype=np.float64), k, d
    )
    return _Mixture(
        np.asarray(model.weights_, dtype=np.float64),
        np.asarray(model.means_, dtype=np.float64),
        dense,
        model if isinstance(model, GaussianMixture) else None,
    )


def _check_X(X: Any, n_features: int | None = None) -> Array:
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"X must be a 2-D array of samples, got shape {array.shape}.")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"X has {array.shape[1]} features but the model has {n_features}."
        )
    return array


def _check_features(features: Sequence[int], n_features: int) -> tuple[int, int]:
    if len(features) != 2:
        raise ValueError(f"features must name two columns, got {features!r}.")
    i, j = (int(f) for f in features)
    if not (0 <= i < n_features and 0 <= j < n_features) or i == j:
        raise ValueError(
            f"features must be two different columns in [0, {n_features}), "
            f"got {tuple(features)!r}."
        )
    if n_features < 2:
        raise ValueError("plots of a mixture need at least two features.")
    return i, j


def _feature_labels(
    feature_names: Sequence[str] | None, model: Any, features: tuple[int, int]
) -> tuple[str, str]:
    names: Sequence[Any] | None = feature_names
    if names is None:
        names = getattr(model, "feature_names_in_", None)
    if names is None:
        return f"feature {features[0]}", f"feature {features[1]}"
    return str(names[features[0]]), str(names[features[1]])


def _palette(n: int) -> Array:
    """n distinguishable RGB colours."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    count = 10 if n <= 10 else 20
    return np.array([to_rgb(cmap(i % count)) for i in range(n)])


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.8)) -> Axes:
    if ax is not None:
        return ax
    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def _ellipse_geometry(cov: Array, n_sigma: float) -> tuple[float, float, float]:
    """Width, height and angle (degrees) of the n-sigma ellipse of a 2x2 covariance."""
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 0.0)
    width, height = 2.0 * n_sigma * np.sqrt(values[::-1])
    angle = float(np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1])))
    return float(width), float(height), angle


def _draw_ellipses(
    ax: Axes, mixture: _Mixture, colors: Array, sigmas: Iterable[float]
) -> None:
    """n-sigma ellipses of every component of a 2-D mixture, and its means."""
    for k, (mean, cov) in enumerate(
        zip(mixture.means, mixture.covariances, strict=True)
    ):
        for n_sigma in sigmas:
            width, height, angle = _ellipse_geometry(cov, n_sigma)
            ax.add_patch(
                Ellipse(
                    (float(mean[0]), float(mean[1])),
                    width,
                    height,
                    angle=angle,
                    fill=False,
                    edgecolor=colors[k],
                    linewidth=2.0 if n_sigma == 1 else 1.5,
                    alpha=_SIGMA_ALPHAS.get(int(n_sigma), 0.3),
                    gid=f"ellipse-{k}-{n_sigma:g}sigma",
                    zorder=3,
                )
            )
    ax.scatter(
        mixture.means[:, 0],
        mixture.means[:, 1],
        marker="X",
        s=110,
        c=colors[: len(mixture.means)],
        edgecolors="black",
        linewidths=1.0,
        zorder=4,
        label="_means",
    )


def _scatter_by_responsibility(
    ax: Axes, X2: Array, resp: Array | None, colors: Array, size: float = 14
) -> None:
    if resp is None:
        point_colors: Any = "0.55"
    else:
        point_colors = np.clip(resp @ colors[: resp.shape[1]], 0.0, 1.0)
    ax.scatter(
        X2[:, 0], X2[:, 1], c=point_colors, s=size, alpha=0.8, linewidths=0, zorder=2
    )


def _limits(X2: Array, margin: float = 0.08) -> tuple[tuple[float, float], ...]:
    lo, hi = X2.min(axis=0), X2.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _set_limits(ax: Axes, X2: Array) -> None:
    xlim, ylim = _limits(X2)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)


def _sigma_legend(ax: Axes, sigmas: Sequence[float]) -> None:
    handles = [
        Line2D(
            [],
            [],
            color="0.2",
            alpha=_SIGMA_ALPHAS.get(int(s), 0.3),
            linewidth=2.0 if s == 1 else 1.5,
            label=f"{s:g}-sigma ellipse",
        )
        for s in sigmas
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="X",
            linestyle="",
            markerfacecolor="white",
            markeredgecolor="black",
            markersize=9,
            label="component mean",
        )
    )
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)


# ------------------------------------------------------------ the mixture
def plot_mixture(
    model: Any,
    X: Any,
    *,
    ax: Axes | None = None,
    features: Sequence[int] = (0, 1),
    sigmas: Sequence[float] = (1, 2, 3),
    feature_names: Sequence[str] | None = None,
    title: str | None = None,
    legend: bool = True,
) -> Axes:
    """Data coloured by responsibility, with each component's sigma ellipses.

    Each point's colour mixes the components' colours in proportion to its
    responsibilities, so uncertain points between clusters look blended.

    Parameters
    ----------
    model : GaussianMixture, GaussianMixtureIC, GaussianMixtureAnomalyDetector \
or EMIteration
        The fitted mixture (for a selector, its best model).
    X : array-like of shape (n_samples, n_features)
        The data to draw.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.
    features : pair of int, default=(0, 1)
        The two columns to draw.
    sigmas : sequence of float, default=(1, 2, 3)
        Mahalanobis radii of the ellipses drawn around each mean.
    feature_names : sequence of str, default=None
        Axis labels; defaults to the model's ``feature_names_in_`` or
        "feature i".
    title : str, default=None
        The title; a description of the model when None.
    legend : bool, default=True
        Explain the ellipses and the mean markers.

    Returns
    -------
    ax : matplotlib Axes
    """
    mixture = _as_mixture(model)
    X = _check_X(X, mixture.means.shape[1])
    pair = _check_features(features, X.shape[1])
    ax = _new_axes(ax)
    colors = _palette(len(mixture.weights))
    X2 = X[:, list(pair)]
    _scatter_by_responsibility(ax, X2, mixture.responsibilities(X), colors)
    _draw_ellipses(ax, mixture.marginal(pair), colors, sigmas)
    _set_limits(ax, X2)
    xlabel, ylabel = _feature_labels(feature_names, model, pair)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is None:
        inner = getattr(model, "best_estimator_", None) or getattr(
            model, "mixture_", model
        )
        kind = getattr(inner, "covariance_type", None) or getattr(
            model, "covariance_type", ""
        )
        title = f"Gaussian mixture: {len(mixture.weights)} components, {kind}"
    ax.set_title(title)
    if legend:
        _sigma_legend(ax, sigmas)
    return ax


def plot_density(
    model: Any,
    X: Any = None,
    *,
    ax: Axes | None = None,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
    grid_size: int = 150,
    n_levels: int = 12,
    title: str | None = None,
) -> Axes:
    """Filled contours of the mixture's log-density, with the data on top.

    Parameters
    ----------
    model : GaussianMixture, GaussianMixtureIC, GaussianMixtureAnomalyDetector \
or EMIteration
        The fitted mixture.
    X : array-like of shape (n_samples, n_features), default=None
        Data drawn over the contours; it also sets the extent of the grid.
        Without X the grid spans 3.5 standard deviations around the means.
    ax : matplotlib Axes, default=None
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None
    grid_size : int, default=150
        Grid points per axis.
    n_levels : int, default=12
        Number of contour levels, spanning the top 12 units of log-density.
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    mixture = _as_mixture(model)
    n_features = mixture.means.shape[1]
    pair = _check_features(features, n_features)
    marginal = mixture.marginal(pair)
    ax = _new_axes(ax)
    if X is not None:
        X2 = _check_X(X, n_features)[:, list(pair)]
        xlim, ylim = _limits(X2)
    else:
        X2 = None
        spread = np.sqrt(np.einsum("kii->ki", marginal.covariances))
        lo = np.min(marginal.means - 3.5 * spread, axis=0)
        hi = np.max(marginal.means + 3.5 * spread, axis=0)
        xlim, ylim = (lo[0], hi[0]), (lo[1], hi[1])
    xs = np.linspace(*xlim, grid_size)
    ys = np.linspace(*ylim, grid_size)
    gx, gy = np.meshgrid(xs, ys)
    log_density = marginal.log_density(np.column_stack([gx.ravel(), gy.ravel()]))
    log_density = log_density.reshape(gx.shape)
    top = float(np.max(log_density))
    levels = np.linspace(top - 12.0, top, n_levels + 1)
    filled = ax.contourf(
        gx,
        gy,
        np.maximum(log_density, levels[0]),
        levels=levels,
        cmap="viridis",
        zorder=1,
    )
    ax.figure.colorbar(filled, ax=ax, label="log-density")
    if X2 is not None:
        ax.scatter(
            X2[:, 0],
            X2[:, 1],
            s=8,
            c="white",
            edgecolors="black",
            linewidths=0.3,
            zorder=2,
        )
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    xlabel, ylabel = _feature_labels(feature_names, model, pair)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else "Density of the mixture")
    return ax


# ------------------------------------------------------------- EM at work
def record_em(
    X: Any,
    n_components: int,
    *,
    covariance_type: str = "full",
    init: str = "circles",
    max_iter: int = 100,
    tol: float = 1e-4,
    random_state: Any = None,
) -> tuple[GaussianMixture, EMHistory]:
    """Fit a GaussianMixture and record every EM iteration.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    init : {"circles", "kmeans", "k-means++", "random", "random_from_data"}, \
default="circles"
        "circles" is the textbook start: means at randomly chosen samples,
        equal weights and equal round covariances (round in units of each
        feature's spread, so they look round on a plot of the data), which
        EM then stretches and rotates. The others are ``init_params`` of
        :class:`GaussianMixture`.
    max_iter : int, default=100
    tol : float, default=1e-4
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    model : GaussianMixture
        The fitted mixture (one initialisation).
    history : EMHistory
        Its starting parameters and every iteration.
    """
    X = _check_X(X)
    rng = check_random_state(random_state)
    history = EMHistory()
    kwargs: dict[str, Any] = {}
    if init == "circles":
        n_samples = X.shape[0]
        if n_components > n_samples:
            raise ValueError(
                f"n_components={n_components} exceeds the {n_samples} samples."
            )
        means = X[rng.choice(n_samples, n_components, replace=False)]
        variances = np.var(X, axis=0) / (2.0 * n_components)
        variances = np.where(variances > 0, variances, 1.0)
        # The same axis-aligned precision for every component, in the layout
        # of precisions_init for this covariance type (its strategy knows it).
        strategy = get_covariance(covariance_type)
        zero = np.zeros(strategy.param_shape(n_components, X.shape[1]))
        covariances = strategy.add_to_variances(zero, variances, None)
        layout = strategy.precisions(strategy.precision_cholesky(covariances))
        kwargs = {
            "weights_init": np.full(n_components, 1.0 / n_components),
            "means_init": means,
            "precisions_init": layout,
        }
    else:
        kwargs = {"init_params": init}
    model = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
        tol=tol,
        random_state=rng,
        callback=history,
        **kwargs,
    ).fit(X)
    return model, history


def _iterations(history: EMHistory | Sequence[EMIteration], init: int) -> list[Any]:
    steps = [it for it in history if it.init == init]
    if not steps:
        raise ValueError(
            f"the history holds no iteration of initialisation {init}; record "
            "one with record_em or GaussianMixture(callback=EMHistory())."
        )
    return steps


def plot_em_stages(
    X: Any,
    history: EMHistory | Sequence[EMIteration],
    *,
    init: int = 0,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
    sigmas: Sequence[float] = (1, 2),
) -> Figure:
    """The four stages of EM, as in the tutorial, in a 2 x 2 figure.

    1. the initial guess (ellipses of the starting parameters, data in grey);
    2. the E-step: each point coloured by its responsibilities under them;
    3. the M-step: the ellipses refitted to those responsibilities,
       stretched and rotated towards the clusters;
    4. the converged fit, after the last iteration.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The data that was fitted.
    history : EMHistory or sequence of EMIteration
        What the fit's ``callback`` recorded (see :func:`record_em`).
    init : int, default=0
        Which initialisation of the history to draw.
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None
    sigmas : sequence of float, default=(1, 2)

    Returns
    -------
    fig : matplotlib Figure
    """
    steps = _iterations(history, init)
    X = _check_X(X, steps[0].means.shape[1])
    pair = _check_features(features, X.shape[1])
    X2 = X[:, list(pair)]
    start, last = _as_mixture(steps[0]), _as_mixture(steps[-1])
    first = _as_mixture(steps[1]) if len(steps) > 1 else start
    colors = _palette(len(start.weights))
    resp_start = start.responsibilities(X)
    fig, axes = plt.subplots(
        2, 2, figsize=(10, 8), sharex=True, sharey=True, layout="constrained"
    )
    panels = [
        ("1. Initial guess", None, start),
        ("2. E-step: colour by responsibility", resp_start, start),
        ("3. M-step: refit means and covariances", resp_start, first),
        (
            f"4. Converged after {steps[-1].n_iter} iterations",
            last.responsibilities(X),
            last,
        ),
    ]
    for ax, (title, resp, mixture) in zip(axes.ravel(), panels, strict=True):
        _scatter_by_responsibility(ax, X2, resp, colors)
        _draw_ellipses(ax, mixture.marginal(pair), colors, sigmas)
        ax.set_title(title)
    _set_limits(axes[0, 0], X2)
    xlabel, ylabel = _feature_labels(feature_names, None, pair)
    for ax in axes[1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    _sigma_legend(axes[0, 0], sigmas)
    fig.suptitle("Expectation-maximisation, step by step")
    return fig


def animate_em(
    X: Any,
    history: EMHistory | Sequence[EMIteration],
    path: str | os.PathLike[str],
    *,
    init: int = 0,
    fps: int = 3,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
    sigmas: Sequence[float] = (1, 2),
    dpi: int = 72,
) -> Figure:
    """Write an animated GIF with one frame per EM iteration.

    Frame 0 shows the starting parameters, frame i the parameters after
    iteration i, with the points coloured by their responsibilities under
    the parameters shown. Needs pillow (``pip install 'gaussmix[plot]'``).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    history : EMHistory or sequence of EMIteration
    path : str or path-like
        Where to write the GIF.
    init : int, default=0
        Which initialisation of the history to animate.
    fps : int, default=3
        Frames per second.
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None
    sigmas : sequence of float, default=(1, 2)
    dpi : int, default=72

    Returns
    -------
    fig : matplotlib Figure
        The figure, showing the last frame.
    """
    from matplotlib.animation import PillowWriter

    steps = _iterations(history, init)
    X = _check_X(X, steps[0].means.shape[1])
    pair = _check_features(features, X.shape[1])
    X2 = X[:, list(pair)]
    colors = _palette(len(steps[0].weights))
    xlabel, ylabel = _feature_labels(feature_names, None, pair)
    # A fixed layout: constrained layout would be recomputed for every frame.
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.92)
    mixtures = [_as_mixture(step) for step in steps]

    def draw(frame: int) -> None:
        ax.clear()
        mixture = mixtures[frame]
        _scatter_by_responsibility(ax, X2, mixture.responsibilities(X), colors)
        _draw_ellipses(ax, mixture.marginal(pair), colors, sigmas)
        _set_limits(ax, X2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        step = steps[frame]
        loglik = mixture.log_density(X).mean()
        label = "start" if step.n_iter == 0 else f"iteration {step.n_iter}"
        ax.set_title(f"EM {label}: mean log-likelihood {loglik:.4f}")

    writer = PillowWriter(fps=fps)
    with writer.saving(fig, os.fspath(path), dpi):
        for frame in range(len(steps)):
            draw(frame)
            writer.grab_frame()
    return fig


# ------------------------------------------------------- model selection
def plot_criteria(
    selector: GaussianMixtureIC,
    *,
    criterion: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """A criterion against K for each covariance type, with the lowest marked.

    Singular candidates (a collapsed covariance) have no value and leave a
    gap. With the selector's own criterion the point marked is its choice.

    Parameters
    ----------
    selector : GaussianMixtureIC
        A fitted selector.
    criterion : {"bic", "aic", "icl"}, default=None
        The criterion to draw; the selector's when None.
    ax : matplotlib Axes, default=None
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    table = getattr(selector, "criteria_", None)
    if table is None:
        raise ValueError("selector must be a fitted GaussianMixtureIC.")
    criterion = selector.criterion if criterion is None else criterion
    if criterion not in _CRITERION_NAMES:
        raise ValueError(
            f"criterion must be one of {sorted(_CRITERION_NAMES)}, got {criterion!r}."
        )
    name = _CRITERION_NAMES[criterion]
    ax = _new_axes(ax)
    values = np.asarray(table[criterion], dtype=np.float64)
    types = list(dict.fromkeys(table["covariance_type"].tolist()))
    colors = _palette(len(types))
    for color, kind in zip(colors, types, strict=True):
        rows = table["covariance_type"] == kind
        ax.plot(
            table["n_components"][rows],
            values[rows],
            marker="o",
            markersize=4,
            color=color,
            label=kind,
        )
    best = int(np.nanargmin(values))
    best_k = int(table["n_components"][best])
    best_type = str(table["covariance_type"][best])
    ax.plot(
        [best_k],
        [values[best]],
        marker="*",
        markersize=20,
        color="gold",
        markeredgecolor="black",
        linestyle="",
        zorder=5,
        label=f"lowest: {best_type}, K={best_k}",
    )
    at_right = best_k == int(np.max(table["n_components"]))
    ax.annotate(
        f"{best_type}, K={best_k}\n{name} {values[best]:.1f}",
        (best_k, values[best]),
        xytext=(-14 if at_right else 14, 18),
        textcoords="offset points",
        ha="right" if at_right else "left",
        fontsize=9,
        arrowprops={"arrowstyle": "-", "color": "0.3"},
    )
    n_singular = int(np.sum(table["singular"]))
    if n_singular:
        ax.text(
            0.01,
            0.01,
            f"gaps: {n_singular} singular fit(s) (a covariance collapsed)",
            transform=ax.transAxes,
            fontsize=8,
            color="0.35",
        )
    ax.set_xticks(np.unique(table["n_components"]))
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{name} (lower is better)")
    ax.set_title(title if title is not None else f"{name} of every candidate")
    ax.legend(title="covariance type", fontsize=8)
    ax.grid(alpha=0.3)
    return ax


# ---------------------------------------------------------------- anomalies
def plot_anomalies(
    detector: GaussianMixtureAnomalyDetector,
    X: Any,
    *,
    ax: Axes | None = None,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Points coloured by their anomaly score, outliers circled in red.

    With two features the decision boundary (``decision_function == 0``) is
    drawn too.

    Parameters
    ----------
    detector : GaussianMixtureAnomalyDetector
        A fitted detector.
    X : array-like of shape (n_samples, n_features)
    ax : matplotlib Axes, default=None
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
    """
    X = _check_X(X, detector.n_features_in_)
    pair = _check_features(features, X.shape[1])
    X2 = X[:, list(pair)]
    ax = _new_axes(ax)
    scores = detector.score_samples(X)
    outliers = detector.predict(X) == -1
    points = ax.scatter(
        X2[:, 0], X2[:, 1], c=scores, cmap="viridis", s=16, zorder=2, linewidths=0
    )
    ax.figure.colorbar(points, ax=ax, label="log-density (anomaly score)")
    ax.scatter(
        X2[outliers, 0],
        X2[outliers, 1],
        s=120,
        facecolors="none",
        edgecolors="red",
        linewidths=1.5,
        zorder=3,
        label=f"outlier ({int(outliers.sum())} of {len(X)})",
    )
    xlim, ylim = _limits(X2)
    if X.shape[1] == 2:
        xs = np.linspace(*xlim, 200)
        ys = np.linspace(*ylim, 200)
        gx, gy = np.meshgrid(xs, ys)
        grid = np.column_stack([gx.ravel(), gy.ravel()])
        if pair == (1, 0):
            grid = grid[:, ::-1]
        decision = detector.decision_function(grid).reshape(gx.shape)
        ax.contour(gx, gy, decision, levels=[0.0], colors="red", linestyles="--")
        ax.plot([], [], color="red", linestyle="--", label="decision boundary")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    xlabel, ylabel = _feature_labels(feature_names, detector, pair)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is None:
        title = (
            f"Anomalies: the {detector.contamination:.0%} least likely points "
            "of the training data"
        )
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return ax


# -------------------------------------------------------------- generation
def plot_generated(
    model: Any,
    X: Any,
    *,
    n_samples: int | None = None,
    random_state: Any = None,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """Real data next to data generated by the model, on the same axes.

    Parameters
    ----------
    model : GaussianMixture or GaussianMixtureIC
        A fitted mixture with a ``sample`` method.
    X : array-like of shape (n_samples, n_features)
        The real data.
    n_samples : int, default=None
        How many points to generate; as many as X when None.
    random_state : int, RandomState instance or None, default=None
        Seed of the generation.
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None

    Returns
    -------
    fig : matplotlib Figure
        Two panels: the real data coloured by predicted component, the
        generated data coloured by the component that generated it.
    """
    mixture = _as_mixture(model)
    X = _check_X(X, mixture.means.shape[1])
    pair = _check_features(features, X.shape[1])
    n = len(X) if n_samples is None else int(n_samples)
    generated, labels = model.sample(n, random_state=random_state)
    generated = np.asarray(generated, dtype=np.float64)
    colors = _palette(len(mixture.weights))
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 4.5), sharex=True, sharey=True, layout="constrained"
    )
    predicted = np.argmax(mixture.responsibilities(X), axis=1)
    for ax, data, label, title in (
        (axes[0], X, predicted, f"Real data ({len(X)} points)"),
        (axes[1], generated, labels, f"Generated by the model ({n} points)"),
    ):
        ax.scatter(
            data[:, pair[0]],
            data[:, pair[1]],
            c=colors[label],
            s=12,
            alpha=0.8,
            linewidths=0,
        )
        _draw_ellipses(ax, mixture.marginal(pair), colors, (2,))
        ax.set_title(title)
    _set_limits(axes[0], np.vstack([X, generated])[:, list(pair)])
    xlabel, ylabel = _feature_labels(feature_names, model, pair)
    for ax in axes:
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    fig.suptitle("Real against generated data (ellipses: 2 sigma)")
    return fig


# ------------------------------------------------------- GMM and k-means
def plot_gmm_vs_kmeans(
    X: Any,
    y_true: Any,
    n_components: int,
    *,
    covariance_type: str = "full",
    n_init: int = 5,
    random_state: Any = None,
    features: Sequence[int] = (0, 1),
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """k-means and a Gaussian mixture side by side, scored by adjusted Rand index.

    k-means cuts the space into convex cells around its centres, so it
    splits elongated clusters; the mixture models their shape.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y_true : array-like of shape (n_samples,)
        The true clusters, for the adjusted Rand index
        (:func:`sklearn.metrics.adjusted_rand_score`).
    n_components : int
        Clusters for both methods.
    covariance_type : str, default="full"
    n_init : int, default=5
        Restarts of both methods.
    random_state : int, RandomState instance or None, default=None
        Seeds both :class:`sklearn.cluster.KMeans` and the mixture (an int is
        passed to both as it is).
    features : pair of int, default=(0, 1)
    feature_names : sequence of str, default=None

    Returns
    -------
    fig : matplotlib Figure
        Two panels, k-means then the mixture; each title gives the score.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    X = _check_X(X)
    y_true = np.asarray(y_true)
    pair = _check_features(features, X.shape[1])
    # An int seeds both methods as given; otherwise one seed is drawn for both.
    if isinstance(random_state, Integral):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(2**31 - 1))
    kmeans = KMeans(n_components, n_init=n_init, random_state=seed).fit(X)
    gmm = GaussianMixture(
        n_components, covariance_type=covariance_type, n_init=n_init, random_state=seed
    ).fit(X)
    k_labels, g_labels = kmeans.labels_, gmm.predict(X)
    k_score = adjusted_rand_score(y_true, k_labels)
    g_score = adjusted_rand_score(y_true, g_labels)
    # Colour each method's clusters by the true cluster they overlap most,
    # so that the same colour means the same cluster in both panels.
    base = _palette(max(n_components, len(np.unique(y_true))))
    k_colors = base[_match(k_labels, y_true, n_components)]
    g_colors = base[_match(g_labels, y_true, n_components)]
    X2 = X[:, list(pair)]
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 4.8), sharex=True, sharey=True, layout="constrained"
    )
    axes[0].scatter(X2[:, 0], X2[:, 1], c=k_colors[k_labels], s=12, linewidths=0)
    axes[0].scatter(
        kmeans.cluster_centers_[:, pair[0]],
        kmeans.cluster_centers_[:, pair[1]],
        marker="X",
        s=110,
        c=k_colors,
        edgecolors="black",
    )
    axes[0].set_title(f"k-means: adjusted Rand index {k_score:.2f}")
    _scatter_by_responsibility(axes[1], X2, gmm.predict_proba(X), g_colors, size=12)
    _draw_ellipses(axes[1], _as_mixture(gmm).marginal(pair), g_colors, (1, 2))
    axes[1].set_title(f"Gaussian mixture: adjusted Rand index {g_score:.2f}")
    _set_limits(axes[0], X2)
    xlabel, ylabel = _feature_labels(feature_names, None, pair)
    for ax in axes:
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(f"{n_components} elongated clusters: k-means against a GMM")
    return fig


def _match(labels: Array, y_true: Array, n_clusters: int) -> Array:
    """For each cluster, the index of the true class it best matches (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    classes = np.unique(y_true)
    overlap = np.zeros((n_clusters, max(n_clusters, len(classes))))
    for j, c in enumerate(classes):
        overlap[:, j] = np.bincount(labels[y_true == c], minlength=n_clusters)
    rows, cols = linear_sum_assignment(-overlap)
    match = np.arange(n_clusters)
    match[rows] = cols
    return match


# ------------------------------------------------------------ segmentation
def plot_segmentation(image: Any, segmentation: Segmentation) -> Figure:
    """The image, its segmentation, and how sure each pixel's label is.

    Parameters
    ----------
    image : array-like
        The image that was segmented.
    segmentation : Segmentation
        What :func:`gaussmix.segment_image` returned for it.

    Returns
    -------
    fig : matplotlib Figure
        Three panels: the original, the pixels recoloured by their
        component's mean colour, and the probability of each pixel's label.
    """
    original = np.asarray(image)
    k = segmentation.probabilities.shape[2]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    grey = {"cmap": "gray"} if original.ndim == 2 or original.shape[2] == 1 else {}
    axes[0].imshow(np.squeeze(original), **grey)
    axes[0].set_title("Original")
    axes[1].imshow(np.squeeze(segmentation.image), **grey)
    axes[1].set_title(f"Segmented: {k} colour components")
    certainty = np.max(segmentation.probabilities, axis=2)
    shown = axes[2].imshow(certainty, cmap="magma", vmin=1.0 / k, vmax=1.0)
    fig.colorbar(shown, ax=axes[2], label="probability of the label", shrink=0.8)
    axes[2].set_title("Certainty (soft assignment)")
    for ax in axes:
        ax.set_axis_off()
    return fig
