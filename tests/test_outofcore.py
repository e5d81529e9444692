"""Out of core on one machine: memory-mapped arrays and streams of chunks."""

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gaussmix import Chunks, GaussianMixture, _em, _init, _online, _parallel, _stats
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
from gaussmix._source import ArraySource, column_variances
from helpers import COVARIANCE_TYPES

MiB = 2**20


def _assert_stats_identical(a, b):
    for name in ("shift", "resp_sum", "diff_sum", "scatter"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.weight_sum == b.weight_sum


@pytest.mark.parametrize("n_features", [1, 3, 8])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("windows", [None, (7000, 7000)])
def test_nearest_statistics_chunk_by_chunk_equal_labelling_every_row(
    n_features, weighted, windows, monkeypatch
):
    # Labelled window by window as the sums go, or all rows first and then
    # summed in the same chunks: the same statistics, bit for bit. Windows
    # of the default size here (4096 rows), and of 7000 (none of them a
    # divisor of the rows or of the other chunks below).
    if windows is not None:
        monkeypatch.setattr(_init, "_LABEL_ROWS", windows)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50_001, n_features)) * 3
    w = rng.uniform(0, 2, len(X)) if weighted else None
    centres = X[[5, 7000, 30_000, 49_999]]
    strategy = get_covariance("full")
    chunked = ArraySource(X, w).nearest_statistics(centres, strategy)
    labels = nearest(X, centres, strategy)
    whole = label_statistics(
        X, w, labels, centres, strategy, chunk_size=_init.label_rows(X)
    )
    _assert_stats_identical(chunked, whole)
    # In other chunks the sums differ only by rounding.
    other = label_statistics(X, w, labels, centres, strategy, chunk_size=5000)
    for name in ("resp_sum", "diff_sum", "scatter"):
        np.testing.assert_allclose(
            getattr(other, name), getattr(chunked, name), rtol=1e-12, atol=1e-9
        )


def test_labelling_windows_grow_with_the_input_within_a_share_of_it(monkeypatch):
    monkeypatch.setattr(_parallel, "usable_cpus", lambda: 2)
    low, high = _init._LABEL_ROWS
    # Case (a) of benchmarks/bench_em.py (1.5 MiB): the smallest windows.
    assert _init.label_rows(np.empty((100_000, 2))) == low
    # Cases (b) and (e) (122 and 61 MiB): the largest.
    assert _init.label_rows(np.empty((1_000_000, 16))) == high
    assert _init.label_rows(np.empty((2_000_000, 4), np.float32)) == high
    # In between, both workers' windows take the share of the input.
    X = np.empty((400_000, 8))
    rows = _init.label_rows(X)
    assert low < rows < high
    per_row = 40 + 2 * 8 * 8
    assert 2 * rows * per_row <= _init._LABEL_SHARE * X.nbytes
    assert 2 * (rows + 1) * per_row > _init._LABEL_SHARE * X.nbytes


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
    # Load numba and the compiled kernels, if installed, first: a one-off
    # cost of the process, whatever the data.
    from gaussmix import _kernels
    _kernels.warm_up()
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
    # magnitude, the variances, the k-means sample, the nearest centre: four
    # passes before EM, then one per iteration.
    assert source.n_passes == 4 + gm.n_iter_

    w = np.ones(len(X))
    weighted = Chunks(np.array_split(X, 9), weights=np.array_split(w, 9))
    with pytest.warns(ConvergenceWarning):
        GaussianMixture(3, random_state=0, max_iter=2, tol=0).fit(weighted)
    # Weights add two passes: the rows with positive weight, and the
    # weights the k-means sample is drawn among.
    assert weighted.n_passes == 6 + 2


@pytest.mark.parametrize(("dtype", "offset"), [(np.float64, 1e6), (np.float32, 1e2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_column_variances_in_one_pass_of_chunks(dtype, offset, weighted):
    # Far from the origin in units of the spread (up to 1e9 of it): squares
    # about the origin would keep no digit of the variances. Blocks of 1,
    # 0 and 40k rows, some with no weight, merged in one pass: numpy's
    # two-pass variance, in float64, of the same values, to within the
    # rounding of a mean against the spread (Moments).
    rng = np.random.default_rng(4)
    spread = np.array([1.0, 1e-3, 10.0])
    X = (offset + rng.normal(size=(100_001, 3)) * spread).astype(dtype)
    # Weights in X's dtype, as a fit holds them.
    w = rng.uniform(0, 3, len(X)).astype(dtype) if weighted else None
    if weighted:
        w[5_000:45_000] = 0.0
    values = X.astype(np.float64)
    mean = np.average(values, axis=0, weights=w)
    expected = np.average((values - mean) ** 2, axis=0, weights=w)
    bounds = [0, 1, 1, 5_000, 45_000, len(X)]
    pairs = list(itertools.pairwise(bounds))
    sources = [
        ArraySource(X, w),
        Chunks(
            [X[a:b] for a, b in pairs],
            weights=None if w is None else [w[a:b] for a, b in pairs],
        ),
    ]
    bound = 4 * np.finfo(np.float64).eps * offset / np.sqrt(expected)
    for source in sources:
        error = np.abs(column_variances(source) - expected) / expected
        assert np.all(error <= bound), (error, bound)
    assert sources[1].n_passes == 1
    # A bound that means something: squares about the origin miss it by far
    # in the narrowest column.
    naive = np.average(values**2, axis=0, weights=w) - mean**2
    assert abs(naive[1] - expected[1]) / expected[1] > 1e3 * bound[1]


def test_moments_of_blocks_add_up_whatever_their_weights():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 2)) + 3
    w = rng.uniform(0, 1, 50)
    whole = _stats.moments_of(X, w)
    parts = _stats.moments_of(X[:0], w[:0]) + _stats.moments_of(X[:20], w[:20])
    parts = (
        parts
        + _stats.moments_of(X[20:], np.zeros(30))
        + _stats.moments_of(X[20:], w[20:])
    )
    assert parts.weight == pytest.approx(whole.weight, rel=1e-14)
    np.testing.assert_allclose(parts.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(parts.squares, whole.squares, rtol=1e-13)
    np.testing.assert_allclose(
        whole.variances, np.cov(X, rowvar=False, aweights=w, bias=True).diagonal()
    )
    nothing = _stats.moments_of(X, np.zeros(50))
    assert nothing.weight == 0
    np.testing.assert_array_equal(nothing.variances, [0.0, 0.0])


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


# ------------------------------------------------------------ partial_fit
_CENTRES = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 5.0, 2.0]])
_FACTORS = np.array(
    [
        [[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 1.0]],
        [[0.5, 0.0, 0.0], [0.2, 1.5, 0.0], [0.0, 0.1, 0.8]],
        [[1.2, -0.4, 0.0], [0.0, 0.6, 0.0], [0.3, 0.0, 1.0]],
    ]
)


def _known_mixture(n, rng):
    """Rows of a known 3-component mixture in 3-D (weights 0.5, 0.3, 0.2)."""
    labels = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    z = rng.normal(size=(n, 3))
    return _CENTRES[labels] + np.einsum("nij,nj->ni", _FACTORS[labels], z)


def _sorted_params(gm):
    order = np.argsort(gm.means_[:, 0])
    return gm.weights_[order], gm.means_[order], gm.covariances_[order]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_statistics_recentred_equal_statistics_taken_about_the_new_shift(
    covariance_type,
):
    rng = np.random.default_rng(0)
    X = 1e6 + rng.normal(size=(2_000, 3))
    resp = rng.dirichlet(np.ones(4), size=len(X))
    w = rng.uniform(0, 2, len(X))
    strategy = get_covariance(covariance_type)
    source = ArraySource(X, w)
    old = np.full((4, 3), 1e6) + rng.normal(size=(4, 3))
    new = np.full((4, 3), 1e6) + rng.normal(size=(4, 3))
    about_old = source.resp_statistics(lambda rows: resp[rows], old, strategy)
    about_new = source.resp_statistics(lambda rows: resp[rows], new, strategy)
    moved = about_old.recentred(new)
    np.testing.assert_array_equal(moved.shift, about_new.shift)
    np.testing.assert_allclose(moved.resp_sum, about_new.resp_sum, rtol=1e-13)
    scale = np.abs(about_new.diff_sum).max()
    np.testing.assert_allclose(moved.diff_sum, about_new.diff_sum, atol=1e-12 * scale)
    scale = np.abs(about_new.scatter).max()
    np.testing.assert_allclose(moved.scatter, about_new.scatter, atol=1e-12 * scale)
    twice = moved.scaled(2.0)
    np.testing.assert_array_equal(twice.scatter, 2.0 * moved.scatter)
    assert twice.weight_sum == 2.0 * moved.weight_sum


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_model_statistics_give_back_the_model(covariance_type):
    X = _known_mixture(3_000, np.random.default_rng(1))
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    strategy, params = gm._strategy(), gm._params()
    stats = _online.model_statistics(params, strategy, gm.reg_covar)
    again, _ = _em.m_step(stats, strategy, gm.reg_covar, np.zeros(3), 2.0**-52)
    for got, expected in zip(again, params, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_first_partial_fit_is_one_em_step_from_the_init():
    X = _known_mixture(2_000, np.random.default_rng(2))
    for init_params in ("kmeans", "random"):
        online = GaussianMixture(3, init_params=init_params, random_state=0)
        online.partial_fit(X)
        with pytest.warns(ConvergenceWarning):
            batch = GaussianMixture(
                3, init_params=init_params, random_state=0, max_iter=1
            ).fit(X)
        _assert_same_fit(batch, online)
        assert online.n_iter_ == 1 and not online.converged_


def test_partial_fit_on_a_stream_approaches_the_batch_fit():
    rng = np.random.default_rng(0)
    stream = [_known_mixture(1_000, rng) for _ in range(100)]
    held_out = _known_mixture(20_000, np.random.default_rng(99))
    batch = GaussianMixture(3, random_state=0, tol=1e-8).fit(np.concatenate(stream))
    online = GaussianMixture(3, random_state=0)
    for chunk in stream:
        online.partial_fit(chunk)
    assert online.n_iter_ == 100 and len(online.lower_bounds_) == 100
    # Measured after 100 chunks: means within 0.016 of the batch fit's,
    # covariances within 0.026, weights within 0.003, held-out mean
    # log-likelihood 2e-4 below; the bounds leave a factor of about 3.
    for got, expected, tol in zip(
        _sorted_params(online), _sorted_params(batch), (0.01, 0.05, 0.08), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    assert (
        batch.score(held_out) - 1e-3 < online.score(held_out) <= batch.score(held_out)
    )


def test_partial_fit_improves_the_held_out_likelihood_from_a_poor_start():
    rng = np.random.default_rng(0)
    held_out = _known_mixture(20_000, np.random.default_rng(99))
    online = GaussianMixture(3, init_params="random_from_data", random_state=0)
    scores = []
    for n in range(1, 101):
        online.partial_fit(_known_mixture(200, rng))
        if n in (1, 10, 30, 100):
            scores.append(online.score(held_out))
    assert np.all(np.diff(scores) > 0), scores


def test_partial_fit_weights_count_like_repeated_rows():
    rng = np.random.default_rng(3)
    chunks = [_known_mixture(300, rng) for _ in range(3)]
    counts = [rng.integers(0, 3, len(c)) for c in chunks]
    start = GaussianMixture(3, random_state=0).fit(chunks[0])
    init = dict(
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
    weighted = GaussianMixture(3, **init)
    repeated = GaussianMixture(3, **init)
    for chunk, count in zip(chunks, counts, strict=True):
        weighted.partial_fit(chunk, sample_weight=count)
        repeated.partial_fit(np.repeat(chunk, count, axis=0))
    _assert_same_fit(weighted, repeated)


def test_partial_fit_after_fit_continues_from_the_fitted_model():
    rng = np.random.default_rng(4)
    X = _known_mixture(20_000, rng)
    chunk = _known_mixture(500, rng)
    model = GaussianMixture(3, random_state=0).fit(X)
    strategy, start = model._strategy(), model._params()
    model.partial_fit(chunk)
    assert model.n_iter_ == 2

    # The fitted model counts as the first chunk: one step of size 2**-0.7
    # from its statistics, not a new start from the chunk.
    stats = _em.e_step(chunk, None, start, strategy)
    running = _online.blend(
        _online.model_statistics(start, strategy, model.reg_covar),
        stats.scaled(1 / stats.weight_sum),
        2**-0.7,
    )
    variances = column_variances(ArraySource(chunk, None))
    floor = 1e3 * 2.0**-52 * (variances + variances.mean())
    expected, _ = _em.m_step(running, strategy, model.reg_covar, floor, 2.0**-52)
    np.testing.assert_allclose(model.means_, expected.means, rtol=1e-12)
    np.testing.assert_allclose(model.covariances_, expected.covariances, rtol=1e-12)
    after = model.means_.copy()

    # A later fit replaces what partial_fit learned; partial_fit then
    # continues from that fit, as it did the first time.
    model.fit(X)
    np.testing.assert_array_equal(model._params().means, start.means)
    model.partial_fit(chunk)
    assert model.n_iter_ == 2
    np.testing.assert_allclose(model.means_, after, rtol=1e-12)


def test_fit_with_warm_start_continues_from_partial_fit():
    rng = np.random.default_rng(5)
    X = _known_mixture(5_000, rng)
    online = GaussianMixture(3, random_state=0, warm_start=True)
    for chunk in np.array_split(X, 10):
        online.partial_fit(chunk)
    start = dict(
        weights_init=online.weights_,
        means_init=online.means_,
        precisions_init=online.precisions_,
    )
    online.set_params(max_iter=1, tol=0)
    with pytest.warns(ConvergenceWarning):
        online.fit(X)
    with pytest.warns(ConvergenceWarning):
        batch = GaussianMixture(3, max_iter=1, **start).fit(X)
    _assert_same_fit(batch, online)


def test_partial_fit_checks_its_chunks():
    rng = np.random.default_rng(6)
    gm = GaussianMixture(3, random_state=0).partial_fit(_known_mixture(100, rng))
    with pytest.raises(
        ValueError,
        match="X has 2 features, but GaussianMixture is expecting 3 features",
    ):
        gm.partial_fit(_known_mixture(100, rng)[:, :2])
    with pytest.raises(ValueError, match="first chunk given to partial_fit"):
        GaussianMixture(5).partial_fit(np.ones((4, 2)) * np.arange(4)[:, None])
    float32 = GaussianMixture(2, random_state=0).partial_fit(
        _known_mixture(100, rng).astype(np.float32)
    )
    float32.partial_fit(_known_mixture(100, rng))
    assert float32.means_.dtype == np.float32


def test_magnitude_reads_blocks_and_keeps_nan():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200_001, 2))
    X[123_456, 1] = -40.0
    assert ArraySource(X, None).magnitude() == 40.0
    X[150_000, 0] = np.nan
    assert np.isnan(ArraySource(X, None).magnitude())
    assert ArraySource(X[:0], None).magnitude() == 0.0


def test_float32_chunks_measure_the_expansion_like_an_array(monkeypatch):
    """A float32 fit at a tight tol measures its expansion's rounding on a
    sample of rows drawn with repeats (sorted), which a Chunks source takes
    in one pass; the fit is the in-memory one, and one pass more than its
    iterations and start need."""
    import gaussmix._source as source_module
    from gaussmix.datasets import make_elliptical_blobs

    monkeypatch.setattr(source_module, "GAP_ROWS", 4096)  # a sample of 30,000
    measured = []
    real = source_module.RowSource.expansion_gap

    def recorded(self, params, strategy):
        measured.append(real(self, params, strategy))
        return measured[-1]

    monkeypatch.setattr(source_module.RowSource, "expansion_gap", recorded)
    monkeypatch.setattr(source_module.ArraySource, "expansion_gap", recorded)
    X = make_elliptical_blobs(30_000, 8, 4, separation=2.0, random_state=0)[0]
    X = X.astype(np.float32)
    in_memory = GaussianMixture(8, tol=1e-5, random_state=0).fit(X)
    assert len(measured) == 1
    source = Chunks(np.array_split(X, 7))
    chunked = GaussianMixture(8, tol=1e-5, random_state=0).fit(source)
    assert len(measured) == 2 and 0.0 < measured[1] <= 1e-5 / 4
    assert chunked.n_iter_ == in_memory.n_iter_
    np.testing.assert_allclose(chunked.lower_bound_, in_memory.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(chunked.means_, in_memory.means_, atol=1e-4)
    # Four passes before EM, one per iteration, one for the sample.
    assert source.n_passes == 4 + chunked.n_iter_ + 1
