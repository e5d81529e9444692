"""Out-of-core fits: an array in memory, a memory-mapped .npy, gaussmix.Chunks.

For each number of rows N (8 features, 3 full-covariance components) a
.npy file is written once, then each way of fitting it runs in a fresh
process: ``memory`` loads the file (np.load), ``memmap`` maps it
(np.load(mmap_mode="r")), ``chunks`` reads it as gaussmix.Chunks of 2**20
rows (slices of the map, so the chunks cost no parsing). Each fit is the
default k-means start plus 4 EM iterations (tol=0).

Reported per fit: seconds per EM iteration (one pass over the rows; the
mean gap between the callback's iterations), seconds before EM (the
initialisation's passes), and the peak anonymous memory (RssAnon, polled
every 0.5 ms) above the process's before the data was opened, so the
``memory`` column includes the array itself. Files smaller than the page
cache are read from it, warm, after the first run: the ``memmap`` times
are then those of memory, not of the disk.

``--big GIB`` instead writes a memory-mapped file of GIB gibibytes (make it
larger than the machine's memory to see the disk) and fits it once with
2 EM iterations, reporting the same figures; the file is deleted after.

Run ``python benchmarks/bench_outofcore.py`` (a few minutes) or
``--rows 1e6,4e6 --big 32``. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

N_FEATURES = 8
CHUNK_ROWS = 2**20
MiB = 2**20


def anonymous_memory() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def write_data(path: Path, n_rows: int) -> None:
    """Rows of three separated 8-D Gaussian clusters, written block by block."""
    out = np.lib.format.open_memmap(path, "w+", np.float64, (n_rows, N_FEATURES))
    rng = np.random.default_rng(0)
    block = 2**21
    for start in range(0, n_rows, block):
        rows = min(n_rows - start, block)
        centre = 5.0 * rng.integers(0, 3, rows)[:, None]
        out[start : start + rows] = rng.standard_normal((rows, N_FEATURES)) + centre
        out.flush()
    del out


def fit_once(path: str, how: str, max_iter: int) -> dict[str, float]:
    """Fit the file one way in this process; the figures as a dict."""
    from sklearn.exceptions import ConvergenceWarning

    from gaussmix import Chunks, GaussianMixture

    peak, done = [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_memory())
            time.sleep(0.0005)

    before = anonymous_memory()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    if how == "memory":
        X = np.load(path)
    elif how == "memmap":
        X = np.load(path, mmap_mode="r")
    else:
        mapped = np.load(path, mmap_mode="r")
        starts = range(0, mapped.shape[0], CHUNK_ROWS)
        X = Chunks(lambda: (mapped[s : s + CHUNK_ROWS] for s in starts))
    opened = time.perf_counter()
    stamps: list[float] = []
    model = GaussianMixture(
        3,
        max_iter=max_iter,
        tol=0,
        random_state=0,
        callback=lambda step: stamps.append(time.perf_counter()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    end = time.perf_counter()
    done.set()
    poller.join()
    gaps = np.diff(stamps)
    return {
        "open_s": opened - start,
        "init_s": stamps[0] - opened,
        "pass_s": float(np.mean(gaps)),
        "fit_s": end - opened,
        "anon_peak_mib": (peak[0] - before) / MiB,
        "passes": getattr(X, "n_passes", -1),
    }


def in_subprocess(path: Path, how: str, max_iter: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--one", str(path), how, str(max_iter)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def table(rows_list: list[int], folder: Path) -> None:
    print(f"load average before: {load_average()}")
    print(
        f"{'rows':>11} {'file MiB':>9} {'how':>7} {'s/pass':>7} {'init s':>7} "
        f"{'anon peak MiB':>14} {'passes':>6}"
    )
    for n_rows in rows_list:
        path = folder / f"rows{n_rows}.npy"
        write_data(path, n_rows)
        size = path.stat().st_size / MiB
        try:
            for how in ("memory", "memmap", "chunks"):
                f = in_subprocess(path, how, max_iter=4)
                passes = "" if f["passes"] < 0 else f"{int(f['passes'])}"
                print(
                    f"{n_rows:>11,} {size:>9.0f} {how:>7} {f['pass_s']:>7.3f} "
                    f"{f['init_s']:>7.2f} {f['anon_peak_mib']:>14.1f} {passes:>6}",
                    flush=True,
                )
        finally:
            path.unlink()
    print(f"load average after: {load_average()}")


def big(gib: float, folder: Path) -> None:
    n_rows = int(gib * 2**30) // (8 * N_FEATURES)
    path = folder / "big.npy"
    started = time.perf_counter()
    write_data(path, n_rows)
    size = path.stat().st_size / 2**30
    print(
        f"wrote {n_rows:,} rows x {N_FEATURES} ({size:.1f} GiB) in "
        f"{time.perf_counter() - started:.0f} s; load average {load_average()}",
        flush=True,
    )
    try:
        f = in_subprocess(path, "memmap", max_iter=2)
    finally:
        path.unlink()
    print(
        f"memmap: {f['pass_s']:.1f} s per EM pass, {f['init_s']:.1f} s before EM, "
        f"fit {f['fit_s']:.0f} s, anonymous memory peak +{f['anon_peak_mib']:.1f} "
        f"MiB; load average {load_average()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default="1e6,4e6,16e6", help="comma-separated row counts"
    )
    parser.add_argument("--big", type=float, help="one memmap fit of this many GiB")
    parser.add_argument("--dir", default=None, help="where to write the files")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, how, max_iter = args.one
        print(json.dumps(fit_once(path, how, int(max_iter))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        if args.big:
            big(args.big, Path(folder))
        else:
            rows = [int(float(value)) for value in args.rows.split(",")]
            table(rows, Path(folder))


if __name__ == "__main__":
    main()
