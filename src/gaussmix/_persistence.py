"""The model file: a versioned ``.npz`` archive that never executes anything.

Layout (format ``gaussmix-model``, version 1)::

    metadata.npy              uint8 bytes of a UTF-8 JSON object:
        format               "gaussmix-model"
        format_version       1
        estimator            "GaussianMixture"
        gaussmix_version     the writer's package version (informative)
        dtype                "float64" or "float32"
        n_components, n_features, covariance_type
        params               the JSON-representable hyperparameters
        converged, n_iter, lower_bound, lower_bounds
        feature_names        list of str, or null
    weights.npy               (n_components,)
    means.npy                 (n_components, n_features)
    covariances.npy           shaped by covariance_type
    precisions.npy            shaped by covariance_type
    precisions_cholesky.npy   shaped by covariance_type

Reading uses ``allow_pickle=False``; every member's size is checked against
the metadata before it is read, every array's dtype, shape and finiteness is
checked, and anything unexpected raises :class:`ValueError`.
"""

from __future__ import annotations

import json
import math
import zipfile
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from ._covariance import COVARIANCE_TYPES, get_covariance

if TYPE_CHECKING:
    from ._mixture import GaussianMixture

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "save_model"]

FORMAT = "gaussmix-model"
FORMAT_VERSION = 1
_ARRAYS = ("weights", "means", "covariances", "precisions", "precisions_cholesky")
_MAX_METADATA_BYTES = 1 << 20
_SCALAR_PARAMS = {
    "n_components": int,
    "covariance_type": str,
    "tol": float,
    "reg_covar": float,
    "max_iter": int,
    "n_init": int,
    "init_params": str,
    "random_state": (int, type(None)),
    "warm_start": bool,
    "verbose": int,
    "verbose_interval": int,
}


def _version() -> str:
    from . import __version__

    return __version__


def save_model(model: GaussianMixture, path: str | PathLike[str]) -> None:
    """Write a fitted GaussianMixture; see the module docstring for the layout."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    params = {}
    for name in _SCALAR_PARAMS:
        value = getattr(model, name)
        if isinstance(value, np.generic):
            value = value.item()
        if name == "random_state" and not isinstance(value, int):
            value = None  # a RandomState instance is not data; it is not kept
        params[name] = value
    feature_names = getattr(model, "feature_names_in_", None)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": "GaussianMixture",
        "gaussmix_version": _version(),
        "dtype": np.dtype(model.means_.dtype).name,
        "n_components": int(model.n_components),
        "n_features": int(model.means_.shape[1]),
        "covariance_type": model.covariance_type,
        "params": params,
        "converged": bool(model.converged_),
        "n_iter": int(model.n_iter_),
        "lower_bound": _float_to_json(model.lower_bound_),
        "lower_bounds": [_float_to_json(v) for v in model.lower_bounds_],
        "feature_names": None
        if feature_names is None
        else [str(f) for f in feature_names],
    }
    encoded = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    arrays = {name: np.asarray(getattr(model, name + "_")) for name in _ARRAYS}
    arrays["metadata"] = encoded
    with open(path, "wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)


def _float_to_json(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def _float_from_json(value: Any, what: str) -> float:
    if isinstance(value, str) and value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"invalid model file: {what} must be a number")
    return float(value)


def _bad(reason: str) -> ValueError:
    return ValueError(
        f"invalid model file: {reason}. Only files written by "
        "GaussianMixture.save can be loaded."
    )


def load(path: str | PathLike[str]) -> GaussianMixture:
    """Read a model written by :meth:`GaussianMixture.save`.

    Nothing in the file is executed (no pickle). A file that is not a valid
    model (random bytes, truncated, from a newer format, with wrong shapes or
    non-finite values) raises :class:`ValueError`.

    Parameters
    ----------
    path : str or path-like
        The model file.

    Returns
    -------
    model : GaussianMixture
        The fitted model, with the same parameters and fitted attributes as
        the one saved.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> import gaussmix
    >>> X = np.array([[1, 2], [1.5, 4], [0.8, 0], [10, 2], [10.5, 4], [9.7, 0]])
    >>> gm = gaussmix.GaussianMixture(2, random_state=0).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> gm.save(path)
    >>> np.array_equal(gaussmix.load(path).means_, gm.means_)
    True
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _bad(f"not a gaussmix model archive ({exc})") from None
    with archive:
        try:
            return _load_from_archive(archive)
        except ValueError as exc:
            if str(exc).startswith("invalid model file"):
                raise
            raise _bad(str(exc)) from None
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, TypeError) as exc:
            raise _bad(f"unreadable content ({exc})") from None


def _read_member(archive: zipfile.ZipFile, name: str, max_bytes: int) -> np.ndarray:
    member = name + ".npy"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise _bad(f"missing member {member!r}") from None
    if info.file_size > max_bytes:
        raise _bad(f"member {member!r} is larger than its metadata allows")
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise _bad(f"member {member!r} has an unsupported .npy version")
        if dtype.hasobject:
            raise _bad(f"member {member!r} holds Python objects")
        # The header's shape is checked before anything is allocated.
        n_bytes = math.prod(shape) * dtype.itemsize
        if n_bytes > max_bytes:
            raise _bad(f"member {member!r} declares more data than its metadata allows")
        data = handle.read(n_bytes)
    if len(data) != n_bytes:
        raise _bad(f"member {member!r} is truncated")
    flat = np.frombuffer(data, dtype=dtype)
    if fortran_order:
        return flat.reshape(shape, order="F").copy()
    return flat.reshape(shape).copy()


def _load_from_archive(archive: zipfile.ZipFile) -> GaussianMixture:
    from ._mixture import GaussianMixture

    expected = {"metadata.npy"} | {name + ".npy" for name in _ARRAYS}
    listed = archive.namelist()
    names = set(listed)
    if len(listed) != len(names):
        raise _bad("a member appears more than once")
    if names != expected:
        raise _bad(f"unexpected members {sorted(names ^ expected)}")

    raw = _read_member(archive, "metadata", _MAX_METADATA_BYTES + 256)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad("metadata is not a byte string")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"metadata is not JSON ({exc})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _bad("not a gaussmix model")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"invalid model file: format version {version!r} is not supported "
            f"by this gaussmix (it reads version {FORMAT_VERSION}); upgrade gaussmix."
        )
    if metadata.get("estimator") != "GaussianMixture":
        raise _bad("unknown estimator")

    dtype_name = metadata.get("dtype")
    if dtype_name not in ("float64", "float32"):
        raise _bad(f"unsupported dtype {dtype_name!r}")
    dtype = np.dtype(dtype_name)
    n_components = metadata.get("n_components")
    n_features = metadata.get("n_features")
    covariance_type = metadata.get("covariance_type")
    for name, value in (("n_components", n_components), ("n_features", n_features)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= 1 << 20
        ):
            raise _bad(f"{name} must be a positive integer")
    assert isinstance(n_components, int) and isinstance(n_features, int)
    if covariance_type not in COVARIANCE_TYPES:
        raise _bad(f"unknown covariance_type {covariance_type!r}")
    strategy = get_covariance(covariance_type)

    shapes = {
        "weights": (n_components,),
        "means": (n_components, n_features),
        "covariances": strategy.param_shape(n_components, n_features),
        "precisions": strategy.param_shape(n_components, n_features),
        "precisions_cholesky": strategy.param_shape(n_components, n_features),
    }
    arrays = {}
    for name, shape in shapes.items():
        limit = math.prod(shape) * dtype.itemsize + 1024
        array = _read_member(archive, name, limit)
        if array.dtype != dtype or array.shape != shape:
            raise _bad(
                f"{name} has dtype {array.dtype} and shape {array.shape}, "
                f"expected {dtype} and {shape}"
            )
        if not np.all(np.isfinite(array)):
            raise _bad(f"{name} contains NaN or infinity")
        arrays[name] = array

    weights = arrays["weights"]
    if np.any(weights < 0) or not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-4):
        raise _bad("weights must be non-negative and sum to 1")
    try:
        recomputed = strategy.precision_cholesky(
            arrays["covariances"].astype(np.float64)
        )
    except ValueError:
        raise _bad("covariances are not positive definite") from None
    if not np.all(strategy.variances(arrays["precisions"]) > 0):
        raise _bad("precisions are not positive")
    if not np.all(strategy.variances(arrays["precisions_cholesky"]) > 0):
        raise _bad("precisions_cholesky must have a positive diagonal")
    # The three parametrisations must describe the same Gaussians (this also
    # rejects a non-symmetric covariance, whose Cholesky reads one triangle).
    tolerance = 1e-3 if dtype == np.float32 else 1e-7
    stored = arrays["precisions_cholesky"].astype(np.float64)
    for name, value, reference in (
        ("precisions_cholesky", stored, recomputed),
        (
            "covariances",
            arrays["covariances"],
            strategy.covariances_from_precision_cholesky(stored),
        ),
        ("precisions", arrays["precisions"], strategy.precisions(stored)),
    ):
        if not np.allclose(
            value, reference, rtol=tolerance, atol=tolerance * np.max(np.abs(reference))
        ):
            raise _bad(f"{name} is inconsistent with covariances")

    params = metadata.get("params")
    if not isinstance(params, dict) or set(params) != set(_SCALAR_PARAMS):
        raise _bad("hyperparameters are missing or unexpected")
    for name, kind in _SCALAR_PARAMS.items():
        value = params[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (
            isinstance(value, bool) and bool not in kinds
        ):
            raise _bad(f"hyperparameter {name} has the wrong type")
        params[name] = value
    if (
        params["n_components"] != n_components
        or params["covariance_type"] != covariance_type
    ):
        raise _bad("hyperparameters disagree with the arrays")

    model = GaussianMixture(**params)
    try:
        model._validate_params()
    except ValueError as exc:
        raise _bad(f"invalid hyperparameters ({exc})") from None

    feature_names = metadata.get("feature_names")
    if feature_names is not None:
        if (
            not isinstance(feature_names, list)
            or len(feature_names) != n_features
            or not all(isinstance(f, str) for f in feature_names)
        ):
            raise _bad("feature_names must be a list of n_features strings")
        model.feature_names_in_ = np.asarray(feature_names, dtype=object)
    lower_bounds = metadata.get("lower_bounds")
    if not isinstance(lower_bounds, list):
        raise _bad("lower_bounds must be a list")
    converged = metadata.get("converged")
    n_iter = metadata.get("n_iter")
    if (
        not isinstance(converged, bool)
        or isinstance(n_iter, bool)
        or not isinstance(n_iter, int)
    ):
        raise _bad("converged must be a boolean and n_iter an integer")

    model.weights_ = arrays["weights"]
    model.means_ = arrays["means"]
    model.covariances_ = arrays["covariances"]
    model.precisions_cholesky_ = arrays["precisions_cholesky"]
    model.precisions_ = arrays["precisions"]
    model.converged_ = converged
    model.n_iter_ = n_iter
    model.lower_bound_ = _float_from_json(metadata.get("lower_bound"), "lower_bound")
    model.lower_bounds_ = [_float_from_json(v, "lower_bounds") for v in lower_bounds]
    model.n_features_in_ = n_features
    return model
