"""gaussmix against scikit-learn on the tutorial's data, side by side.

The cases of ``bench_em.py`` have 100,000 rows and more, where the work per
row decides. This is the other end: Old Faithful (272 x 2, embedded as
``gaussmix.datasets.load_faithful``), where an EM iteration is a few
hundred microseconds, nearly all of it fixed costs (some sixty calls into
NumPy, LAPACK and Python per iteration, in either library). Three
comparisons, the two libraries alternating in one process, minima over
the repeats (read the ratios, not the seconds):

* time per EM iteration from the same start (``tol=0``; the difference of
  a long and a short fit over their difference in iterations), for each
  covariance type and K = 2, 3, 5, with the relative difference of the
  two lower bounds;
* whole default fits, the tutorial's call
  ``GaussianMixture(K, covariance_type=..., random_state=42).fit(X)``
  (k-means start, then EM at ``tol=1e-3``), with both iteration counts;
* model selection: ``GaussianMixtureIC`` with its defaults (K = 1-9, all
  four types, ``n_init=3``, ``tol=1e-6``) against the same 36 candidates
  fitted by scikit-learn with the same settings, the lowest BIC chosen.

Run ``python benchmarks/bench_small.py`` (about two minutes), or
``--repeats 9`` for steadier ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import bench_em
import numpy as np
import sklearn
from bench_em import Case, timed
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gaussmix
from gaussmix import GaussianMixture, GaussianMixtureIC
from gaussmix.datasets import load_faithful

TYPES = ("full", "tied", "diag", "spherical")
COMPONENTS = (2, 3, 5)
# Iterations of the short and the long fit of the per-iteration comparison.
SHORT, LONG = 5, 305


def alternate(
    fits: dict[Any, Callable[[], Any]], repeats: int
) -> tuple[dict[Any, float], dict[Any, Any]]:
    """Each of ``fits`` in turn, ``repeats`` times: the least seconds of
    each, and what each returned last."""
    best: dict[Any, float] = {}
    results: dict[Any, Any] = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            seconds, results[name] = timed(fit)
            best[name] = min(best.get(name, np.inf), seconds)
    return best, results


def start(X: np.ndarray, k: int, covariance_type: str) -> dict[str, Any]:
    """The same starting parameters for both libraries: K rows as means, the
    data's covariance (or its diagonal, or mean variance) for each."""
    rng = np.random.default_rng(1)
    means = X[rng.choice(X.shape[0], size=k, replace=False)]
    precision = np.linalg.inv(np.cov(X, rowvar=False))
    precisions = {
        "full": np.repeat(precision[None], k, axis=0),
        "tied": precision,
        "diag": np.repeat(np.diag(precision)[None], k, axis=0),
        "spherical": np.full(k, np.mean(np.diag(precision))),
    }[covariance_type]
    return dict(
        weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=precisions
    )


def per_iteration(X: np.ndarray, k: int, covariance_type: str, repeats: int) -> dict:
    init = start(X, k, covariance_type)

    def fit(cls: type, n_iter: int) -> Callable[[], Any]:
        return lambda: cls(
            k,
            covariance_type=covariance_type,
            tol=0.0,
            max_iter=n_iter,
            random_state=0,
            **init,
        ).fit(X)

    libraries = {"sklearn": SkGaussianMixture, "gaussmix": GaussianMixture}
    best, models = alternate(
        {
            (name, n_iter): fit(cls, n_iter)
            for n_iter in (SHORT, LONG)
            for name, cls in libraries.items()
        },
        repeats,
    )
    per_iter = {
        name: (best[name, LONG] - best[name, SHORT]) / (LONG - SHORT)
        for name in libraries
    }
    ours = models["gaussmix", LONG].lower_bound_
    theirs = models["sklearn", LONG].lower_bound_
    return dict(
        sklearn=per_iter["sklearn"],
        gaussmix=per_iter["gaussmix"],
        ratio=per_iter["sklearn"] / per_iter["gaussmix"],
        lower_bound=abs(ours - theirs) / abs(theirs),
    )


def whole_fit(X: np.ndarray, k: int, covariance_type: str, repeats: int) -> dict:
    """The tutorial's call, ``random_state=42``, in both libraries."""
    case = Case("faithful", X.shape[0], X.shape[1], k, covariance_type, 1.0)
    result = bench_em.whole_fit(X, case, repeats, random_state=42)
    ours, theirs = result["lower_bound"]
    return dict(result, lower_bound=abs(ours - theirs) / abs(theirs))


# A covariance whose smallest eigenvalue is within this many times reg_covar
# has collapsed onto repeated values (Old Faithful's eruption times are
# given to the thousandth of a minute, some many times over).
_COLLAPSED = 10.0


def _collapsed(model: SkGaussianMixture) -> bool:
    covariances = np.asarray(model.covariances_)
    if model.covariance_type in ("full", "tied"):
        smallest = np.linalg.eigvalsh(covariances).min()
    else:
        smallest = covariances.min()
    return bool(smallest <= _COLLAPSED * model.reg_covar)


def sklearn_selection(X: np.ndarray) -> dict[str, tuple[str, int]]:
    """GaussianMixtureIC's defaults, done with scikit-learn: the candidate
    of lowest BIC, and the same among candidates that did not collapse
    (which GaussianMixtureIC, like mclust, marks singular and never
    chooses: their likelihood is a spike on repeated values)."""
    best: dict[str, tuple[float, str, int]] = {}
    for covariance_type in TYPES:
        for k in range(1, 10):
            model = SkGaussianMixture(
                k,
                covariance_type=covariance_type,
                tol=1e-6,
                max_iter=1000,
                n_init=3,
                random_state=0,
            ).fit(X)
            bic = model.bic(X)
            kinds = ("lowest BIC",) + (() if _collapsed(model) else ("uncollapsed",))
            for kind in kinds:
                if kind not in best or bic < best[kind][0]:
                    best[kind] = (bic, covariance_type, k)
    return {kind: (value[1], value[2]) for kind, value in best.items()}


def selection(X: np.ndarray, repeats: int) -> dict:
    best, results = alternate(
        {
            "sklearn": partial(sklearn_selection, X),
            "gaussmix": partial(GaussianMixtureIC(random_state=0).fit, X),
        },
        repeats,
    )
    model = results["gaussmix"]
    params = model.best_params_
    chosen = dict(
        sklearn=results["sklearn"],
        gaussmix=(params["covariance_type"], params["n_components"]),
        singular=int(np.sum(model.criteria_["singular"])),
    )
    return dict(
        sklearn=best["sklearn"],
        gaussmix=best["gaussmix"],
        ratio=best["sklearn"] / best["gaussmix"],
        chosen=chosen,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--selection-repeats", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X = load_faithful(return_X_y=True)
    print(
        f"gaussmix {gaussmix.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"load average at start: {os.getloadavg()}")
    print(f"Old Faithful, {X.shape[0]} x {X.shape[1]}")
    print()
    print(
        "| type | K | per iteration: scikit-learn us, gaussmix us, speed-up "
        "| lower bound rel. diff. | whole default fit: scikit-learn ms, "
        "gaussmix ms, speed-up | iterations, gaussmix / scikit-learn |"
    )
    print("|---|---|---|---|---|---|")
    for covariance_type in TYPES:
        for k in COMPONENTS:
            it = per_iteration(X, k, covariance_type, args.repeats)
            whole = whole_fit(X, k, covariance_type, args.repeats)
            print(
                f"| {covariance_type} | {k} "
                f"| {it['sklearn'] * 1e6:.0f}, {it['gaussmix'] * 1e6:.0f}, "
                f"{it['ratio']:.2f}x | {it['lower_bound']:.0e} "
                f"| {whole['sklearn'] * 1e3:.2f}, {whole['gaussmix'] * 1e3:.2f}, "
                f"{whole['ratio']:.2f}x | {whole['n_iter'][0]} / {whole['n_iter'][1]} "
                "|",
                flush=True,
            )
    print()
    chosen = selection(X, args.selection_repeats)
    print(
        "Model selection (36 candidates, n_init=3, tol=1e-6): scikit-learn "
        f"{chosen['sklearn']:.2f} s, GaussianMixtureIC {chosen['gaussmix']:.2f} s, "
        f"speed-up {chosen['ratio']:.2f}x"
    )
    picks = chosen["chosen"]
    theirs = picks["sklearn"]
    print(
        f"    chosen: GaussianMixtureIC {picks['gaussmix']} ({picks['singular']} "
        f"candidates singular); scikit-learn, lowest BIC {theirs['lowest BIC']}, "
        f"among candidates that did not collapse {theirs.get('uncollapsed')}"
    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
