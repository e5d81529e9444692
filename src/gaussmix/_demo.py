"""The main job: fit Old Faithful, choose K and the covariance type by BIC,
and print a readable summary of the chosen model."""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import numpy as np

from ._covariance import COVARIANCE_TYPES, get_covariance
from ._errors import DegenerateDataWarning
from ._mixture import GaussianMixture
from .datasets import load_faithful


def bic_table(
    X: np.ndarray, k_range: range, random_state: int = 0
) -> dict[tuple[str, int], tuple[float, GaussianMixture]]:
    """BIC of every (covariance type, K), each the best of 5 initialisations.

    A fit whose covariance collapsed (a DegenerateDataWarning) gets a BIC of
    NaN: its likelihood is a spike, not a model of the data (mclust reports
    such models as singular, NA).
    """
    table = {}
    for covariance_type in COVARIANCE_TYPES:
        for k in k_range:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DegenerateDataWarning)
                model = GaussianMixture(
                    k,
                    covariance_type=covariance_type,
                    n_init=5,
                    tol=1e-8,
                    max_iter=1000,
                    random_state=random_state,
                ).fit(X)
            degenerate = any(
                issubclass(w.category, DegenerateDataWarning) for w in caught
            )
            table[covariance_type, k] = (np.nan if degenerate else model.bic(X), model)
    return table


def main(out: TextIO = sys.stdout) -> int:
    faithful = load_faithful()
    X = faithful.data
    k_range = range(1, 7)
    table = bic_table(X, k_range)

    def write(line: str = "") -> None:
        print(line, file=out)

    write("gaussmix demo: Old Faithful geyser (272 eruptions: duration, waiting time)")
    write()
    write("BIC (lower is better) for each covariance type and number of components K;")
    write("'singular' marks fits where a component collapsed onto repeated values")
    write("type        " + "".join(f"{f'K={k}':>10}" for k in k_range))
    for covariance_type in COVARIANCE_TYPES:
        cells = "".join(
            f"{table[covariance_type, k][0]:10.1f}"
            if np.isfinite(table[covariance_type, k][0])
            else f"{'singular':>10}"
            for k in k_range
        )
        write(f"{covariance_type:<12}{cells}")
    candidates = [item for item in table.items() if np.isfinite(item[1][0])]
    (best_type, best_k), (best_bic, model) = min(candidates, key=lambda kv: kv[1][0])
    write()
    write(
        f"Chosen by BIC: {best_k} components, covariance '{best_type}', "
        f"BIC {best_bic:.3f}"
    )
    write(
        f"log-likelihood {model.score(X) * len(X):.3f}, "
        f"{model._n_parameters()} parameters, AIC {model.aic(X):.3f}, "
        f"converged after {model.n_iter_} iterations"
    )
    write(
        "(mclust chooses EEE,3, that is tied with 3 components, "
        "with BIC -2314.3 in its sign convention)"
    )
    write()
    labels = model.predict(X)
    names = faithful.feature_names
    order = np.argsort(model.means_[:, 0])
    write(
        f"{'component':>9}  {'weight':>6}  {'n':>4}  "
        + "  ".join(f"{'mean ' + n:>16}" for n in names)
    )
    for k in order:
        means = "  ".join(f"{m:16.3f}" for m in model.means_[k])
        write(f"{k:>9}  {model.weights_[k]:6.3f}  {np.sum(labels == k):4d}  {means}")
    write()
    n_features = X.shape[1]
    strategy = get_covariance(best_type)
    dense = strategy.dense(model.covariances_, model.n_components, n_features)
    for k in order:
        write(f"Covariance of component {k}")
        for row in dense[k]:
            write("    " + "  ".join(f"{v:10.4f}" for v in row))
        write()
    uncertain = int(np.sum(model.predict_proba(X).max(axis=1) < 0.9))
    write(
        f"{uncertain} of {len(X)} eruptions are assigned with less than "
        "90% probability."
    )
    return 0
