"""Threads over row chunks, with BLAS held to one thread meanwhile.

The E-step's work per chunk is a few small matrix products and a few
elementwise passes. NumPy releases the GIL for most of them (not matmul
with at most 500 outputs, which the E-step therefore batches: see
gaussmix._em._GIL_HELD_OUTPUTS; the compiled kernels of gaussmix._kernels
release it throughout), so one Python thread per core, each running
single-threaded BLAS on its own chunks, keeps every core busy without the
oversubscription (and the stalls) of nesting BLAS's own threads inside ours.

Workers take chunks as they become free, and the results are summed in
chunk order, so the sums are the same whatever the number of threads or
their timing. The worker threads are kept between calls.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = [
    "max_workers",
    "reduce_chunks",
    "rows_within_share",
    "single_threaded_native",
    "usable_cpus",
]

S = TypeVar("S")
T = TypeVar("T")

_controller: ThreadpoolController | None = None
# Elements in NumPy's ufunc buffer while chunks are processed. With the
# default (8192), a 2-D operation with a broadcast operand and rows of at
# most 4096 values is run through the buffer, the broadcast operand copied
# into it, which made the E-step's elementwise passes (features,
# normalisation) 1.5x slower for chunks of 1000-4096 rows (case (b) of
# benchmarks/bench_em.py: 8% of an iteration); 512 avoids that.
_UFUNC_BUFFER = 512
# Workers allowed by the caller's BLAS setting, read before we limit BLAS.
_workers: ContextVar[int | None] = ContextVar("gaussmix_workers", default=None)

# The worker threads, kept between calls: starting and joining a pool took
# 0.2 ms, and an E-step of case (e) of benchmarks/bench_em.py in float32
# takes 13 ms. (pid, threads, pool): made again in a forked child, whose
# copy has no threads, or where more threads are asked for.
_pool: tuple[int, int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()
# Set in the pool's own threads: work submitted from one of them (a chunk
# function that itself reduces over chunks) runs in place, never waiting on
# the pool it occupies.
_in_pool = threading.local()


def _worker_pool(n_threads: int) -> ThreadPoolExecutor:
    """The kept pool of worker threads, with at least ``n_threads``."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < n_threads:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            n_threads = max(n_threads, usable_cpus())
            executor = ThreadPoolExecutor(
                n_threads,
                thread_name_prefix="gaussmix",
                initializer=setattr,
                initargs=(_in_pool, "active", True),
            )
            _pool = (os.getpid(), n_threads, executor)
        return _pool[2]


def _blas() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def usable_cpus() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def rows_within_share(
    data_bytes: int, per_row: int, share: float, limits: tuple[int, int]
) -> int:
    """Rows per chunk whose temporaries (``per_row`` bytes a row), one chunk
    per usable core, take at most ``share`` of ``data_bytes``; within
    ``limits`` (least, most)."""
    low, high = limits
    rows = int(share * data_bytes) // (per_row * usable_cpus())
    return max(low, min(rows, high))


def max_workers() -> int:
    """Threads to use: the usable cores, but no more than BLAS is allowed.

    A caller that limited BLAS (for instance with
    ``threadpoolctl.threadpool_limits(1)``) gets one worker.
    """
    blas = [info["num_threads"] for info in _blas().select(user_api="blas").info()]
    allowed = min(blas) if blas else usable_cpus()
    return max(1, min(usable_cpus(), allowed))


@contextmanager
def _ufunc_buffer() -> Iterator[None]:
    """NumPy's ufunc buffer at ``_UFUNC_BUFFER`` in this thread, then restored."""
    previous = np.setbufsize(_UFUNC_BUFFER)
    try:
        yield
    finally:
        np.setbufsize(previous)


@contextmanager
def single_threaded_native() -> Iterator[None]:
    """Hold BLAS and OpenMP to one thread; remember how many workers were allowed.

    Every BLAS call of a fit is small (chunked products, K factorisations
    of D x D matrices), and OpenBLAS's threads on small calls are slower
    than one thread; on a busy machine they stall for milliseconds per call.
    The parallelism is ours instead (:func:`reduce_chunks`). Nested uses
    are free.
    """
    if _workers.get() is not None:
        yield
        return
    token = _workers.set(max_workers())
    try:
        # OpenMP too: scikit-learn's k-means (the default initialisation)
        # runs OpenMP threads that spin, and on a busy machine crawl.
        with _blas().limit(limits=1):
            yield
    finally:
        _workers.reset(token)


# Results a worker may leave waiting for an earlier chunk's, per worker,
# before it waits too. Unbounded, a worker the operating system held up
# let the others pile up results: a whole float32 fit of case (d) of
# benchmarks/bench_em.py (a 0.5 MiB result per 256-row chunk) peaked at
# 23-28% of its input from run to run, 2 MiB of it waiting results.
_MAX_PENDING = 1


def reduce_chunks(
    make_state: Callable[[], S],
    process: Callable[[S, slice], T],
    chunks: Sequence[slice],
    add: Callable[[T, T], T],
    n_workers: int | None = None,
) -> T:
    """``process`` every chunk, summing the results with ``add`` in chunk order.

    Workers take the next chunk as soon as they are free, so a thread that
    the operating system delays (a busy machine) does not hold the others
    up, unless as many results as there are workers already wait for it
    (then the memory they hold stays bounded). Each completed result is
    folded into the total as soon as all the chunks before it are folded,
    so the total is
    ``((r0 + r1) + r2) + ...`` whatever the number of workers or their
    timing: a fit is the same bit for bit on any machine. ``make_state``
    makes each worker's scratch arrays.

    BLAS and OpenMP are held to one thread throughout, even with a single
    worker: the chunks' matrix products are small, and OpenBLAS's own
    threads on small products are slower than one thread (on a busy
    machine, many times slower).
    """
    if not chunks:
        raise ValueError("no chunks to process")
    with single_threaded_native():
        allowed = _workers.get() if n_workers is None else n_workers
        n = min(allowed or 1, len(chunks))
        if getattr(_in_pool, "active", False):
            n = 1
        if n <= 1:
            with _ufunc_buffer():
                state = make_state()
                total = process(state, chunks[0])
                for rows in chunks[1:]:
                    total = add(total, process(state, rows))
            return total

        counter = itertools.count()
        ready_or_failed = threading.Condition()
        pending: dict[int, T] = {}
        folded: list[T] = []
        next_index = 0
        failed = threading.Event()

        def work() -> None:
            try:
                with _ufunc_buffer():
                    fold_results()
            except BaseException:
                failed.set()  # the other workers stop at their next chunk
                with ready_or_failed:
                    ready_or_failed.notify_all()
                raise

        def fold_results() -> None:
            nonlocal next_index
            state = make_state()
            while True:
                with ready_or_failed:
                    # At most one result per worker waits for those before
                    # it (see _MAX_PENDING); the chunk they wait for is
                    # being processed, so the wait ends.
                    while len(pending) >= _MAX_PENDING * n and not failed.is_set():
                        ready_or_failed.wait()
                    index = next(counter)
                if index >= len(chunks) or failed.is_set():
                    return
                result = process(state, chunks[index])
                with ready_or_failed:
                    pending[index] = result
                    while next_index in pending:
                        ready = pending.pop(next_index)
                        if folded:
                            folded[0] = add(folded[0], ready)
                        else:
                            folded.append(ready)
                        next_index += 1
                    ready_or_failed.notify_all()

        futures = [_worker_pool(n).submit(work) for _ in range(n)]
        # Every worker done before anything returns or raises: none is left
        # running on this call's buffers or after BLAS's limit is lifted.
        wait(futures)
        for future in futures:
            future.result()
        return folded[0]
