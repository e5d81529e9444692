"""Out of core on one machine: memory-mapped arrays and streams of chunks."""

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gaussmix import Chunks, GaussianMixture
from gaussmix._covariance import get_covariance
from gaussmix._em import (
    _expansion,
    label_statistics,
    log_density,
    log_prob_resp,
    most_probable,
    weighted_log_prob,
)
from gaussmix._init import nearest
from gaussmix._source import ArraySource
from helpers import COVARIANCE_TYPES

MiB = 2**20


def _assert_stats_identical(a, b):
    for name in ("shift", "resp_sum", "diff_sum", "scatter"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.weight_sum == b.weight_sum


@pytest.mark.parametrize("n_features", [1, 3, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_nearest_statistics_chunk_by_chunk_equal_labelling_every_row(
    n_features, weighted
):
    # 3 features: label_statistics's chunks (21845 rows) straddle the
    # labelling windows (8192 rows), and the sums must still be the same.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50_001, n_features)) * 3
    w = rng.uniform(0, 2, len(X)) if weighted else None
    centres = X[[5, 7000, 30_000, 49_999]]
    strategy = get_covariance("full")
    chunked = ArraySource(X, w).nearest_statistics(centres, strategy)
    whole = label_statistics(X, w, nearest(X, centres), centres, strategy)
    _assert_stats_identical(chunked, whole)


@pytest.mark.filterwarnings("ignore::gaussmix.DegenerateDataWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("far", [False, True])
def test_predictions_chunk_by_chunk_equal_the_whole_array(covariance_type, far):
    # far=True: a component far from the others in units of its spread,
    # so the exact (not the expanded) log-densities are used.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20_000, 4))
    X[:50] = X[:50] * 1e-3 + 1e4 * far
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0)
    gm.fit(X)
    params, strategy = gm._params(), gm._strategy()
    assert (_expansion(X.dtype, params, strategy) is None) == far
    wlp = weighted_log_prob(X, params, strategy)
    np.testing.assert_array_equal(
        most_probable(X, params, strategy), np.argmax(wlp, axis=1)
    )
    np.testing.assert_array_equal(
        log_density(X, params, strategy), log_prob_resp(X, params, strategy)[0]
    )


_MEMMAP_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time, warnings
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from gaussmix import GaussianMixture

    def anon():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    path, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, "w+", np.float64, (n, 8))
    for start in range(0, n, 2**20):
        rows = min(n - start, 2**20)
        centre = 5.0 * rng.integers(0, 3, rows)[:, None]
        out[start : start + rows] = rng.standard_normal((rows, 8)) + centre
    out.flush()
    del out
    X = np.load(path, mmap_mode="r")
    peak, done = [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.0005)

    poller = threading.Thread(target=poll)
    before = anon()
    poller.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, max_iter=3, random_state=0).fit(X)
    fit_peak, peak[0] = peak[0], 0
    before_predict = anon()
    labels = gm.predict(X)
    done.set()
    poller.join()
    print(fit_peak - before, peak[0] - before_predict - labels.nbytes)
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/status"
)
def test_memory_mapped_fit_and_predict_do_not_copy_the_rows(tmp_path):
    """Anonymous memory stays flat as a memory-mapped file grows fourfold.

    Files of 2M and 8M rows x 8 (122 and 488 MiB): the whole default fit
    (validation, magnitude, variances, k-means on a sample, labelling by
    the nearest centre, EM) and predict (beyond its own output) must add
    about the same small amount, not one that grows with the rows.
    """
    growth = {}
    for n in (2_000_000, 8_000_000):
        path = tmp_path / f"X{n}.npy"
        result = subprocess.run(
            [sys.executable, "-c", _MEMMAP_SCRIPT, str(path), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        path.unlink()
        growth[n] = [int(value) for value in result.stdout.split()]
    (fit_small, predict_small), (fit_large, predict_large) = growth.values()
    # Copying X would add 488 MiB; one int32 label per row, 23 MiB more
    # for the larger file; one float per row and component, 137 MiB more.
    assert fit_small < 40 * MiB and fit_large < 40 * MiB, growth
    assert fit_large < fit_small + 8 * MiB, growth
    assert predict_small < 24 * MiB and predict_large < 24 * MiB, growth


# ---------------------------------------------------------------- Chunks
def _mixture_rows(n, n_features=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4, size=(3, n_features))
    labels = rng.integers(0, 3, n)
    return centres[labels] + rng.normal(size=(n, n_features))


def _assert_same_fit(a, b, rtol=1e-10):
    assert a.n_iter_ == b.n_iter_
    assert a.means_.dtype == b.means_.dtype
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=rtol, atol=0, err_msg=name
        )
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)


@pytest.mark.parametrize(
    ("n_samples", "init_params", "covariance_type"),
    [
        (70_000, "kmeans", "full"),  # k-means on a sample, then nearest centre
        (3_000, "kmeans", "tied"),  # k-means on every row
        (3_000, "k-means++", "diag"),
        (3_000, "random", "spherical"),
        (3_000, "random_from_data", "full"),
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_chunks_fit_equals_the_concatenated_fit(
    n_samples, init_params, covariance_type, weighted
):
    X = _mixture_rows(n_samples)
    w = np.random.default_rng(3).uniform(0, 3, n_samples) if weighted else None
    bounds = [0, 1, 700, 701, n_samples // 2, n_samples]  # one 1-row chunk
    pairs = list(itertools.pairwise(bounds))
    parts = [X[a:b] for a, b in pairs]
    weight_parts = None if w is None else [w[a:b] for a, b in pairs]
    kwargs = dict(
        covariance_type=covariance_type,
        init_params=init_params,
        random_state=0,
        tol=1e-6,
        max_iter=500,
    )
    whole = GaussianMixture(3, **kwargs).fit(X, sample_weight=w)
    source = Chunks(parts, weights=weight_parts)
    chunked = GaussianMixture(3, **kwargs).fit(source)
    _assert_same_fit(whole, chunked)
    assert chunked.n_features_in_ == 3


def test_chunks_read_every_chunk_once_per_iteration():
    X = _mixture_rows(70_000)
    source = Chunks(np.array_split(X, 9))
    gm = GaussianMixture(3, random_state=0).fit(source)
    # magnitude, two for the variances, the k-means sample, the nearest
    # centre: five passes before EM, then one per iteration.
    assert source.n_passes == 5 + gm.n_iter_

    w = np.ones(len(X))
    weighted = Chunks(np.array_split(X, 9), weights=np.array_split(w, 9))
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, random_state=0, max_iter=2, tol=0).fit(weighted)
    # Weights add two passes: the rows with positive weight, and the
    # weights the k-means sample is drawn among.
    assert weighted.n_passes == 7 + 2


def test_chunks_from_a_callable_npy_files_and_float32(tmp_path):
    X = _mixture_rows(5_000).astype(np.float32)
    parts = np.array_split(X, 4)
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.npy")
        np.save(paths[-1], part)
    whole = GaussianMixture(3, random_state=0).fit(X)
    assert whole.means_.dtype == np.float32
    opened = []

    def read():
        opened.append(True)
        return (np.load(path) for path in paths)

    by_callable = Chunks(read)
    assert by_callable.n_samples == 5_000 and by_callable.dtype == np.float32
    for source in (by_callable, Chunks(paths), Chunks([str(p) for p in paths])):
        fitted = GaussianMixture(3, random_state=0).fit(source)
        _assert_same_fit(whole, fitted, rtol=1e-4)
    # One survey, then one opening per pass.
    assert len(opened) == 1 + by_callable.n_passes


def test_chunks_mixed_dtypes_fit_in_float64():
    X = _mixture_rows(2_000)
    parts = [X[:1000].astype(np.float32), X[1000:].astype(np.float32).astype(int)]
    source = Chunks(parts)
    assert source.dtype == np.float64
    fitted = GaussianMixture(3, random_state=0).fit(source)
    assert fitted.means_.dtype == np.float64


def test_chunks_of_huge_values_are_rescaled_like_an_array():
    X = _mixture_rows(3_000) * 2.0**70
    whole = GaussianMixture(3, random_state=0).fit(X)
    chunked = GaussianMixture(3, random_state=0).fit(Chunks(np.array_split(X, 3)))
    _assert_same_fit(whole, chunked)


def test_chunks_from_parquet_file_and_folder(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X = _mixture_rows(6_000)
    w = np.random.default_rng(1).uniform(0, 2, len(X))
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "w": w})
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=1_000)
    folder = tmp_path / "dataset"
    folder.mkdir()
    pq.write_table(table.slice(0, 2_500), folder / "part-0.parquet")
    pq.write_table(table.slice(2_500), folder / "part-1.parquet", row_group_size=700)

    whole = GaussianMixture(3, random_state=0).fit(X, sample_weight=w)
    source = Chunks.from_parquet(tmp_path / "one.parquet", weight_column="w")
    assert source.n_chunks == 6 and source.columns == ["a", "b", "c"]
    _assert_same_fit(whole, GaussianMixture(3, random_state=0).fit(source))
    source = Chunks.from_parquet(folder, weight_column="w")
    assert source.n_chunks == 1 + 5
    _assert_same_fit(whole, GaussianMixture(3, random_state=0).fit(source))

    two = Chunks.from_parquet(folder, columns=["c", "a"])
    assert two.n_features == 2 and not two.weighted
    fitted = GaussianMixture(3, random_state=0).fit(two)
    _assert_same_fit(GaussianMixture(3, random_state=0).fit(X[:, [2, 0]]), fitted)

    with pytest.raises(ValueError, match="has no column 'd'"):
        Chunks.from_parquet(folder, columns=["a", "d"])
    with pytest.raises(FileNotFoundError, match="no such Parquet file or folder"):
        Chunks.from_parquet(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"a": ["x", "y"]}), tmp_path / "text.parquet")
    with pytest.raises(ValueError, match=r"column 'a' of row group 0 of .*not numeric"):
        GaussianMixture(1).fit(Chunks.from_parquet(tmp_path / "text.parquet"))


def test_chunks_reject_bad_chunks_by_name():
    good = _mixture_rows(100)
    with pytest.raises(ValueError, match=r"chunk 1 has 2 columns .* have 3"):
        Chunks([good, good[:, :2]])
    with pytest.raises(ValueError, match=r"chunk 2 is 1-D.*reshape\(-1, 1\)"):
        Chunks([good, good, good[:, 0]])
    with pytest.raises(ValueError, match="chunk 1 holds <U1 values"):
        Chunks([good, np.array([["a", "b", "c"]])])
    bad = good.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="chunk 1 contains NaN or infinity"):
        GaussianMixture(2).fit(Chunks([good, bad]))
    with pytest.raises(ValueError, match="hold no rows"):
        Chunks([good[:0]])
    with pytest.raises(TypeError, match="partial_fit"):
        Chunks(part for part in [good, good])
    with pytest.raises(TypeError, match="pass the array itself"):
        Chunks(good)
    with pytest.raises(ValueError, match="sample_weight cannot be given separately"):
        GaussianMixture(2).fit(Chunks([good]), sample_weight=np.ones(100))


def test_chunks_reject_bad_weights_and_changing_chunks():
    good = _mixture_rows(100)
    with pytest.raises(ValueError, match="weights ran out at chunk 1"):
        GaussianMixture(2).fit(Chunks([good, good], weights=[np.ones(100)]))
    with pytest.raises(ValueError, match="more arrays of weights than chunks"):
        GaussianMixture(2).fit(Chunks([good], weights=[np.ones(100)] * 2))
    with pytest.raises(ValueError, match=r"weights of chunk 0 have shape \(99,\)"):
        GaussianMixture(2).fit(Chunks([good], weights=[np.ones(99)]))
    with pytest.raises(ValueError, match="weights of chunk 0 contain negative"):
        GaussianMixture(2).fit(Chunks([good], weights=[-np.ones(100)]))

    sizes = iter([100, 100, 100, 90])

    def shrinking():
        return [good[: next(sizes)]]

    with pytest.raises(ValueError, match="changed between passes: chunk 0 has 90"):
        GaussianMixture(2, random_state=0).fit(Chunks(shrinking))
    counts = iter([2, 2, 1])
    with pytest.raises(ValueError, match="changed between passes: 1 chunks where"):
        GaussianMixture(2, random_state=0).fit(Chunks(lambda: [good] * next(counts)))
