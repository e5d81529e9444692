"""Out of core on one machine: memory-mapped arrays and streams of chunks."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gaussmix import GaussianMixture
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
