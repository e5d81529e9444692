"""Dask arrays: the same fit as in memory, lazy predictions, a worker lost.

Every fit runs twice, on Dask's local (threaded) scheduler and on a
``distributed.LocalCluster`` of two single-threaded worker processes.
"""

import os
import signal
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402
import dask.array as da  # noqa: E402
from dask.callbacks import Callback  # noqa: E402

from gaussmix import GaussianMixture  # noqa: E402
from gaussmix.datasets import make_elliptical_blobs  # noqa: E402
from gaussmix.distributed import DaskSource  # noqa: E402
from helpers import COVARIANCE_TYPES, start_params  # noqa: E402

RTOL = 1e-10
CHUNKS = (700, 2)  # uneven row blocks, split columns: the source rechunks


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(params=["local", "cluster"])
def scheduler(request):
    """Where dask computes: its threaded scheduler, or the cluster's client."""
    if request.param == "local":
        with dask.config.set(scheduler="threads"):
            yield None
    else:
        # The cluster's client is dask's default while it is open. (Not put
        # in dask's config: the nanny gives that config to a worker it
        # restarts, and a client cannot be pickled.)
        yield request.getfixturevalue("client")


@pytest.fixture(scope="module")
def data():
    """4000 points in 4-D from 3 overlapping clusters: EM takes a while."""
    X, _ = make_elliptical_blobs(4000, 3, 4, separation=3.0, random_state=1)
    return X


def assert_same_fit(ours, reference, rtol=RTOL):
    assert ours.n_iter_ == reference.n_iter_
    assert_allclose(ours.lower_bound_, reference.lower_bound_, rtol=rtol)
    assert_allclose(ours.weights_, reference.weights_, rtol=rtol)
    assert_allclose(ours.means_, reference.means_, rtol=rtol)
    assert_allclose(ours.covariances_, reference.covariances_, rtol=rtol)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_fit_as_in_memory_from_the_same_start(scheduler, data, covariance_type):
    start = start_params(data, 3, covariance_type)
    params = dict(covariance_type=covariance_type, tol=1e-6, **start)
    reference = GaussianMixture(3, **params).fit(data)
    ours = GaussianMixture(3, **params).fit(da.from_array(data, chunks=CHUNKS))
    assert reference.n_iter_ > 3
    assert_same_fit(ours, reference)
    assert ours.n_features_in_ == data.shape[1]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_fit_as_in_memory_from_the_same_random_state(
    scheduler, data, covariance_type
):
    params = dict(covariance_type=covariance_type, random_state=3)
    reference = GaussianMixture(3, **params).fit(data)
    ours = GaussianMixture(3, **params).fit(da.from_array(data, chunks=CHUNKS))
    assert_same_fit(ours, reference)


@pytest.mark.parametrize("init_params", ["k-means++", "random", "random_from_data"])
def test_other_initialisations_match_in_memory(client, data, init_params):
    """One start (n_init=1): with more, starts that reach the same optimum
    are told apart by rounding, which differs with the block sums."""
    params = dict(init_params=init_params, random_state=5)
    reference = GaussianMixture(3, **params).fit(data)
    ours = GaussianMixture(3, **params).fit(da.from_array(data, chunks=CHUNKS))
    assert_same_fit(ours, reference)


def test_responsibilities_too_large_to_travel_go_block_by_block(
    client, data, monkeypatch
):
    """Over the size limit, each block is sent only its own rows' values."""
    import gaussmix.distributed

    monkeypatch.setattr(gaussmix.distributed, "_CLOSURE_BYTES", 0)
    params = dict(init_params="random", random_state=5)
    reference = GaussianMixture(3, **params).fit(data)
    ours = GaussianMixture(3, **params).fit(da.from_array(data, chunks=CHUNKS))
    assert_same_fit(ours, reference)


def test_kmeans_on_a_sample_of_a_large_array(client):
    """Beyond 65,536 rows k-means runs on a sample: the same rows as in memory."""
    X, _ = make_elliptical_blobs(70_000, 3, 2, random_state=2)
    dX = da.from_array(X, chunks=(20_000, 2))
    source = DaskSource(dX, None)
    rows = np.array([0, 5, 19_999, 20_000, 69_999])
    assert_array_equal(source.take(rows)[0], X[rows])
    reference = GaussianMixture(3, random_state=0).fit(X)
    ours = GaussianMixture(3, random_state=0).fit(dX)
    assert_same_fit(ours, reference)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_weighted_fit_matches_in_memory(scheduler, data, kind):
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 4, size=data.shape[0])  # zeros and integers
    given = weights if kind == "numpy" else da.from_array(weights, chunks=900)
    params = dict(covariance_type="full", random_state=0)
    reference = GaussianMixture(3, **params).fit(data, sample_weight=weights)
    ours = GaussianMixture(3, **params).fit(
        da.from_array(data, chunks=CHUNKS), sample_weight=given
    )
    assert_same_fit(ours, reference)


def test_float32_and_integer_data(client, data):
    X32 = data.astype(np.float32)
    reference = GaussianMixture(3, random_state=0).fit(X32)
    ours = GaussianMixture(3, random_state=0).fit(da.from_array(X32, chunks=CHUNKS))
    assert ours.means_.dtype == np.float32
    assert_same_fit(ours, reference, rtol=1e-5)
    Xi = np.round(data * 10).astype(np.int64)
    reference = GaussianMixture(3, random_state=0).fit(Xi)
    ours = GaussianMixture(3, random_state=0).fit(da.from_array(Xi, chunks=CHUNKS))
    assert ours.means_.dtype == np.float64
    assert_same_fit(ours, reference)


def test_data_far_beyond_float_range_is_rescaled_the_same_way(client, data):
    X = data * 2.0**80  # squares overflow without the power-of-two rescaling
    reference = GaussianMixture(3, random_state=0).fit(X)
    ours = GaussianMixture(3, random_state=0).fit(da.from_array(X, chunks=CHUNKS))
    assert_same_fit(ours, reference)


def test_rows_in_chunks_of_unknown_size(scheduler, data):
    dX = da.from_array(data, chunks=CHUNKS)
    threshold = np.median(data[:, 0])
    kept = dX[dX[:, 0] > threshold]  # boolean indexing: row counts unknown
    assert np.isnan(kept.chunks[0][0])
    reference = GaussianMixture(2, random_state=0).fit(data[data[:, 0] > threshold])
    ours = GaussianMixture(2, random_state=0).fit(kept)
    assert_same_fit(ours, reference)
    assert_allclose(
        ours.score_samples(kept).compute(),
        reference.score_samples(data[data[:, 0] > threshold]),
        rtol=RTOL,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictions_are_dask_arrays_equal_to_in_memory(
    scheduler, data, covariance_type
):
    params = dict(covariance_type=covariance_type, random_state=0)
    reference = GaussianMixture(3, **params).fit(data)
    dX = da.from_array(data, chunks=CHUNKS)
    ours = GaussianMixture(3, **params).fit(dX)
    labels = ours.predict(dX)
    proba = ours.predict_proba(dX)
    log_density = ours.score_samples(dX)
    for result in (labels, proba, log_density):
        assert isinstance(result, da.Array)
    assert proba.chunks == (dX.chunks[0], (3,))
    assert_array_equal(labels.compute(), reference.predict(data))
    assert_allclose(
        proba.compute(), reference.predict_proba(data), rtol=RTOL, atol=1e-300
    )
    assert_allclose(log_density.compute(), reference.score_samples(data), rtol=RTOL)
    assert_allclose(ours.score(dX), reference.score(data), rtol=RTOL)
    assert_array_equal(ours.fit_predict(dX).compute(), reference.fit_predict(data))


class TaskCounter(Callback):
    """Counts the tasks dask's local schedulers run."""

    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dsk, state):
        self.tasks += 1


def test_predictions_are_lazy(data):
    gm = GaussianMixture(3, random_state=0).fit(data)
    dX = da.from_array(data, chunks=CHUNKS) * 1.0
    with dask.config.set(scheduler="threads"), TaskCounter() as counter:
        results = [gm.predict(dX), gm.predict_proba(dX), gm.score_samples(dX)]
        assert counter.tasks == 0
        computed = dask.compute(*results)
        assert counter.tasks > 0
    assert_array_equal(computed[0], gm.predict(data))


def _fitted_off_the_client(monkeypatch, estimator, dX):
    """``estimator`` fitted on ``dX`` and its labels of ``dX``, with any
    conversion of a Dask array to NumPy on the client made to fail."""
    monkeypatch.setattr(
        da.Array, "__array__", lambda *_, **__: pytest.fail("X came to the client")
    )
    fitted = estimator.fit(dX)
    labels = fitted.predict(dX)
    monkeypatch.undo()
    return fitted, labels


def test_model_selection_on_a_dask_array(scheduler, data, monkeypatch):
    """GaussianMixtureIC fits every candidate where the rows are: the
    criteria of the in-memory fits, lazy predictions, and the rows never
    brought to the client as a whole. One start per candidate, as in
    test_other_initialisations_match_in_memory."""
    from gaussmix import GaussianMixtureIC

    kwargs = dict(
        n_components=[1, 2, 3], covariance_type=["full", "diag"], n_init=1,
        random_state=0,
    )  # fmt: skip
    reference = GaussianMixtureIC(**kwargs).fit(data)
    dX = da.from_array(data, chunks=CHUNKS)
    ours, labels = _fitted_off_the_client(monkeypatch, GaussianMixtureIC(**kwargs), dX)
    assert ours.best_params_ == reference.best_params_
    assert ours.n_features_in_ == data.shape[1]
    for name in ("log_likelihood", "bic", "aic", "icl"):
        assert_allclose(ours.criteria_[name], reference.criteria_[name], rtol=RTOL)
    assert isinstance(labels, da.Array)
    assert_array_equal(labels.compute(), reference.predict(data))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixtureIC"):
        ours.predict(dX[:, :2])


def test_anomaly_detection_on_a_dask_array(scheduler, data, monkeypatch):
    """The detector's mixture is fitted where the rows are, and its
    threshold found there: the in-memory detector's, lazy labels, and the
    rows never brought to the client as a whole."""
    from gaussmix import GaussianMixtureAnomalyDetector

    kwargs = dict(n_components=3, contamination=0.05, random_state=0)
    reference = GaussianMixtureAnomalyDetector(**kwargs).fit(data)
    dX = da.from_array(data, chunks=CHUNKS)
    detector = GaussianMixtureAnomalyDetector(**kwargs)
    ours, labels = _fitted_off_the_client(monkeypatch, detector, dX)
    assert_allclose(ours.offset_, reference.offset_, rtol=RTOL)
    assert isinstance(labels, da.Array)
    assert_array_equal(labels.compute(), reference.predict(data))
    assert (labels == -1).sum().compute() == round(0.05 * len(data))


def test_the_cluster_does_the_work(client, data):
    """Every pass runs on the workers, not in the client process."""
    dX = da.from_array(data, chunks=CHUNKS)
    with distributed.get_task_stream(client) as stream:
        GaussianMixture(3, random_state=0).fit(dX)
    workers = {task["worker"] for task in stream.data if "_apply" in task["key"]}
    assert workers == set(client.scheduler_info()["workers"])


def test_a_worker_killed_in_the_middle_of_a_fit_changes_nothing(client, data):
    """SIGKILL one worker process after iteration 2: the blocks of X it held
    are lost and recomputed, the nanny starts a new worker, and the fit is
    the undisturbed one, bit for bit."""
    dX = da.from_array(data, chunks=(500, 4))  # 8 blocks, shared by 2 workers
    params = dict(**start_params(data, 3, "full"), tol=1e-8)
    undisturbed = GaussianMixture(3, **params).fit(dX)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    held_by_victim = []

    def kill(iteration):
        if iteration.n_iter == 2:
            held_by_victim.extend(client.has_what()[victim])
            os.kill(pids[victim], signal.SIGKILL)

    disturbed = GaussianMixture(3, callback=kill, **params).fit(dX)
    client.wait_for_workers(2, timeout=60)
    assert held_by_victim, "the killed worker held no blocks: nothing was lost"
    assert disturbed.n_iter_ > 4  # the fit went on after the kill
    assert victim not in client.scheduler_info()["workers"]
    for name in ("lower_bound_", "weights_", "means_", "covariances_"):
        assert_array_equal(getattr(disturbed, name), getattr(undisturbed, name))
    assert disturbed.lower_bounds_ == undisturbed.lower_bounds_


# ------------------------------------------------------------- bad input
def test_nan_or_infinity_in_a_block(data):
    X = data.copy()
    X[2100, 1] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN \(first at row 2100\)"):
        GaussianMixture(2).fit(da.from_array(X, chunks=CHUNKS))
    X[2100, 1] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        GaussianMixture(2).fit(da.from_array(X, chunks=CHUNKS))


def test_nan_in_prediction_raises_on_compute(data):
    gm = GaussianMixture(2, random_state=0).fit(data)
    X = data.copy()
    X[1500, 0] = np.nan
    labels = gm.predict(da.from_array(X, chunks=CHUNKS))
    with pytest.raises(ValueError, match=r"contains NaN \(first at row 1500\)"):
        labels.compute(scheduler="sync")


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (da.ones(10, chunks=5), "Expected a 2-D Dask array"),
        (da.ones((1, 3), chunks=1), "minimum of 2 is required"),
        (da.ones((4, 2), dtype=complex), "Complex data not supported"),
    ],
)
def test_bad_arrays(X, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(1).fit(X)


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        (np.ones(10), ValueError, r"shape \(4000,\), one weight per sample"),
        (da.ones(10, chunks=5), ValueError, r"shape \(4000,\), one weight per sample"),
        (-da.ones(4000, chunks=1000), ValueError, "negative values"),
        (da.zeros(4000, chunks=1000), ValueError, "zero for every sample"),
        (da.full(4000, np.nan, chunks=1000), ValueError, "NaN or infinity"),
    ],
)
def test_bad_weights(data, weights, error, message):
    with pytest.raises(error, match=message):
        GaussianMixture(1).fit(
            da.from_array(data, chunks=CHUNKS), sample_weight=weights
        )


def test_prediction_needs_the_fitted_number_of_features(data):
    gm = GaussianMixture(2, random_state=0).fit(da.from_array(data, chunks=CHUNKS))
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is"):
        gm.predict(da.ones((5, 3)))


def test_missing_dask_names_the_extra(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "gaussmix.distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'gaussmix\[dask\]'"):
        GaussianMixture(2).fit(da.from_array(data, chunks=CHUNKS))
