"""``gaussmix demo``: the tutorial end to end on embedded data.

Old Faithful (shipped in the package) and generated elliptical clusters:
choose K and the covariance type by BIC, draw the fit, EM's four stages and
an animation of every iteration, flag anomalies, generate data, compare with
k-means, and segment a photograph. Everything goes into one folder with an
``index.html`` that shows it; the terminal gets a short summary.
"""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = ["run"]

_K_RANGE = range(1, 7)
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.7em; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.best { font-weight: bold; background: #fff4c2; }
.note { color: #555; font-size: 0.9em; }
"""


def _criteria_table(selector: Any) -> str:
    table = selector.criteria_
    types = list(dict.fromkeys(table["covariance_type"].tolist()))
    ks = sorted(set(table["n_components"].tolist()))
    head = "".join(f"<th>K={k}</th>" for k in ks)
    rows = []
    for kind in types:
        cells = []
        for k in ks:
            i = int(
                np.flatnonzero(
                    (table["covariance_type"] == kind) & (table["n_components"] == k)
                )[0]
            )
            value = table["bic"][i]
            text = "singular" if table["singular"][i] else f"{value:.1f}"
            cls = ' class="best"' if i == selector.best_index_ else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append(f"<tr><td>{kind}</td>{''.join(cells)}</tr>")
    return (
        f"<table><tr><th>BIC</th>{head}</tr>{''.join(rows)}</table>"
        '<p class="note">"singular": a component collapsed onto repeated values '
        "(its likelihood is unbounded), so the candidate is never chosen, as in "
        "mclust.</p>"
    )


def run(out_dir: Path, *, quiet: bool = False, stream: TextIO | None = None) -> int:
    """Run the demo, writing pictures and ``index.html`` into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        The output folder (created if needed).
    quiet : bool, default=False
        Print nothing but the path of the page.
    stream : text stream, default=None
        Where the summary goes; standard output when None.

    Returns
    -------
    status : int
        0.
    """
    import matplotlib

    matplotlib.use("Agg")
    from threadpoolctl import threadpool_limits

    out = sys.stdout if stream is None else stream
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    # The data are small: one thread each avoids oversubscription on busy
    # machines, where OpenMP and BLAS threads otherwise spin.
    with threadpool_limits(limits=1):
        sections, summary = _build(out_dir)
    page = out_dir / "index.html"
    page.write_text(_html(sections), encoding="utf-8")
    elapsed = time.monotonic() - start

    def write(line: str = "") -> None:
        if not quiet:
            print(line, file=out)

    for line in summary:
        write(line)
    write()
    write(f"{len(sections)} sections, made in {elapsed:.1f} s; open the page:")
    print(page.resolve().as_uri(), file=out)
    return 0


def _build(out_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_sample_image

    from . import plotting
    from ._anomaly import GaussianMixtureAnomalyDetector
    from ._segmentation import segment_image
    from ._selection import GaussianMixtureIC
    from .datasets import load_faithful, make_elliptical_blobs

    faithful = load_faithful()
    X, names = faithful.data, faithful.feature_names
    sections: list[tuple[str, str]] = []
    summary: list[str] = []

    def save(fig: Any, name: str) -> str:
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        return name

    def section(title: str, text: str, *images: str, extra: str = "") -> None:
        body = f"<p>{text}</p>" + "".join(
            f'<p><img src="{html.escape(image)}" alt="{html.escape(title)}"></p>'
            for image in images
        )
        sections.append((title, body + extra))

    # 1. Choose K and the covariance type.
    selector = GaussianMixtureIC(_K_RANGE, criterion="bic", random_state=0).fit(X)
    best = selector.best_params_
    model = selector.best_estimator_
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for ax, criterion in zip(axes, ("bic", "aic"), strict=True):
        plotting.plot_criteria(selector, criterion=criterion, ax=ax)
        values = selector.criteria_[criterion]
        low = float(np.nanmin(values))
        ax.set_ylim(low - 15, low + 160)
        ax.set_title(
            f"{criterion.upper()} near its minimum (spherical is off the scale)"
        )
    criteria_png = save(fig, "criteria.png")
    summary.append(
        "gaussmix demo: Old Faithful geyser (272 eruptions: duration, waiting time)"
    )
    summary.append(
        f"  chosen by BIC: {best['covariance_type']}, K={best['n_components']}, "
        f"BIC {selector.best_criterion_:.3f} (mclust: EEE,3 = tied, 3 components, "
        "BIC -2314.316 in its sign)"
    )
    aic = selector.criteria_["aic"]
    i_aic = int(np.nanargmin(aic))
    summary.append(
        f"  lowest AIC: {selector.criteria_['covariance_type'][i_aic]}, "
        f"K={selector.criteria_['n_components'][i_aic]} ({aic[i_aic]:.3f}); "
        f"{int(selector.criteria_['singular'].sum())} singular candidate(s) "
        "never chosen"
    )
    section(
        "1. Choosing K and the covariance type",
        f"<code>GaussianMixtureIC</code> fitted every covariance type with K = "
        f"{_K_RANGE.start}..{_K_RANGE.stop - 1} and kept the lowest BIC: "
        f"<b>{best['covariance_type']}, K = {best['n_components']}</b> "
        f"(BIC {selector.best_criterion_:.1f}). mclust chooses the same model "
        "(EEE,3, BIC -2314.3 in its sign). AIC penalises parameters less and "
        "may prefer more components.",
        criteria_png,
        extra=_criteria_table(selector),
    )

    # 2. The chosen fit.
    ax = plotting.plot_mixture(model, X, feature_names=names)
    fit_png = save(ax.figure, "fit.png")
    ax = plotting.plot_density(model, X, feature_names=names)
    density_png = save(ax.figure, "density.png")
    order = np.argsort(model.means_[:, 0])
    parts = ", ".join(
        f"{model.weights_[k]:.2f} at ({model.means_[k, 0]:.2f} min, "
        f"{model.means_[k, 1]:.1f} min)"
        for k in order
    )
    summary.append(f"  components (weight at mean eruption, waiting): {parts}")
    section(
        "2. The fitted mixture",
        "Each eruption is coloured by its responsibilities (a blend of the "
        "component colours where it is uncertain), with the 1-, 2- and 3-sigma "
        f"ellipses of each component. Weights and means: {parts}.",
        fit_png,
        density_png,
    )

    # 3. EM step by step, and every iteration as an animation.
    em_model, history = plotting.record_em(X, 2, random_state=2)
    stages_png = save(
        plotting.plot_em_stages(X, history, feature_names=names), "em-stages.png"
    )
    gif = "em.gif"
    plt.close(plotting.animate_em(X, history, out_dir / gif, feature_names=names))
    summary.append(
        f"  EM from circles: {em_model.n_iter_} iterations to converge (K=2), "
        f"animated in {gif}"
    )
    section(
        "3. How EM gets there",
        "Start from round guesses; the E-step colours every point by how much "
        "each component explains it; the M-step refits each component's mean "
        "and covariance to its share of the points, stretching and rotating the "
        f"ellipses; repeat until nothing changes ({em_model.n_iter_} iterations "
        "here, K = 2). The animation shows every iteration; it is drawn from the "
        "<code>callback</code> of <code>GaussianMixture</code>, not a copy of "
        "the EM loop.",
        stages_png,
        gif,
    )

    # 4. Anomalies.
    detector = GaussianMixtureAnomalyDetector(
        2, contamination=0.02, random_state=0
    ).fit(X)
    n_out = int(np.sum(detector.predict(X) == -1))
    ax = plotting.plot_anomalies(detector, X, feature_names=names)
    anomalies_png = save(ax.figure, "anomalies.png")
    summary.append(f"  anomalies: {n_out} of {len(X)} eruptions below the 2% density")
    section(
        "4. Anomalies",
        "<code>GaussianMixtureAnomalyDetector</code> flags the points of lowest "
        f"density: {n_out} of {len(X)} eruptions fall below the density of the "
        "2% least likely training points, mostly between the two clusters.",
        anomalies_png,
    )

    # 5. Generation.
    generated_png = save(
        plotting.plot_generated(model, X, random_state=0, feature_names=names),
        "generated.png",
    )
    section(
        "5. Generating data",
        "A mixture is a generative model: <code>sample</code> draws new "
        "eruptions that look like the real ones.",
        generated_png,
    )

    # 6. GMM against k-means on elongated clusters.
    Xb, yb = make_elliptical_blobs(
        600, 3, separation=2.5, elongation=6.0, random_state=6
    )
    fig = plotting.plot_gmm_vs_kmeans(Xb, yb, 3, random_state=0)
    titles = [a.get_title() for a in fig.axes]
    kmeans_png = save(fig, "gmm-vs-kmeans.png")
    summary.append("  elongated clusters: " + "; ".join(titles))
    section(
        "6. Why not k-means?",
        "k-means cuts the plane into convex cells around its centres and "
        "splits elongated clusters; the mixture models each cluster's shape. "
        "Scores: the adjusted Rand index against the true clusters (1 is "
        "perfect).",
        kmeans_png,
    )

    # 7. Segmenting a photograph.
    photo = load_sample_image("china.jpg")[::2, ::2]
    result = segment_image(photo, 6, max_samples=20_000, random_state=0)
    segmentation_png = save(
        plotting.plot_segmentation(photo, result), "segmentation.png"
    )
    summary.append(
        f"  segmentation: {photo.shape[1]} x {photo.shape[0]} photograph in 6 colours"
    )
    section(
        "7. Segmenting a photograph",
        "<code>segment_image</code> fits a mixture to the pixels' colours (a "
        "sample photograph shipped with scikit-learn) and gives every pixel its "
        "component's mean colour; the soft probabilities show where the "
        "segmentation is unsure (edges and gradients).",
        segmentation_png,
    )
    return sections, summary


def _html(sections: list[tuple[str, str]]) -> str:
    from . import __version__

    body = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n{content}" for title, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>gaussmix demo</title>"
        f"<style>{_CSS}</style></head><body>\n"
        "<h1>gaussmix demo</h1>\n"
        f"<p class='note'>gaussmix {__version__}. Old Faithful: 272 eruptions of "
        "the geyser, duration and waiting time to the next one, in minutes. "
        "Regenerate with <code>gaussmix demo</code> or <code>make demo</code>."
        f"</p>\n{body}\n</body></html>\n"
    )
