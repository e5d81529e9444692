"""Threads over row chunks, with BLAS held to one thread meanwhile.

The E-step's work per chunk is a few small matrix products and a few
elementwise passes; NumPy releases the GIL for both, so one Python thread
per core, each running single-threaded BLAS on its own chunks, keeps every
core busy without the oversubscription (and the stalls) of nesting BLAS's
own threads inside ours.

Chunks are dealt round-robin, and the results are returned in worker order,
so for a given number of workers the sums are always taken in the same
order: a fit is deterministic on a given machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from threadpoolctl import ThreadpoolController

__all__ = ["map_chunks", "max_workers", "single_threaded_native"]

T = TypeVar("T")

_controller: ThreadpoolController | None = None
# Workers allowed by the caller's BLAS setting, read before we limit BLAS.
_workers: ContextVar[int | None] = ContextVar("gaussmix_workers", default=None)


def _blas() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def max_workers() -> int:
    """Threads to use: the usable cores, but no more than BLAS is allowed.

    A caller that limited BLAS (for instance with
    ``threadpoolctl.threadpool_limits(1)``) gets one worker.
    """
    blas = [info["num_threads"] for info in _blas().select(user_api="blas").info()]
    allowed = min(blas) if blas else _usable_cpus()
    return max(1, min(_usable_cpus(), allowed))


@contextmanager
def single_threaded_native() -> Iterator[None]:
    """Hold BLAS and OpenMP to one thread; remember how many workers were allowed.

    Every BLAS call of a fit is small (chunked products, K factorisations
    of D x D matrices), and OpenBLAS's threads on small calls are slower
    than one thread; on a busy machine they stall for milliseconds per call.
    The parallelism is ours instead (:func:`map_chunks`). Nested uses are
    free.
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


def map_chunks(
    work: Callable[[Sequence[slice]], T],
    chunks: Sequence[slice],
    n_workers: int | None = None,
) -> list[T]:
    """``work(chunks[t::n])`` for each worker ``t``, in worker order.

    BLAS is held to one thread throughout, even with a single worker: the
    chunks' matrix products are small, and OpenBLAS's own threads on small
    products are slower than one thread (on a busy machine, many times
    slower).
    """
    with single_threaded_native():
        allowed = _workers.get() if n_workers is None else n_workers
        n = min(allowed or 1, len(chunks))
        if n <= 1:
            return [work(chunks)]
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(work, chunks[t::n]) for t in range(n)]
            return [future.result() for future in futures]
