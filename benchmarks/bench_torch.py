"""gaussmix on torch tensors against scikit-learn, side by side in one process.

Case (b) of ``bench_em.py`` (N=1M, D=16, K=16, full covariances), in
float64 and float32. Four paths fit the same data from the same start
(``weights_init``, ``means_init``, ``precisions_init``) for a fixed number of
iterations (``tol=0``):

* ``gaussmix-torch``: gaussmix on a torch tensor on ``--device`` (CUDA when
  available, else the CPU), through its array API path (on the CPU, gaussmix
  hands tensors to its NumPy engine by default, the ``gaussmix-numpy`` row;
  this row times the array API path there as on a GPU);
* ``sklearn-torch``: scikit-learn's own array-API path on the same tensor
  (``sklearn.config_context(array_api_dispatch=True)``; it needs
  ``SCIPY_ARRAY_API=1`` before SciPy is imported, which this script sets,
  and supports only ``init_params`` "random" and "random_from_data");
* ``sklearn-numpy``: scikit-learn on the CPU, the reference;
* ``gaussmix-numpy``: gaussmix on the CPU, for comparison.

Runs alternate between the paths, and the time per iteration is the
difference between a long and a short run divided by the extra iterations,
so set-up, transfers and initialisation cancel out; the minimum over
repeats is used. The targets are for a GPU: gaussmix-torch at least 50x
sklearn-numpy and at least 3x sklearn-torch.

Then the default k-means initialisation, timed as a fit with ``max_iter=1``
(k-means on a sample of 65,536 rows, every row labelled, one EM
iteration): on an accelerator gaussmix-torch runs that k-means on the
device (``gaussmix._kmeans``); on the CPU it uses scikit-learn's, and the
row ``gaussmix-torch, device k-means`` forces the device one for comparison.

Run ``python benchmarks/bench_torch.py`` (minutes on a CPU), or
``--scale 0.1`` for a tenth of the rows, ``--paths gaussmix-torch,sklearn-torch``
to leave some out, ``--dtypes float32``.
"""

from __future__ import annotations

import os

# Must be set before SciPy is first imported, for scikit-learn's array API
# dispatch to accept torch tensors.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import argparse
import contextlib
import gc
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import sklearn
import torch
from bench_em import CASES, Case, make_data, relative_difference, start
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gaussmix
import gaussmix._xp
from gaussmix import GaussianMixture

PATHS = ("gaussmix-torch", "sklearn-torch", "sklearn-numpy", "gaussmix-numpy")
TARGETS = {"sklearn-numpy": 50.0, "sklearn-torch": 3.0}


@contextlib.contextmanager
def _array_api_path() -> Any:
    """Tensors through gaussmix's array API path, on the CPU too (where by
    default its NumPy engine takes them)."""
    saved = gaussmix._xp._NUMPY_ON_CPU
    gaussmix._xp._NUMPY_ON_CPU = False
    try:
        yield
    finally:
        gaussmix._xp._NUMPY_ON_CPU = saved


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _fitter(
    path: str, case: Case, X: np.ndarray, init: dict[str, Any], device: str
) -> Callable[[int], Any]:
    """``fit(n_iter)`` for one path, its data already where it computes."""
    kwargs = dict(
        covariance_type=case.covariance_type,
        tol=0.0,
        init_params="random_from_data",
        random_state=0,
    )
    if path == "gaussmix-numpy":
        return lambda n: GaussianMixture(
            case.n_components, max_iter=n, **kwargs, **init
        ).fit(X)
    if path == "sklearn-numpy":
        return lambda n: SkGaussianMixture(
            case.n_components, max_iter=n, **kwargs, **init
        ).fit(X)
    Xt = torch.asarray(X, device=device)
    if path == "gaussmix-torch":

        def gaussmix_torch(n: int) -> Any:
            with _array_api_path():
                return GaussianMixture(
                    case.n_components, max_iter=n, **kwargs, **init
                ).fit(Xt)

        return gaussmix_torch
    # scikit-learn's array-API path wants the initial parameters in the
    # namespace, device and dtype of X.
    init_t = {
        key: torch.asarray(value, dtype=Xt.dtype, device=device)
        for key, value in init.items()
    }

    def sklearn_torch(n: int) -> Any:
        with sklearn.config_context(array_api_dispatch=True):
            return SkGaussianMixture(
                case.n_components, max_iter=n, **kwargs, **init_t
            ).fit(Xt)

    return sklearn_torch


def sklearn_array_api_support(device: str) -> str:
    """Which ``init_params`` scikit-learn's array-API path accepts here."""
    X = torch.asarray(np.random.default_rng(0).standard_normal((200, 2)), device=device)
    accepted = []
    for init_params in ("kmeans", "k-means++", "random", "random_from_data"):
        try:
            with sklearn.config_context(array_api_dispatch=True):
                SkGaussianMixture(2, init_params=init_params, random_state=0).fit(X)
        except Exception as exc:  # report whatever it raises
            accepted.append(f"{init_params}: no ({type(exc).__name__})")
        else:
            accepted.append(f"{init_params}: yes")
    return "; ".join(accepted)


def per_iteration(
    fits: dict[str, Callable[[int], Any]],
    device: str,
    repeats: int,
    short: int,
    long: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    best: dict[str, dict[int, float]] = {name: {} for name in fits}
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for n_iter in (short, long):
            for name, fit in fits.items():
                gc.collect()
                _synchronise(device)
                began = time.perf_counter()
                model = fit(n_iter)
                _synchronise(device)
                seconds = time.perf_counter() - began
                best[name][n_iter] = min(best[name].get(n_iter, np.inf), seconds)
                if n_iter == long:
                    models[name] = model
    seconds = {
        name: (times[long] - times[short]) / (long - short)
        for name, times in best.items()
    }
    return seconds, models


def initialisation(
    case: Case, X: np.ndarray, device: str, repeats: int
) -> dict[str, float]:
    """Seconds of a default fit with ``max_iter=1``: mostly the k-means start."""
    Xt = torch.asarray(X, device=device)

    def fit(cls: type, data: Any) -> Callable[[], Any]:
        return lambda: cls(case.n_components, max_iter=1, random_state=0).fit(data)

    def array_api() -> Any:
        with _array_api_path():
            return fit(GaussianMixture, Xt)()

    def forced() -> Any:
        gaussmix._xp._DEVICE_KMEANS_ON_CPU = True
        try:
            return array_api()
        finally:
            gaussmix._xp._DEVICE_KMEANS_ON_CPU = False

    fits = {
        "gaussmix-torch": array_api,
        "sklearn-numpy": fit(SkGaussianMixture, X),
        "gaussmix-numpy": fit(GaussianMixture, X),
    }
    if not device.startswith("cuda"):
        fits["gaussmix-torch, device k-means"] = forced
    best = dict.fromkeys(fits, np.inf)
    for _ in range(repeats):
        for name, run in fits.items():
            gc.collect()
            _synchronise(device)
            began = time.perf_counter()
            run()
            _synchronise(device)
            best[name] = min(best[name], time.perf_counter() - began)
    return best


def agreement(model: Any, reference: Any) -> str:
    lower = abs(float(model.lower_bound_) - float(reference.lower_bound_)) / abs(
        float(reference.lower_bound_)
    )
    means = relative_difference(_to_numpy(model.means_), _to_numpy(reference.means_))
    covariances = relative_difference(
        _to_numpy(model.covariances_), _to_numpy(reference.covariances_)
    )
    return f"lower bound {lower:.0e}, means {means:.0e}, covariances {covariances:.0e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--scale", type=float, default=1.0, help="share of the rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", default="1,4", help="short,long")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument(
        "--no-init", action="store_true", help="skip the k-means start's timing"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    short, long = (int(n) for n in args.iterations.split(","))
    paths = [path for path in PATHS if path in args.paths.split(",")]
    device = args.device

    print(
        f"gaussmix {gaussmix.__version__}, scikit-learn {sklearn.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(
        f"device {device} ({name}); {os.cpu_count()} CPUs; torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"scikit-learn's array-API GaussianMixture: {sklearn_array_api_support(device)}"
    )
    print(f"load average at start: {os.getloadavg()}")

    case = CASES["b"]
    X64 = make_data(case, args.scale)
    init = start(X64, case)
    print(
        f"case (b): N={X64.shape[0]}, D={case.n_features}, K={case.n_components}, "
        f"{case.covariance_type}; iterations {short} and {long}, best of "
        f"{args.repeats}"
    )
    for dtype in args.dtypes.split(","):
        X = X64.astype(dtype)
        fits = {path: _fitter(path, case, X, init, device) for path in paths}
        seconds, models = per_iteration(fits, device, args.repeats, short, long)
        print(f"\n{dtype}: seconds per EM iteration")
        for path in paths:
            line = f"  {path:15s} {seconds[path]:9.4f}"
            if "sklearn-numpy" in models and path != "sklearn-numpy":
                match = agreement(models[path], models["sklearn-numpy"])
                line += f"   agreement with sklearn-numpy: {match}"
            print(line)
        if "gaussmix-torch" in seconds:
            for other, target in TARGETS.items():
                if other in seconds:
                    ratio = seconds[other] / seconds["gaussmix-torch"]
                    print(
                        f"  {other} / gaussmix-torch: {ratio:.1f}x "
                        f"(target on a GPU: {target:g}x)"
                    )
        if "gaussmix-numpy" in seconds and "gaussmix-torch" in seconds:
            ratio = seconds["gaussmix-numpy"] / seconds["gaussmix-torch"]
            print(f"  gaussmix-numpy / gaussmix-torch: {ratio:.2f}x")
        if not args.no_init:
            print(f"  default k-means start + 1 iteration ({dtype}), seconds:")
            for path, taken in initialisation(case, X, device, args.repeats).items():
                print(f"    {path:31s} {taken:8.3f}")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
