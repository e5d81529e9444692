"""The model file: exact round trips, and refusal of anything else.

``GaussianMixture.save`` writes an ``.npz`` archive of plain arrays plus JSON
metadata; ``gaussmix.load`` must give back exactly the same model, and must
raise ValueError (never execute anything) for every file that is not one.
Corrupt files are built by saving a valid model and rewriting its zip.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import gaussmix
from gaussmix import GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
ARRAYS = ("weights", "means", "covariances", "precisions", "precisions_cholesky")
MEMBERS = {"metadata.npy"} | {name + ".npy" for name in ARRAYS}
INVALID = "invalid model file"

X, _ = make_blobs(n_samples=60, centers=3, n_features=3, random_state=0)
X_TEST, _ = make_blobs(n_samples=15, centers=3, n_features=3, random_state=1)


def _fit(covariance_type="full", dtype=np.float64, **kwargs):
    return GaussianMixture(
        n_components=3, covariance_type=covariance_type, random_state=0, **kwargs
    ).fit(X.astype(dtype))


def _saved(tmp_path, model=None, name="model.npz"):
    path = tmp_path / name
    (model if model is not None else _fit()).save(path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write_zip(path, members):
    """Write ``members`` (a dict or a list of (name, bytes)) as a zip."""
    items = members.items() if isinstance(members, dict) else members
    with warnings.catch_warnings():
        # zipfile warns about duplicate names, which one test writes on purpose.
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in items:
                archive.writestr(name, data)
    return path


def _npy(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _read_npy(data):
    return np.load(io.BytesIO(data), allow_pickle=False)


def _metadata(members):
    return json.loads(_read_npy(members["metadata.npy"]).tobytes().decode("utf-8"))


def _metadata_npy(metadata):
    return _npy(np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8))


def _rewritten(tmp_path, covariance_type="full", dtype=np.float64, **replace):
    """A valid model file with some members replaced (bytes or arrays)."""
    model = _fit(covariance_type, dtype)
    members = _members(_saved(tmp_path, model))
    for name, value in replace.items():
        members[name + ".npy"] = value if isinstance(value, bytes) else _npy(value)
    return _write_zip(tmp_path / "corrupt.npz", members), model


def _with_metadata(tmp_path, change):
    """A valid model file whose metadata dict went through ``change``."""
    members = _members(_saved(tmp_path))
    metadata = _metadata(members)
    change(metadata)
    members["metadata.npy"] = _metadata_npy(metadata)
    return _write_zip(tmp_path / "corrupt.npz", members)


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, covariance_type, dtype):
    model = _fit(covariance_type, dtype)
    path = _saved(tmp_path, model)
    loaded = gaussmix.load(path)

    assert type(loaded) is GaussianMixture
    for name in ARRAYS:
        original, restored = getattr(model, name + "_"), getattr(loaded, name + "_")
        assert restored.dtype == original.dtype == dtype, name
        assert restored.shape == original.shape, name
        assert np.array_equal(restored, original), name
    assert loaded.converged_ is model.converged_ is True
    assert loaded.n_iter_ == model.n_iter_
    assert type(loaded.n_iter_) is int
    assert loaded.lower_bound_ == model.lower_bound_
    assert loaded.lower_bounds_ == model.lower_bounds_
    assert len(loaded.lower_bounds_) == model.n_iter_
    assert loaded.get_params() == model.get_params()
    assert loaded.n_features_in_ == model.n_features_in_ == 3
    assert not hasattr(loaded, "feature_names_in_")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_loaded_model_predicts_exactly_like_the_original(
    tmp_path, covariance_type, dtype
):
    model = _fit(covariance_type, dtype)
    loaded = gaussmix.load(_saved(tmp_path, model))
    X_new = X_TEST.astype(dtype)
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))
    assert np.array_equal(loaded.predict_proba(X_new), model.predict_proba(X_new))
    assert np.array_equal(loaded.score_samples(X_new), model.score_samples(X_new))
    assert loaded.score(X_new) == model.score(X_new)
    assert loaded.bic(X_new) == model.bic(X_new)
    drawn, labels = loaded.sample(5, random_state=3)
    expected, expected_labels = model.sample(5, random_state=3)
    assert np.array_equal(drawn, expected)
    assert np.array_equal(labels, expected_labels)


def test_round_trip_keeps_all_hyperparameters(tmp_path):
    model = GaussianMixture(
        n_components=2,
        covariance_type="diag",
        tol=1e-5,
        reg_covar=1e-4,
        max_iter=50,
        n_init=2,
        init_params="random_from_data",
        random_state=7,
        warm_start=True,
        verbose=0,
        verbose_interval=3,
    ).fit(X)
    loaded = gaussmix.load(_saved(tmp_path, model))
    params = loaded.get_params()
    assert params == model.get_params()
    assert params["init_params"] == "random_from_data"
    assert params["warm_start"] is True
    assert params["tol"] == 1e-5


def test_round_trip_of_a_model_fitted_without_iterations(tmp_path):
    # max_iter=0 keeps the initialisation, lower_bound_ = -inf and no bounds.
    model = _fit("tied", max_iter=0)
    assert model.lower_bound_ == -np.inf
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert loaded.lower_bound_ == -np.inf
    assert loaded.lower_bounds_ == []
    assert loaded.converged_ is False
    assert loaded.n_iter_ == 0
    assert np.array_equal(loaded.means_, model.means_)


def test_round_trip_of_a_model_that_did_not_converge(tmp_path):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = _fit("full", max_iter=1, tol=0.0)
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert loaded.converged_ is False
    assert loaded.n_iter_ == 1
    assert loaded.lower_bounds_ == model.lower_bounds_


def test_round_trip_feature_names_from_a_dataframe(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["alpha", "beta", "gamma"])
    model = GaussianMixture(3, random_state=0).fit(frame)
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert np.array_equal(loaded.feature_names_in_, model.feature_names_in_)
    assert list(loaded.feature_names_in_) == ["alpha", "beta", "gamma"]
    test_frame = pd.DataFrame(X_TEST, columns=["alpha", "beta", "gamma"])
    assert np.array_equal(loaded.predict(test_frame), model.predict(test_frame))


def test_round_trip_feature_names_without_pandas(tmp_path):
    # What validate_data stores for a dataframe with string columns.
    model = _fit()
    model.feature_names_in_ = np.array(["alpha", "beta", "gamma"], dtype=object)
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert loaded.feature_names_in_.dtype == object
    assert np.array_equal(loaded.feature_names_in_, model.feature_names_in_)
    assert all(type(name) is str for name in loaded.feature_names_in_)


def test_random_state_instance_is_not_written(tmp_path):
    model = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(X)
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert loaded.random_state is None
    assert np.array_equal(loaded.means_, model.means_)


def test_numpy_integer_random_state_round_trips_as_int(tmp_path):
    model = GaussianMixture(2, random_state=np.int64(5)).fit(X)
    loaded = gaussmix.load(_saved(tmp_path, model))
    assert loaded.random_state == 5
    assert type(loaded.random_state) is int


def test_file_holds_exactly_the_documented_members(tmp_path):
    members = _members(_saved(tmp_path))
    assert set(members) == MEMBERS
    metadata = _metadata(members)
    assert metadata["format"] == "gaussmix-model"
    assert metadata["format_version"] == 1
    for name in ARRAYS:
        assert _read_npy(members[name + ".npy"]).dtype == np.float64


def test_save_before_fit_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        GaussianMixture(2).save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()


def test_load_of_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        gaussmix.load(tmp_path / "absent.npz")


# ------------------------------------------------------- not a model archive
@pytest.mark.parametrize("size", [1, 22, 100, 5000])
@pytest.mark.parametrize("seed", [0, 1])
def test_load_of_random_bytes_raises(tmp_path, seed, size):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.RandomState(seed).bytes(size))
    with pytest.raises(ValueError, match=f"{INVALID}: not a gaussmix model archive"):
        gaussmix.load(path)


def test_load_of_an_empty_file_raises(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{INVALID}: not a gaussmix model archive"):
        gaussmix.load(path)


def test_load_of_a_plain_npy_file_raises(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99, "minus-1"])
def test_load_of_a_truncated_file_raises(tmp_path, fraction):
    data = _saved(tmp_path).read_bytes()
    cut = len(data) - 1 if fraction == "minus-1" else int(len(data) * fraction)
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


def test_load_of_a_file_with_a_corrupted_member_raises(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("means.npy")
    # Flip the last byte of the member's data: its CRC no longer matches.
    header = struct.unpack_from("<26xHH", data, info.header_offset)
    end = info.header_offset + 30 + sum(header) + info.compress_size
    data[end - 1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


def test_load_of_a_zip_with_an_extra_member_raises(tmp_path):
    members = _members(_saved(tmp_path))
    members["extra.npy"] = _npy(np.zeros(2))
    path = _write_zip(tmp_path / "extra.npz", members)
    with pytest.raises(ValueError, match=r"unexpected members \['extra\.npy'\]"):
        gaussmix.load(path)


@pytest.mark.parametrize("missing", sorted(MEMBERS))
def test_load_of_a_zip_with_a_missing_member_raises(tmp_path, missing):
    members = _members(_saved(tmp_path))
    del members[missing]
    path = _write_zip(tmp_path / "missing.npz", members)
    with pytest.raises(ValueError, match=rf"{INVALID}: .*{missing}"):
        gaussmix.load(path)


def test_load_of_a_zip_with_a_duplicated_member_raises(tmp_path):
    model = _fit()
    members = list(_members(_saved(tmp_path, model)).items())
    members.append(("means.npy", _npy(model.means_ + 100.0)))
    path = _write_zip(tmp_path / "duplicate.npz", members)
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


# ------------------------------------------------------------- no pickle, ever
class _MakeDirectoryWhenUnpickled:
    """Unpickling this object calls ``os.mkdir(path)``: a visible side effect."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickle_payload(marker):
    return _npy(
        np.array([_MakeDirectoryWhenUnpickled(marker)] * 3, dtype=object),
        allow_pickle=True,
    )


def test_pickle_payload_is_live(tmp_path):
    # Control: the payload really does run when unpickled, so the tests below
    # that assert it did not run can fail.
    marker = tmp_path / "marker"
    np.load(io.BytesIO(_pickle_payload(marker)), allow_pickle=True)
    assert marker.is_dir()


@pytest.mark.parametrize("member", ["weights", "covariances", "metadata"])
def test_object_array_is_refused_and_never_unpickled(tmp_path, member):
    marker = tmp_path / "marker"
    path, _ = _rewritten(tmp_path, **{member: _pickle_payload(marker)})
    with pytest.raises(ValueError, match=rf"(?i){INVALID}.*(object|pickle)"):
        gaussmix.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------ metadata
def test_metadata_with_a_wrong_format_name_raises(tmp_path):
    path = _with_metadata(tmp_path, lambda m: m.update(format="other-model"))
    with pytest.raises(ValueError, match=f"{INVALID}: not a gaussmix model"):
        gaussmix.load(path)


def test_metadata_without_a_format_name_raises(tmp_path):
    path = _with_metadata(tmp_path, lambda m: m.pop("format"))
    with pytest.raises(ValueError, match=f"{INVALID}: not a gaussmix model"):
        gaussmix.load(path)


@pytest.mark.parametrize("version", [2, 99])
def test_future_format_version_says_to_upgrade(tmp_path, version):
    path = _with_metadata(tmp_path, lambda m: m.update(format_version=version))
    with pytest.raises(
        ValueError, match=rf"format version {version} is not supported.*upgrade"
    ):
        gaussmix.load(path)


@pytest.mark.parametrize("version", [0, "1", None, 1.5])
def test_unknown_format_version_raises(tmp_path, version):
    path = _with_metadata(tmp_path, lambda m: m.update(format_version=version))
    with pytest.raises(
        ValueError, match=rf"{INVALID}: format version .* not supported"
    ):
        gaussmix.load(path)


def test_metadata_with_a_wrong_estimator_raises(tmp_path):
    path = _with_metadata(tmp_path, lambda m: m.update(estimator="KMeans"))
    with pytest.raises(ValueError, match=f"{INVALID}: unknown estimator"):
        gaussmix.load(path)


@pytest.mark.parametrize("dtype", ["float16", "int64", "object", 3])
def test_metadata_with_an_unsupported_dtype_raises(tmp_path, dtype):
    path = _with_metadata(tmp_path, lambda m: m.update(dtype=dtype))
    with pytest.raises(ValueError, match=f"{INVALID}: unsupported dtype"):
        gaussmix.load(path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_components", 0, "n_components must be a positive integer"),
        ("n_components", "3", "n_components must be a positive integer"),
        ("n_components", True, "n_components must be a positive integer"),
        ("n_features", -3, "n_features must be a positive integer"),
        ("n_features", 3.0, "n_features must be a positive integer"),
        ("covariance_type", "bogus", "unknown covariance_type 'bogus'"),
        ("converged", "yes", "converged must be a boolean"),
        ("n_iter", 2.5, "n_iter an integer"),
        ("lower_bound", "nan", "lower_bound must be a number"),
        ("lower_bounds", {"a": 1}, "lower_bounds must be a list"),
        ("lower_bounds", [1.0, None], "lower_bounds must be a number"),
        ("feature_names", ["a"], "feature_names must be a list of n_features"),
        ("feature_names", [1, 2, 3], "feature_names must be a list of n_features"),
    ],
)
def test_metadata_with_a_bad_field_raises(tmp_path, field, value, match):
    path = _with_metadata(tmp_path, lambda m: m.update({field: value}))
    with pytest.raises(ValueError, match=f"{INVALID}: .*{match}"):
        gaussmix.load(path)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe\x00", b"{not json", b"[1, 2, 3]", b'"gaussmix-model"'],
    ids=["not-utf8", "not-json", "a-list", "a-string"],
)
def test_metadata_that_is_not_a_json_object_raises(tmp_path, payload):
    path, _ = _rewritten(
        tmp_path, metadata=_npy(np.frombuffer(payload, dtype=np.uint8))
    )
    with pytest.raises(ValueError, match=rf"{INVALID}: (metadata is not JSON|not a)"):
        gaussmix.load(path)


def test_metadata_that_is_not_bytes_raises(tmp_path):
    path, _ = _rewritten(tmp_path, metadata=np.zeros(4))
    with pytest.raises(ValueError, match=f"{INVALID}: metadata is not a byte string"):
        gaussmix.load(path)


def test_metadata_member_that_is_not_npy_raises(tmp_path):
    path, _ = _rewritten(tmp_path, metadata=b"garbage")
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


# --------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tol", "0.001"),
        ("reg_covar", None),
        ("max_iter", 100.0),
        ("n_init", True),
        ("init_params", 1),
        ("random_state", "0"),
        ("random_state", 1.5),
        ("warm_start", 0),
        ("verbose", 0.5),
        ("verbose_interval", [10]),
    ],
)
def test_hyperparameter_of_the_wrong_type_raises(tmp_path, name, value):
    path = _with_metadata(tmp_path, lambda m: m["params"].update({name: value}))
    with pytest.raises(ValueError, match=f"{INVALID}: hyperparameter {name} has"):
        gaussmix.load(path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tol", -1.0),
        ("reg_covar", -1.0),
        ("max_iter", -1),
        ("n_init", 0),
        ("init_params", "bogus"),
        ("verbose_interval", 0),
    ],
)
def test_hyperparameter_of_an_invalid_value_raises(tmp_path, name, value):
    path = _with_metadata(tmp_path, lambda m: m["params"].update({name: value}))
    with pytest.raises(
        ValueError, match=rf"{INVALID}: invalid hyperparameters .*{name}"
    ):
        gaussmix.load(path)


def test_missing_or_unexpected_hyperparameters_raise(tmp_path):
    path = _with_metadata(tmp_path, lambda m: m["params"].pop("tol"))
    with pytest.raises(ValueError, match=f"{INVALID}: hyperparameters are missing"):
        gaussmix.load(path)
    path = _with_metadata(tmp_path, lambda m: m["params"].update(evil="x"))
    with pytest.raises(ValueError, match="hyperparameters are missing or unexpected"):
        gaussmix.load(path)
    path = _with_metadata(tmp_path, lambda m: m.update(params=[1, 2]))
    with pytest.raises(ValueError, match="hyperparameters are missing or unexpected"):
        gaussmix.load(path)


def test_hyperparameters_that_disagree_with_the_arrays_raise(tmp_path):
    path = _with_metadata(tmp_path, lambda m: m["params"].update(n_components=2))
    with pytest.raises(ValueError, match=f"{INVALID}: hyperparameters disagree"):
        gaussmix.load(path)


# -------------------------------------------------------------------- arrays
@pytest.mark.parametrize("name", ARRAYS)
def test_array_of_the_wrong_dtype_raises(tmp_path, name):
    model = _fit()
    path, _ = _rewritten(tmp_path, **{name: getattr(model, name + "_").astype("f4")})
    with pytest.raises(
        ValueError, match=rf"{INVALID}: {name} has dtype float32 .* expected float64"
    ):
        gaussmix.load(path)


@pytest.mark.parametrize("bad", [">f8", "i8", "c16", "U3"])
def test_means_of_other_dtypes_raise(tmp_path, bad):
    model = _fit()
    path, _ = _rewritten(tmp_path, means=model.means_.astype(bad))
    with pytest.raises(ValueError, match=rf"{INVALID}: means has dtype"):
        gaussmix.load(path)


def test_float32_model_with_a_float64_array_raises(tmp_path):
    model = _fit("diag", np.float32)
    path, _ = _rewritten(
        tmp_path, "diag", np.float32, weights=model.weights_.astype(np.float64)
    )
    with pytest.raises(ValueError, match=rf"{INVALID}: weights has dtype float64"):
        gaussmix.load(path)


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_array_of_the_wrong_shape_raises(tmp_path, covariance_type, name):
    model = _fit(covariance_type)
    array = getattr(model, name + "_")
    wrong = np.concatenate([array, array[:1]])  # one row too many
    path, _ = _rewritten(tmp_path, covariance_type, **{name: wrong})
    with pytest.raises(ValueError, match=rf"{INVALID}: {name} has .* and shape"):
        gaussmix.load(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ARRAYS)
def test_array_with_nan_or_infinity_raises(tmp_path, name, value):
    model = _fit("diag")
    array = getattr(model, name + "_").copy()
    array.flat[-1] = value
    path, _ = _rewritten(tmp_path, "diag", **{name: array})
    with pytest.raises(ValueError, match=f"{INVALID}: {name} contains NaN or infinity"):
        gaussmix.load(path)


@pytest.mark.parametrize(
    "weights",
    [[0.2, 0.2, 0.2], [0.5, 0.5, 0.5], [1.2, -0.1, -0.1], [0.0, 0.0, 0.0]],
    ids=["sum-0.6", "sum-1.5", "negative", "zero"],
)
def test_weights_that_are_not_a_distribution_raise(tmp_path, weights):
    path, _ = _rewritten(tmp_path, weights=np.array(weights))
    with pytest.raises(
        ValueError, match=f"{INVALID}: weights must be non-negative and sum to 1"
    ):
        gaussmix.load(path)


def _not_positive_definite(covariance_type, covariances):
    bad = covariances.copy()
    if covariance_type == "full":
        bad[1] = np.diag([1.0, -1.0, 1.0])
    elif covariance_type == "tied":
        bad[:] = [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    elif covariance_type == "diag":
        bad[1, 2] = -1e-3
    else:
        bad[1] = 0.0
    return bad


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariances_that_are_not_positive_definite_raise(
    tmp_path, covariance_type, dtype
):
    model = _fit(covariance_type, dtype)
    bad = _not_positive_definite(covariance_type, model.covariances_)
    path, _ = _rewritten(tmp_path, covariance_type, dtype, covariances=bad)
    with pytest.raises(
        ValueError, match=f"{INVALID}: covariances are not positive definite"
    ):
        gaussmix.load(path)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_precisions_that_are_not_positive_raise(tmp_path, covariance_type):
    model = _fit(covariance_type)
    bad = model.precisions_.copy()
    bad.flat[0] = -bad.flat[0]
    path, _ = _rewritten(tmp_path, covariance_type, precisions=bad)
    with pytest.raises(ValueError, match=f"{INVALID}: precisions are not positive"):
        gaussmix.load(path)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_covariances_that_are_not_symmetric_raise(tmp_path, covariance_type):
    model = _fit(covariance_type)
    bad = model.covariances_.copy()
    if covariance_type == "full":
        bad[0, 0, 2] += 5.0
    else:
        bad[0, 2] += 5.0
    path, _ = _rewritten(tmp_path, covariance_type, covariances=bad)
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


@pytest.mark.parametrize("change", ["negate", "zero"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_cholesky_with_a_non_positive_diagonal_raises(
    tmp_path, covariance_type, change
):
    model = _fit(covariance_type)
    bad = model.precisions_cholesky_.copy()
    bad = -bad if change == "negate" else np.zeros_like(bad)
    path, _ = _rewritten(tmp_path, covariance_type, precisions_cholesky=bad)
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariances_inconsistent_with_precisions_raise(tmp_path, covariance_type):
    model = _fit(covariance_type)
    path, _ = _rewritten(
        tmp_path, covariance_type, covariances=2.0 * model.covariances_
    )
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


# --------------------------------------------------------- oversized members
def _declare_size(data, member, size):
    """Rewrite the uncompressed size the zip headers declare for ``member``."""
    out = bytearray(data)
    name = member.encode()
    # (signature, offset of the size, offset of the name length, offset of name)
    layouts = ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46))
    for signature, size_at, length_at, name_at in layouts:
        start = out.find(signature)
        while start != -1:
            (length,) = struct.unpack_from("<H", out, start + length_at)
            if out[start + name_at : start + name_at + length] == name:
                struct.pack_into("<I", out, start + size_at, size)
            start = out.find(signature, start + 4)
    return bytes(out)


@pytest.mark.parametrize("member", ["means", "covariances", "metadata"])
def test_member_whose_declared_size_is_huge_raises(tmp_path, member):
    path = _saved(tmp_path)
    huge = 0xFFFF0000  # about 4 GiB, declared but not present
    path.write_bytes(_declare_size(path.read_bytes(), member + ".npy", huge))
    with zipfile.ZipFile(path) as archive:  # the forgery took
        assert archive.getinfo(member + ".npy").file_size == huge
    with pytest.raises(
        ValueError, match=rf"{INVALID}: member '{member}\.npy' (is larger|declares)"
    ):
        gaussmix.load(path)


def test_member_that_is_really_larger_than_its_metadata_allows_raises(tmp_path):
    path, _ = _rewritten(tmp_path, means=np.zeros((200, 200)))
    with pytest.raises(ValueError, match=r"member 'means\.npy' (is larger|declares)"):
        gaussmix.load(path)


def _npy_header_only(descr, shape):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


@pytest.mark.parametrize(("member", "descr"), [("weights", "<f8"), ("metadata", "|u1")])
def test_member_whose_npy_header_declares_a_huge_shape_raises(tmp_path, member, descr):
    # 2**60 bytes: more than any address space, so it can never be allocated.
    shape = (2**60 // np.dtype(descr).itemsize,)
    path, _ = _rewritten(tmp_path, **{member: _npy_header_only(descr, shape)})
    with pytest.raises(ValueError, match=rf"{INVALID}: member '{member}\.npy'"):
        gaussmix.load(path)


def test_member_with_less_data_than_its_header_declares_raises(tmp_path):
    model = _fit()
    # A valid header for weights of shape (3,), followed by only 2 values.
    data = _npy(model.weights_)[: -model.weights_.itemsize]
    path, _ = _rewritten(tmp_path, weights=data)
    with pytest.raises(ValueError, match=INVALID):
        gaussmix.load(path)


def test_fortran_ordered_members_load_exactly(tmp_path):
    model = _fit("full")
    means = np.asfortranarray(model.means_)
    covariances = np.asfortranarray(model.covariances_)
    assert b"'fortran_order': True" in _npy(means)
    path, _ = _rewritten(tmp_path, means=means, covariances=covariances)
    loaded = gaussmix.load(path)
    assert np.array_equal(loaded.means_, model.means_)
    assert np.array_equal(loaded.covariances_, model.covariances_)
    assert np.array_equal(loaded.predict_proba(X_TEST), model.predict_proba(X_TEST))
