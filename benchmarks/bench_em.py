"""gaussmix against scikit-learn, side by side in one process.

For each case both libraries start EM from the same parameters
(``weights_init``, ``means_init``, ``precisions_init``) and run a fixed
number of iterations (``tol=0``). Runs alternate between the libraries, and
the time per iteration is the difference between a long and a short run
divided by the extra iterations, so set-up and initialisation cancel out.
The minimum over repeats is used: these machines are shared and noisy, so
read the ratios, not the seconds.

Also reported: the agreement of the two fits (lower bound and parameters),
the extra peak memory of a fit as a fraction of the input's size (traced
with tracemalloc, which sees NumPy's allocations), float32 against float64,
and whole default fits (k-means initialisation + EM to convergence) of
cases (b), (c) and (e), against scikit-learn and, in float32, against our
float64 (at tol=1e-3 and 1e-5).

The compiled kernels (numba, where installed) are loaded before anything
is timed, and for E-steps of every size (``warm_up(every_size=True)``):
case (a) is below the size for which a fresh process loads them, so its
"gaussmix" times are those of a process that has (the "NumPy only" times
are a fresh process's first fit); ``--kernels-by-size`` keeps the default
threshold instead.

Run ``python benchmarks/bench_em.py`` (all cases, a few minutes), or
``--cases b,d --repeats 5``; ``--quick`` shrinks every case tenfold.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import sklearn
from scipy.optimize import linear_sum_assignment
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_info

import gaussmix
from gaussmix import GaussianMixture, _kernels


@dataclass(frozen=True)
class Case:
    name: str
    n_samples: int
    n_features: int
    n_components: int
    covariance_type: str
    target: float  # the speed-up the project aims for


CASES = {
    "a": Case("a", 100_000, 2, 3, "full", 5.0),
    "b": Case("b", 1_000_000, 16, 16, "full", 20.0),
    "c": Case("c", 1_000_000, 16, 16, "diag", 10.0),
    "d": Case("d", 200_000, 64, 32, "full", 6.0),
    "e": Case("e", 2_000_000, 4, 8, "full", 30.0),
}


def make_data(case: Case, scale: float, seed: int = 0) -> np.ndarray:
    """A mixture of ``K`` Gaussians with random, anisotropic covariances."""
    rng = np.random.default_rng(seed)
    n = max(1000, int(case.n_samples * scale))
    d, k = case.n_features, case.n_components
    means = rng.normal(scale=3.0, size=(k, d))
    labels = rng.integers(k, size=n)
    X = np.empty((n, d))
    for j in range(k):
        rows = labels == j
        basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
        factor = basis * np.sqrt(rng.uniform(0.3, 2.0, size=d))
        X[rows] = means[j] + rng.standard_normal((int(rows.sum()), d)) @ factor.T
    return X


def start(X: np.ndarray, case: Case, seed: int = 1) -> dict[str, Any]:
    """The same starting parameters for both libraries."""
    rng = np.random.default_rng(seed)
    k, d = case.n_components, case.n_features
    means = X[rng.choice(X.shape[0], size=k, replace=False)]
    sample = X[rng.choice(X.shape[0], size=min(X.shape[0], 20_000), replace=False)]
    cov = np.cov(sample, rowvar=False).reshape(d, d)
    precision = np.linalg.inv(cov)
    if case.covariance_type == "full":
        precisions = np.repeat(precision[None], k, axis=0)
    elif case.covariance_type == "tied":
        precisions = precision
    elif case.covariance_type == "diag":
        precisions = np.repeat(1.0 / np.diag(cov)[None], k, axis=0)
    else:
        precisions = np.full(k, 1.0 / np.mean(np.diag(cov)))
    return dict(
        weights_init=np.full(k, 1.0 / k),
        means_init=means,
        precisions_init=precisions,
    )


# Resamples of the float32 check's bootstrap interval.
_BOOTSTRAP = 2000


def timed(fit: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    began = time.perf_counter()
    model = fit()
    return time.perf_counter() - began, model


def extra_peak_memory(fit: Callable[[], Any]) -> int:
    """Peak bytes allocated during ``fit`` beyond what was allocated before."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - before


def estimator(cls: type, case: Case, init: dict[str, Any], n_iter: int) -> Any:
    return cls(
        case.n_components,
        covariance_type=case.covariance_type,
        tol=0.0,
        max_iter=n_iter,
        init_params="random_from_data",
        random_state=0,
        **init,
    )


def _fit(cls: type, case: Case, init: dict[str, Any], n_iter: int, X: Any) -> Any:
    return estimator(cls, case, init, n_iter).fit(X)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(np.asarray(a, float) - b)) / scale)


def iteration_counts(size: float) -> tuple[int, int]:
    """Iterations of the short and the long fit of a case, by its size
    (N K D^2): the time per iteration is the difference of their times over
    the difference of their iterations, so that difference must outweigh
    the noise of a fit's fixed costs. Case (a)'s float32 ratio, from 10 of
    its 2 ms iterations, had read 1.76x [1.33, 2.05] where 30 of them,
    alternated in one process, gave 1.27-1.28x."""
    if size > 1e9:
        return 1, 4
    if size < 1e7:
        return 2, 42
    return 2, 12


# Seconds of our float64 iterations that the float32 check's two fits differ
# by, at least.
_FLOAT32_SPAN_SECONDS = 1.0
# ... and by at most this many iterations.
_FLOAT32_SPAN_MOST = 2000


def float32_span(seconds_per_iteration: float, least: int) -> int:
    """Iterations between the float32 check's two fits: at least ``least``,
    and enough for ``_FLOAT32_SPAN_SECONDS`` of our float64 iterations
    (within ``_FLOAT32_SPAN_MOST``).

    Only our own fits run there, so they can afford it: with the
    per-iteration comparison's 3 iterations, (c)'s float32 ratio (45 ms
    iterations) had 90% intervals 0.5-1.3 wide."""
    # A noisy difference of minima can come out at zero or below.
    seconds = max(seconds_per_iteration, 1e-4)
    return max(
        least, min(_FLOAT32_SPAN_MOST, math.ceil(_FLOAT32_SPAN_SECONDS / seconds))
    )


def per_iteration(
    X: np.ndarray, case: Case, init: dict[str, Any], repeats: int, short: int, long: int
) -> dict[str, Any]:
    """Seconds per iteration of scikit-learn and gaussmix, alternating.

    Where the compiled kernels are available, gaussmix also runs with them
    switched off ("numpy"), in the same alternation.
    """
    contenders: list[tuple[str, type, Callable[[], Any]]] = [
        ("sklearn", SkGaussianMixture, contextlib.nullcontext),
        ("gaussmix", GaussianMixture, contextlib.nullcontext),
    ]
    if _kernels.warm_up():
        contenders.append(("numpy", GaussianMixture, _kernels.switched_off))
    times: dict[str, dict[int, list[float]]] = {
        name: {short: [], long: []} for name, _, _ in contenders
    }
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for n_iter in (short, long):
            for name, cls, context in contenders:
                with context():
                    seconds, model = timed(
                        lambda cls=cls, n_iter=n_iter: estimator(
                            cls, case, init, n_iter
                        ).fit(X)
                    )
                times[name][n_iter].append(seconds)
                if n_iter == long:
                    models[name] = model
    per_iter = {
        name: (min(t[long]) - min(t[short])) / (long - short)
        for name, t in times.items()
    }
    ours, theirs = models["gaussmix"], models["sklearn"]
    return dict(
        sklearn=per_iter["sklearn"],
        gaussmix=per_iter["gaussmix"],
        numpy=per_iter.get("numpy"),
        ratio=per_iter["sklearn"] / per_iter["gaussmix"],
        lower_bound=abs(ours.lower_bound_ - theirs.lower_bound_)
        / abs(theirs.lower_bound_),
        means=relative_difference(ours.means_, theirs.means_),
        covariances=relative_difference(ours.covariances_, theirs.covariances_),
    )


def float32_check(
    X: np.ndarray, case: Case, init: dict[str, Any], repeats: int, short: int, long: int
) -> dict[str, Any]:
    """Our float64 against our float32 from the same start, alternating.

    Besides the ratio of the per-iteration times (minima, as elsewhere), a
    90% bootstrap interval for it: the repeats of each run are resampled
    and the minima taken again, so that a ratio near 2 can be told from
    the machine's noise (it moved by 0.1-0.2 between runs).
    """
    X32 = X.astype(np.float32)
    times: dict[str, dict[int, list[float]]] = {
        name: {short: [], long: []} for name in ("64", "32")
    }
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for n_iter in (short, long):
            for name, data in (("64", X), ("32", X32)):
                seconds, model = timed(
                    lambda data=data, n_iter=n_iter: estimator(
                        GaussianMixture, case, init, n_iter
                    ).fit(data)
                )
                times[name][n_iter].append(seconds)
                models[name] = model
    runs = {
        name: {n_iter: np.array(t) for n_iter, t in by_iter.items()}
        for name, by_iter in times.items()
    }
    per_iter = {
        name: (t[long].min() - t[short].min()) / (long - short)
        for name, t in runs.items()
    }
    rng = np.random.default_rng(0)

    def resampled(name: str) -> float:
        t = runs[name]
        picks = (rng.choice(t[n], size=t[n].size) for n in (long, short))
        return float(next(picks).min() - next(picks).min())

    ratios = [resampled("64") / resampled("32") for _ in range(_BOOTSTRAP)]
    m64, m32 = models["64"], models["32"]
    return dict(
        speedup=per_iter["64"] / per_iter["32"],
        interval=tuple(np.percentile(ratios, [5, 95])),
        lower_bound=abs(m32.lower_bound_ - m64.lower_bound_) / abs(m64.lower_bound_),
        means=relative_difference(m32.means_, m64.means_),
        covariances=relative_difference(m32.covariances_, m64.covariances_),
    )


def whole_fit(
    X: np.ndarray, case: Case, repeats: int, random_state: int = 0
) -> dict[str, Any]:
    """Default fits (k-means initialisation, tol=1e-3) of both libraries."""
    best: dict[str, float] = {}
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for name, cls in (
            ("sklearn", SkGaussianMixture),
            ("gaussmix", GaussianMixture),
        ):
            seconds, model = timed(
                lambda cls=cls: cls(
                    case.n_components,
                    covariance_type=case.covariance_type,
                    random_state=random_state,
                ).fit(X)
            )
            best[name] = min(best.get(name, np.inf), seconds)
            models[name] = model
    ours, theirs = models["gaussmix"], models["sklearn"]
    return dict(
        sklearn=best["sklearn"],
        gaussmix=best["gaussmix"],
        ratio=best["sklearn"] / best["gaussmix"],
        n_iter=(ours.n_iter_, theirs.n_iter_),
        lower_bound=(ours.lower_bound_, theirs.lower_bound_),
    )


def float32_whole_fit(
    X: np.ndarray, case: Case, repeats: int, tol: float
) -> dict[str, Any]:
    """Our default fits (k-means initialisation) in float64 and float32, at
    ``tol``, alternating: the speed-up of a whole float32 fit, and how far
    it ends from the float64 one (same ``random_state``, so the same start
    up to the data's rounding)."""
    X32 = X.astype(np.float32)
    best: dict[str, float] = {}
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for name, data in (("64", X), ("32", X32)):
            seconds, model = timed(
                lambda data=data: GaussianMixture(
                    case.n_components,
                    covariance_type=case.covariance_type,
                    random_state=0,
                    tol=tol,
                    max_iter=1000,
                ).fit(data)
            )
            best[name] = min(best.get(name, np.inf), seconds)
            models[name] = model
    m64, m32 = models["64"], models["32"]
    # The two k-means starts may number the same clusters differently (their
    # seeds are drawn from float32 and float64 distances): compare the
    # components matched by their means.
    cost = np.linalg.norm(
        m64.means_[:, None, :] - np.asarray(m32.means_, float)[None, :, :], axis=2
    )
    _, order = linear_sum_assignment(cost)
    return dict(
        speedup=best["64"] / best["32"],
        seconds=(best["64"], best["32"]),
        n_iter=(m64.n_iter_, m32.n_iter_),
        lower_bound=abs(m32.lower_bound_ - m64.lower_bound_) / abs(m64.lower_bound_),
        means=relative_difference(m32.means_[order], m64.means_),
        renumbered=bool(np.any(order != np.arange(order.size))),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        default="a,b,c,d,e",
        help="cases to time per EM iteration ('' for none: whole fits only)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--float32-repeats",
        type=int,
        default=9,
        help="repeats of the float32 check, whose ratio near 2 moves by 0.1 "
        "between runs of 3",
    )
    parser.add_argument("--quick", action="store_true", help="every case 10x smaller")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-float32", action="store_true")
    parser.add_argument("--no-whole", action="store_true")
    parser.add_argument(
        "--kernels-by-size",
        action="store_true",
        help="use the compiled kernels only for E-steps large enough to "
        "repay loading them, as a fresh process does (default: every size)",
    )
    parser.add_argument(
        "--whole-cases",
        default="b,c,e",
        help="cases to time whole default fits of (k-means start and EM; "
        "the target, 10x, is (b)'s)",
    )
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    warnings.simplefilter("ignore", ConvergenceWarning)

    blas = ", ".join(
        f"{info.get('internal_api')} {info.get('version')} "
        f"({info.get('architecture')}, {info.get('num_threads')} threads)"
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    )
    print(
        f"gaussmix {gaussmix.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )
    print(f"{os.cpu_count()} CPUs; BLAS: {blas}")
    # Compile (or load) the kernels before anything is timed or traced.
    began = time.perf_counter()
    loaded = _kernels.warm_up(every_size=not args.kernels_by_size)
    seconds = time.perf_counter() - began
    print(f"compiled kernels: {_kernels.describe()}")
    if loaded:
        print(f"    compiled or loaded in {seconds:.2f} s")
    print(f"load average at start: {os.getloadavg()}")
    print()

    rows = []
    for key in filter(None, args.cases.split(",")):
        case = CASES[key]
        X = make_data(case, scale)
        init = start(X, case)
        n = X.shape[0]
        short, long = iteration_counts(n * case.n_components * case.n_features**2)
        result = per_iteration(X, case, init, args.repeats, short, long)
        line = (
            f"({key}) N={n}, D={case.n_features}, K={case.n_components}, "
            f"{case.covariance_type}: sklearn {result['sklearn']:.4f} s/iter, "
            f"gaussmix {result['gaussmix']:.4f} s/iter, "
            f"ratio {result['ratio']:.1f}x (target {case.target:g}x); "
            f"agreement: lower bound {result['lower_bound']:.1e}, "
            f"means {result['means']:.1e}, covariances {result['covariances']:.1e}"
        )
        print(line, flush=True)
        if result["numpy"] is not None:
            print(
                f"    gaussmix without the compiled kernels (NumPy only): "
                f"{result['numpy']:.4f} s/iter, ratio "
                f"{result['sklearn'] / result['numpy']:.1f}x; the kernels' gain "
                f"{result['numpy'] / result['gaussmix']:.2f}x",
                flush=True,
            )
        memory = ""
        if not args.no_memory:
            ours, theirs = (
                extra_peak_memory(partial(_fit, cls, case, init, short, X)) / X.nbytes
                for cls in (GaussianMixture, SkGaussianMixture)
            )
            X32 = X.astype(np.float32)
            fit32 = partial(_fit, GaussianMixture, case, init, short, X32)
            ours32 = extra_peak_memory(fit32) / X32.nbytes
            del X32
            memory = f"{ours:.0%} / {theirs:.0%} (float32 {ours32:.0%})"
            print(
                f"    extra peak memory during fit, share of X "
                f"({X.nbytes / 2**20:.0f} MiB): gaussmix {ours:.1%}, "
                f"sklearn {theirs:.1%}; gaussmix on float32 X {ours32:.1%}",
                flush=True,
            )
        float32 = ""
        if not args.no_float32:
            long32 = short + float32_span(result["gaussmix"], long - short)
            f32 = float32_check(X, case, init, args.float32_repeats, short, long32)
            low, high = f32["interval"]
            float32 = (
                f"{f32['speedup']:.2f}x [{low:.2f}, {high:.2f}], "
                f"{f32['lower_bound']:.0e}"
            )
            print(
                f"    float32: {f32['speedup']:.2f}x our float64 (90% bootstrap "
                f"interval {low:.2f}-{high:.2f}; fits of {short} and {long32} "
                f"iterations); relative difference: "
                f"lower bound {f32['lower_bound']:.1e}, means {f32['means']:.1e}, "
                f"covariances {f32['covariances']:.1e}",
                flush=True,
            )
        rows.append((key, case, n, result, memory, float32))

    whole_rows = []
    if not args.no_whole:
        for key in args.whole_cases.split(","):
            case = CASES[key]
            X = make_data(case, scale)
            whole = whole_fit(X, case, max(1, args.repeats - 1))
            target = " (target 10x)" if key == "b" else ""
            print(
                f"({key}) whole default fit (k-means init + EM, tol=1e-3): sklearn "
                f"{whole['sklearn']:.2f} s, gaussmix {whole['gaussmix']:.2f} s, "
                f"ratio {whole['ratio']:.1f}x{target}; n_iter gaussmix/sklearn "
                f"{whole['n_iter'][0]}/{whole['n_iter'][1]}, lower bound "
                f"{whole['lower_bound'][0]:.6f}/{whole['lower_bound'][1]:.6f}",
                flush=True,
            )
            memory = ""
            if not args.no_memory:
                ours, theirs = (
                    extra_peak_memory(
                        partial(
                            cls(
                                case.n_components,
                                covariance_type=case.covariance_type,
                                random_state=0,
                            ).fit,
                            X,
                        )
                    )
                    / X.nbytes
                    for cls in (GaussianMixture, SkGaussianMixture)
                )
                X32 = X.astype(np.float32)
                ours32 = (
                    extra_peak_memory(
                        partial(
                            GaussianMixture(
                                case.n_components,
                                covariance_type=case.covariance_type,
                                random_state=0,
                            ).fit,
                            X32,
                        )
                    )
                    / X32.nbytes
                )
                del X32
                memory = f"{ours:.0%} / {theirs:.0%} (float32 {ours32:.0%})"
                print(
                    f"    extra peak memory of the whole fit, share of X: "
                    f"gaussmix {ours:.1%}, sklearn {theirs:.1%}; gaussmix on "
                    f"float32 X {ours32:.1%}",
                    flush=True,
                )
            float32 = ""
            if not args.no_float32:
                parts = []
                for tol in (1e-3, 1e-5):
                    f32 = float32_whole_fit(X, case, max(1, args.repeats - 1), tol)
                    parts.append(
                        f"{f32['speedup']:.2f}x, {f32['lower_bound']:.0e}, "
                        f"{f32['means']:.0e}"
                    )
                    print(
                        f"    float32 whole default fit, tol={tol:g}: "
                        f"{f32['speedup']:.2f}x our float64 ({f32['seconds'][0]:.2f} "
                        f"/ {f32['seconds'][1]:.2f} s, n_iter {f32['n_iter'][0]}/"
                        f"{f32['n_iter'][1]}); relative difference: lower bound "
                        f"{f32['lower_bound']:.1e}, means {f32['means']:.1e}"
                        + (" (components renumbered)" if f32["renumbered"] else ""),
                        flush=True,
                    )
                float32 = " / ".join(parts)
            whole_rows.append((key, whole, memory, float32))

    if rows:
        print()
        print(
            "| case | N, D, K, type | sklearn s/iter | gaussmix s/iter "
            "| ratio (target) | lower bound rel. diff "
            "| extra peak memory, ours / sklearn "
            "| float32 speed-up [90% interval], rel. diff |"
        )
        print("|---|---|---|---|---|---|---|---|")
    for key, case, n, result, memory, float32 in rows:
        print(
            f"| {key} | {n:,}, {case.n_features}, {case.n_components}, "
            f"{case.covariance_type} | {result['sklearn']:.4f} "
            f"| {result['gaussmix']:.4f} | {result['ratio']:.1f}x ({case.target:g}x) "
            f"| {result['lower_bound']:.0e} | "
            f"{memory} | {float32} |"
        )
    if whole_rows:
        print()
        print(
            "| whole default fit | sklearn s | gaussmix s | ratio "
            "| lower bound, ours / sklearn | extra peak memory, ours / sklearn "
            "| float32 speed-up, rel. diff of lower bound and means, "
            "tol=1e-3 / 1e-5 |"
        )
        print("|---|---|---|---|---|---|---|")
        for key, whole, memory, float32 in whole_rows:
            print(
                f"| {key} | {whole['sklearn']:.2f} | {whole['gaussmix']:.2f} "
                f"| {whole['ratio']:.1f}x | {whole['lower_bound'][0]:.4f} / "
                f"{whole['lower_bound'][1]:.4f} | {memory} | {float32} |"
            )
    print()
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
