"""EM on a Dask cluster as N grows, beside the in-memory fit and scikit-learn.

For each N the data (D=16, K=16 anisotropic Gaussians, as case (b) of
``bench_em.py``) is generated block by block on a fresh
``distributed.LocalCluster`` of single-threaded worker processes and
persisted there, so it never passes through the client. Every fit starts
from the same parameters (``weights_init``, ``means_init``,
``precisions_init``) and runs a fixed number of iterations (``tol=0``); the
time per iteration is the difference between a long and a short fit divided
by the extra iterations, so set-up cancels out.

Also reported, per worker (the largest over workers): the resident memory
of its process at start, once it holds its blocks of X, and at its peak
during the Dask fits (sampled every 5 ms), beside its share of X. Where N
is small enough the same rows are brought to the client and fitted in
memory by gaussmix (threads over all cores) and by scikit-learn, in the
same run, and the fits are compared.

Run ``python benchmarks/bench_dask.py`` (about ten minutes on 2 cores), or
``--sizes 1e6,2e6 --in-memory-max 2e6 --sklearn-max 1e6``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import distributed
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import GaussianMixture

D, K = 16, 16
BLOCK_ROWS = 250_000  # 32 MB of float64 per block


def mixture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Means (K x D) and covariance factors (K x D x D) of the generator."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(K, D))
    factors = np.empty((K, D, D))
    for k in range(K):
        basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
        factors[k] = basis * np.sqrt(rng.uniform(0.3, 2.0, size=D))
    return means, factors


def _block(
    index: int, rows: int, means: np.ndarray, factors: np.ndarray, seed: int
) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    labels = rng.integers(K, size=rows)
    X = rng.standard_normal((rows, D))
    for k in range(K):
        chosen = labels == k
        X[chosen] = means[k] + X[chosen] @ factors[k].T
    return X


def make_data(n_samples: int, seed: int = 0) -> da.Array:
    """The rows as a Dask array whose blocks are generated on the workers."""
    means, factors = mixture(seed)
    sizes = [BLOCK_ROWS] * (n_samples // BLOCK_ROWS)
    if n_samples % BLOCK_ROWS:
        sizes.append(n_samples % BLOCK_ROWS)
    blocks = [
        da.from_delayed(
            dask.delayed(_block)(i, rows, means, factors, seed),
            shape=(rows, D),
            dtype=np.float64,
        )
        for i, rows in enumerate(sizes)
    ]
    return da.concatenate(blocks, axis=0)


def start(X: da.Array, seed: int = 1) -> dict[str, Any]:
    """Starting parameters from a sample of rows (taken on the cluster)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(X.shape[0], size=20_000, replace=False))
    sample = X[rows].compute()
    cov = np.cov(sample, rowvar=False)
    return dict(
        weights_init=np.full(K, 1.0 / K),
        means_init=sample[rng.choice(sample.shape[0], size=K, replace=False)],
        precisions_init=np.repeat(np.linalg.inv(cov)[None], K, axis=0),
    )


def per_iteration(
    fit: Callable[[int], Any], short: int, long: int, repeats: int
) -> tuple[float, Any]:
    """Seconds per EM iteration (best over repeats) and the long fit."""
    best = {short: np.inf, long: np.inf}
    model = None
    for _ in range(repeats):
        for n_iter in (short, long):
            gc.collect()
            began = time.perf_counter()
            fitted = fit(n_iter)
            best[n_iter] = min(best[n_iter], time.perf_counter() - began)
            if n_iter == long:
                model = fitted
    return (best[long] - best[short]) / (long - short), model


def estimator(cls: type, init: dict[str, Any], n_iter: int) -> Any:
    return cls(K, covariance_type="full", tol=0.0, max_iter=n_iter, **init)


def start_rss_sampler(dask_worker: Any) -> int:
    """Sample this worker process's resident memory every 5 ms; its RSS now."""
    import threading

    import psutil

    process = psutil.Process()
    state = {"peak": process.memory_info().rss}

    def sample() -> None:
        while True:
            state["peak"] = max(state["peak"], process.memory_info().rss)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    dask_worker.bench_rss = (process, state)
    return state["peak"]


def rss_peak(dask_worker: Any) -> tuple[int, int]:
    """(peak RSS since the last call, RSS now); the peak restarts from now."""
    process, state = dask_worker.bench_rss
    now = process.memory_info().rss
    peak, state["peak"] = max(state["peak"], now), now
    return peak, now


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def measure(n_samples: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        row: dict[str, Any] = {"n": n_samples}
        row["baseline"] = max(client.run(start_rss_sampler).values())
        X = make_data(n_samples).persist()
        distributed.wait(X)
        init = start(X)
        row["holding"] = max(now for _, now in client.run(rss_peak).values())
        row["dask"], ours = per_iteration(
            lambda n_iter: estimator(GaussianMixture, init, n_iter).fit(X),
            args.short,
            args.long,
            args.repeats,
        )
        row["worker_peak"] = max(peak for peak, _ in client.run(rss_peak).values())
        row["share"] = X.nbytes / args.workers
        if n_samples <= args.in_memory_max:
            X_host = X.compute()
            del X  # frees the workers' copy
            row["memory"], in_memory = per_iteration(
                lambda n_iter: estimator(GaussianMixture, init, n_iter).fit(X_host),
                args.short,
                args.long,
                args.repeats,
            )
            row["vs_memory"] = relative(ours.covariances_, in_memory.covariances_)
            if n_samples <= args.sklearn_max:
                row["sklearn"], theirs = per_iteration(
                    lambda n_iter: estimator(SkGaussianMixture, init, n_iter).fit(
                        X_host
                    ),
                    args.short,
                    args.long,
                    1,
                )
                row["vs_sklearn"] = relative(ours.covariances_, theirs.covariances_)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,2e6,5e6,1e7")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--in-memory-max", type=float, default=1e7)
    parser.add_argument("--sklearn-max", type=float, default=2e6)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: never converges

    print(
        f"gaussmix on Dask {dask.__version__} / distributed {distributed.__version__}"
        f", {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.workers} single-threaded worker processes; D={D}, K={K}, full; "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    print(
        "| N | Dask s/iter | in memory s/iter | scikit-learn s/iter "
        "| Dask time / in-memory time | scikit-learn time / Dask time "
        "| worker RSS: at start / holding its X / peak in EM (X per worker) "
        "| covariances vs in memory / vs scikit-learn |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        row = measure(int(float(size)), args)
        memory = row.get("memory")
        sk = row.get("sklearn")
        cells = [
            f"{row['n']:,}",
            f"{row['dask']:.3f}",
            "-" if memory is None else f"{memory:.3f}",
            "-" if sk is None else f"{sk:.2f}",
            "-" if memory is None else f"{row['dask'] / memory:.2f}",
            "-" if sk is None else f"{sk / row['dask']:.1f}x",
            f"{row['baseline'] / 2**30:.2f} / {row['holding'] / 2**30:.2f} / "
            f"{row['worker_peak'] / 2**30:.2f} GiB ({row['share'] / 2**30:.2f} GiB)",
            " / ".join(
                "-" if key not in row else f"{row[key]:.0e}"
                for key in ("vs_memory", "vs_sklearn")
            ),
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
