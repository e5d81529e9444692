"""gaussmix.plotting, rendered with the Agg backend and checked for content."""

import importlib
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.contour import ContourSet
from matplotlib.patches import Ellipse
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gaussmix import (
    GaussianMixture,
    GaussianMixtureAnomalyDetector,
    GaussianMixtureIC,
    segment_image,
)
from gaussmix import plotting as gp
from gaussmix.datasets import make_elliptical_blobs

NAMES = ["eruptions", "waiting"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tied3(faithful):
    return GaussianMixture(3, covariance_type="tied", n_init=3, random_state=0).fit(
        faithful
    )


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def _check_ellipses(ax, means, covariances, sigmas):
    """One ellipse per component and sigma, centred on the mean, of the right size."""
    ellipses = _ellipses(ax)
    assert len(ellipses) == len(means) * len(sigmas)
    for k, (mean, cov) in enumerate(zip(means, covariances, strict=True)):
        mine = ellipses[k * len(sigmas) : (k + 1) * len(sigmas)]
        for ellipse, n in zip(mine, sigmas, strict=True):
            np.testing.assert_allclose(ellipse.center, mean, rtol=1e-12)
            # The n-sigma ellipse of cov has semi-axes n sqrt(eigenvalues)
            # along the eigenvectors: rebuild cov from width, height, angle.
            theta = np.radians(ellipse.angle)
            rotation = np.array(
                [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
            )
            semi = np.array([ellipse.width, ellipse.height]) / (2 * n)
            rebuilt = rotation @ np.diag(semi**2) @ rotation.T
            np.testing.assert_allclose(
                rebuilt, cov, rtol=1e-9, atol=1e-12 * np.abs(cov).max()
            )


def test_plot_mixture_draws_sigma_ellipses_at_the_means(faithful, tied3):
    ax = gp.plot_mixture(tied3, faithful, feature_names=NAMES)
    _check_ellipses(ax, tied3.means_, [tied3.covariances_] * 3, (1, 2, 3))
    assert ax.get_xlabel() == "eruptions" and ax.get_ylabel() == "waiting"
    assert ax.get_title() == "Gaussian mixture: 3 components, tied"
    points = ax.collections[0]
    np.testing.assert_array_equal(points.get_offsets(), faithful)
    # Each point's colour blends the component colours by responsibility.
    palette = gp._palette(3)
    expected = tied3.predict_proba(faithful) @ palette
    np.testing.assert_allclose(points.get_facecolors()[:, :3], expected, atol=1e-12)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "1-sigma ellipse",
        "2-sigma ellipse",
        "3-sigma ellipse",
        "component mean",
    ]


def test_plot_mixture_projects_more_features_onto_the_chosen_pair(blobs):
    model = GaussianMixture(3, random_state=0).fit(blobs)
    _fig, ax = plt.subplots()
    returned = gp.plot_mixture(model, blobs, ax=ax, features=(2, 0), sigmas=(2,))
    assert returned is ax
    idx = [2, 0]
    marginal = model.covariances_[:, idx][:, :, idx]
    _check_ellipses(ax, model.means_[:, idx], marginal, (2,))
    assert ax.get_xlabel() == "feature 2"


def test_plot_mixture_accepts_a_selector_and_a_detector(faithful, tied3):
    selector = GaussianMixtureIC((3,), covariance_type="tied", random_state=0)
    ax = gp.plot_mixture(selector.fit(faithful), faithful, sigmas=(1,))
    assert len(_ellipses(ax)) == 3
    detector = GaussianMixtureAnomalyDetector(2, random_state=0).fit(faithful)
    ax = gp.plot_mixture(detector, faithful, sigmas=(1,))
    _check_ellipses(ax, detector.mixture_.means_, detector.mixture_.covariances_, (1,))


@pytest.fixture(scope="module")
def recorded(faithful):
    return gp.record_em(faithful, 2, random_state=2)


def test_record_em_starts_from_equal_round_guesses(faithful, recorded):
    model, history = recorded
    start = history[0]
    assert start.n_iter == 0
    np.testing.assert_allclose(start.weights, [0.5, 0.5])
    # Means at data points; covariances diagonal and equal.
    assert all(any(np.all(m == x) for x in faithful) for m in start.means)
    np.testing.assert_allclose(start.covariances[0], start.covariances[1])
    assert start.covariances[0, 0, 1] == 0
    assert len(history) == model.n_iter_ + 1
    np.testing.assert_allclose(history[-1].means, model.means_)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_record_em_for_every_covariance_type(faithful, covariance_type):
    _model, history = gp.record_em(
        faithful, 2, covariance_type=covariance_type, random_state=0
    )
    assert history[0].covariance_type == covariance_type
    fig = gp.plot_em_stages(faithful, history)
    assert len(_ellipses(fig.axes[3])) == 4


def test_em_stages_show_start_first_iteration_and_fit(faithful, recorded):
    model, history = recorded
    fig = gp.plot_em_stages(faithful, history, feature_names=NAMES)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "1. Initial guess",
        "2. E-step: colour by responsibility",
        "3. M-step: refit means and covariances",
        f"4. Converged after {model.n_iter_} iterations",
    ]
    for ax, step in zip(
        axes, [history[0], history[0], history[1], history[-1]], strict=True
    ):
        _check_ellipses(ax, step.means, step.covariances, (1, 2))
    np.testing.assert_allclose(history[-1].means, model.means_)
    # Panel 1 is grey; panel 2 is coloured by the responsibilities of the
    # start, which panel 3's M-step then uses.
    grey = axes[0].collections[0].get_facecolors()
    assert np.allclose(grey[:, :3], grey[0, :3])
    colours_2 = axes[1].collections[0].get_facecolors()
    colours_3 = axes[2].collections[0].get_facecolors()
    np.testing.assert_array_equal(colours_2, colours_3)
    assert not np.allclose(colours_2, axes[3].collections[0].get_facecolors())
    assert axes[2].get_xlabel() == "eruptions" and axes[0].get_ylabel() == "waiting"


def test_animation_has_one_frame_per_iteration(faithful, tmp_path):
    model, history = gp.record_em(faithful, 2, random_state=0)
    assert model.n_iter_ > 3
    path = tmp_path / "em.gif"
    fig = gp.animate_em(faithful, history, path, fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == model.n_iter_ + 1
        assert gif.info["duration"] == 200
    assert fig.axes[0].get_title().startswith(f"EM iteration {model.n_iter_}:")
    _check_ellipses(fig.axes[0], model.means_, model.covariances_, (1, 2))


def test_history_without_the_initialisation_is_an_error(faithful, recorded):
    with pytest.raises(ValueError, match="initialisation 3"):
        gp.plot_em_stages(faithful, recorded[1], init=3)


def test_criteria_curves_mark_the_choice(faithful):
    selector = GaussianMixtureIC(
        range(1, 5), covariance_type=("full", "tied"), random_state=0
    ).fit(faithful)
    ax = gp.plot_criteria(selector)
    lines = {line.get_label(): line for line in ax.get_lines()}
    for kind in ("full", "tied"):
        rows = selector.criteria_["covariance_type"] == kind
        np.testing.assert_array_equal(lines[kind].get_xdata(), [1, 2, 3, 4])
        np.testing.assert_array_equal(
            lines[kind].get_ydata(), selector.criteria_["bic"][rows]
        )
    star = lines["lowest: tied, K=3"]
    assert star.get_xdata()[0] == 3
    assert star.get_ydata()[0] == selector.best_criterion_
    assert ax.get_ylabel() == "BIC (lower is better)"
    assert ax.get_xlabel() == "number of components K"
    ax = gp.plot_criteria(selector, criterion="aic")
    star = next(
        line for line in ax.get_lines() if line.get_label().startswith("lowest")
    )
    assert star.get_ydata()[0] == np.nanmin(selector.criteria_["aic"])
    with pytest.raises(ValueError, match="criterion"):
        gp.plot_criteria(selector, criterion="cv")


def test_density_contours_are_the_models_density(faithful, tied3):
    ax = gp.plot_density(tied3, faithful, feature_names=NAMES, grid_size=60)
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 1
    xs = np.linspace(*ax.get_xlim(), 60)
    ys = np.linspace(*ax.get_ylim(), 60)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    top = np.max(tied3.score_samples(grid))
    np.testing.assert_allclose(contours[0].levels[-1], top, rtol=1e-10)
    assert ax.figure.axes[-1].get_ylabel() == "log-density"
    # Without data, the grid spans the components.
    ax = gp.plot_density(tied3)
    assert ax.get_xlim()[0] < tied3.means_[:, 0].min()
    assert ax.get_ylim()[1] > tied3.means_[:, 1].max()


def test_anomalies_are_circled(faithful):
    detector = GaussianMixtureAnomalyDetector(
        2, contamination=0.05, random_state=0
    ).fit(faithful)
    ax = gp.plot_anomalies(detector, faithful, feature_names=NAMES)
    outliers = detector.predict(faithful) == -1
    rings = ax.collections[1]
    np.testing.assert_array_equal(rings.get_offsets(), faithful[outliers])
    np.testing.assert_allclose(
        ax.collections[0].get_array(), detector.score_samples(faithful)
    )
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"outlier ({outliers.sum()} of 272)", "decision boundary"]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    assert "5%" in ax.get_title()


def test_generated_data_is_the_models_sample(faithful, tied3):
    fig = gp.plot_generated(tied3, faithful, n_samples=100, random_state=7)
    real, generated = fig.axes[0], fig.axes[1]
    X, _y = tied3.sample(100, random_state=7)
    np.testing.assert_array_equal(generated.collections[0].get_offsets(), X)
    np.testing.assert_array_equal(real.collections[0].get_offsets(), faithful)
    assert generated.get_title() == "Generated by the model (100 points)"
    assert real.get_title() == "Real data (272 points)"
    for ax in (real, generated):
        _check_ellipses(ax, tied3.means_, [tied3.covariances_] * 3, (2,))


def test_gmm_beats_kmeans_on_elongated_clusters():
    X, y = make_elliptical_blobs(600, 3, separation=2.5, elongation=6.0, random_state=6)
    fig = gp.plot_gmm_vs_kmeans(X, y, 3, random_state=0)
    kmeans = KMeans(3, n_init=5, random_state=0).fit(X)
    gmm = GaussianMixture(3, n_init=5, random_state=0).fit(X)
    k_score = adjusted_rand_score(y, kmeans.labels_)
    g_score = adjusted_rand_score(y, gmm.predict(X))
    assert fig.axes[0].get_title() == f"k-means: adjusted Rand index {k_score:.2f}"
    assert (
        fig.axes[1].get_title()
        == f"Gaussian mixture: adjusted Rand index {g_score:.2f}"
    )
    assert g_score > 0.95 > 0.7 > k_score
    _check_ellipses(fig.axes[1], gmm.means_, gmm.covariances_, (1, 2))
    # The same true cluster has the same (most common) colour in both panels.
    k_colours = np.round(fig.axes[0].collections[0].get_facecolors()[:, :3], 2)
    g_colours = np.round(fig.axes[1].collections[0].get_facecolors()[:, :3], 2)

    def mode(colours):
        values, counts = np.unique(colours, axis=0, return_counts=True)
        return tuple(values[np.argmax(counts)])

    modes = [mode(k_colours[y == c]) for c in range(3)]
    assert modes == [mode(g_colours[y == c]) for c in range(3)]
    assert len(set(modes)) == 3


def test_segmentation_figure_shows_the_images():
    rng = np.random.default_rng(0)
    image = (rng.uniform(size=(20, 30, 3)) * 255).astype(np.uint8)
    result = segment_image(image, 3, random_state=0)
    fig = gp.plot_segmentation(image, result)
    original, segmented, certainty = fig.axes[:3]
    np.testing.assert_array_equal(original.images[0].get_array(), image)
    np.testing.assert_array_equal(segmented.images[0].get_array(), result.image)
    np.testing.assert_allclose(
        certainty.images[0].get_array(), result.probabilities.max(axis=2)
    )
    assert segmented.get_title() == "Segmented: 3 colour components"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": (0, 2)}, "two different columns"),
        ({"features": (1, 1)}, "two different columns"),
        ({"features": (0,)}, "two columns"),
    ],
)
def test_bad_feature_choices(faithful, tied3, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gp.plot_mixture(tied3, faithful, **kwargs)


def test_bad_inputs(faithful, tied3):
    with pytest.raises(ValueError, match="3 features but the model has 2"):
        gp.plot_mixture(tied3, np.ones((5, 3)))
    with pytest.raises(ValueError, match="call fit first"):
        gp.plot_mixture(GaussianMixture(2), faithful)
    with pytest.raises(ValueError, match="fitted GaussianMixtureIC"):
        gp.plot_criteria(GaussianMixtureIC())


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    monkeypatch.delitem(sys.modules, "gaussmix.plotting")
    with pytest.raises(ImportError, match=r"pip install 'gaussmix\[plot\]'"):
        importlib.import_module("gaussmix.plotting")
