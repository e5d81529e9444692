"""The expanded E-step's memory-bound passes, compiled by numba.

Imported only through :mod:`gaussmix._kernels`, and only where numba is
installed. Each function does, in one or two passes over a chunk, what the
NumPy path of :mod:`gaussmix._em` does in several calls, with the same
floating-point operations in the same order: the results are bitwise equal
to NumPy's (tested). The work arrays are passed whole (C-contiguous) with
the number of columns in use, so that every chunk runs the same compiled
code. Loops run over slices and ``range(m)`` so that numba can prove their
indices non-negative and vectorise them; ``error_model="numpy"`` gives
NumPy's floating-point semantics (no exception on division by zero).
"""

from __future__ import annotations

from numba import njit

# Columns per block: a block of every row stays in the first-level cache
# between the passes over it.
_BLOCK = 256
# Rows of the data per block of the transposing copy.
_ROW_BLOCK = 64


@njit(nogil=True, cache=True, error_model="numpy")
def centre_transposed(X, centre, z):  # pragma: no cover - compiled
    """``z[:, :n] = X.T - centre[:, None]`` for the ``n`` rows of ``X``."""
    n, n_features = X.shape
    for start in range(0, n, _ROW_BLOCK):
        stop = min(n, start + _ROW_BLOCK)
        block = X[start:stop]
        for i in range(n_features):
            c = centre[i]
            row = z[i, start:stop]
            for j in range(stop - start):
                row[j] = block[j, i] - c


@njit(nogil=True, cache=True, error_model="numpy")
def quadratic(first, second, phi, z_row, n):  # pragma: no cover - compiled
    """``phi[q, :n] = z[first[q]] * z[second[q]]``, ``z`` from row ``z_row``."""
    for q in range(first.size):
        a = phi[z_row + first[q], :n]
        b = phi[z_row + second[q], :n]
        out = phi[q, :n]
        for j in range(n):
            out[j] = a[j] * b[j]


@njit(nogil=True, cache=True, error_model="numpy")
def shift_clamp(log_prob, n, top, floor):  # pragma: no cover - compiled
    """Over the first ``n`` columns: column maxima into ``top``, then
    ``log_prob = max(log_prob - top, floor)``.

    NaN propagates as through ``np.maximum``.
    """
    n_components = log_prob.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        m = stop - start
        best = top[start:stop]
        first = log_prob[0, start:stop]
        for j in range(m):
            best[j] = first[j]
        for k in range(1, n_components):
            row = log_prob[k, start:stop]
            for j in range(m):
                x = row[j]
                t = best[j]
                best[j] = x if (x > t or x != x) else t
        for k in range(n_components):
            row = log_prob[k, start:stop]
            for j in range(m):
                v = row[j] - best[j]
                row[j] = v if not (v < floor) else floor


@njit(nogil=True, cache=True, error_model="numpy")
def scale(resp, n, total, inverse):  # pragma: no cover - compiled
    """Over the first ``n`` columns: column sums into ``total``, then every
    column divided by its sum.

    As ``np.add.reduce(resp, axis=0)`` (row by row, in order), then
    ``inverse = 1 / total`` and ``resp *= inverse``.
    """
    n_components = resp.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        m = stop - start
        sums = total[start:stop]
        inv = inverse[start:stop]
        first = resp[0, start:stop]
        for j in range(m):
            sums[j] = first[j]
        for k in range(1, n_components):
            row = resp[k, start:stop]
            for j in range(m):
                sums[j] += row[j]
        for j in range(m):
            inv[j] = 1.0 / sums[j]
        for k in range(n_components):
            row = resp[k, start:stop]
            for j in range(m):
                row[j] *= inv[j]
