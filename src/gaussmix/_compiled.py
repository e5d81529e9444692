"""The expanded E-step's memory-bound passes, compiled by numba.

Imported only through :mod:`gaussmix._kernels`, and only where numba is
installed. Each function does, in one or two passes over a chunk, what the
NumPy path of :mod:`gaussmix._em` does in several calls. The features are
built with the same floating-point operations in the same order, so they
are bitwise equal to NumPy's (tested); the responsibilities are normalised
with an ``exp`` of our own (:func:`exp_normal`), vectorised where NumPy's
call cannot be fused with the passes around it, so they agree with NumPy's
to a few units in the last place (tested). The work arrays are passed
whole (C-contiguous) with the number of columns in use, so that every chunk
runs the same compiled code. Loops run over slices and ``range(m)`` so that
numba can prove their indices non-negative and vectorise them;
``error_model="numpy"`` gives NumPy's floating-point semantics (no
exception on division by zero).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

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


@intrinsic
def _bits(typingctx, x):  # pragma: no cover - compiled
    """The bits of a float as an integer of the same width."""
    width = {types.float64: 64, types.float32: 32}.get(x)
    if width is None:
        return None
    signature = (types.int64 if width == 64 else types.int32)(x)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(width))

    return signature, codegen


@intrinsic
def _from_bits(typingctx, x):  # pragma: no cover - compiled
    """The float whose bits are the integer ``x`` (64 or 32 bits)."""
    target = {types.int64: types.float64, types.int32: types.float32}.get(x)
    if target is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(target))

    return target(x), codegen


# exp(x) = 2**n * exp(r), n = round(x / log 2), r = x - n log 2 in
# [-log(2)/2, log(2)/2], log 2 split in two so that n * _LN2_HI is exact
# (its low bits are zero; fdlibm's split). n is rounded by adding 1.5 * 2**52
# (2**23 in float32), which leaves it in the low bits of the sum; 2**n is
# built from those bits. exp(r) is its Taylor polynomial: the first term left
# out is below 2e-16 (degree 12) and 5e-9 (degree 7, float32) of exp(r).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 1.5 * 2.0**52
_ROUND_BITS = int(np.float64(_ROUND).view(np.int64))
_TAYLOR = tuple(1.0 / math.factorial(i) for i in range(13))

_LOG2E_32 = np.float32(_LOG2E)
_LN2_HI_32 = np.int32(0x3F317200).view(np.float32)
_LN2_LO_32 = np.int32(0x35BFBE8E).view(np.float32)
_ROUND_32 = np.float32(1.5 * 2.0**23)
_ROUND_BITS_32 = np.int32(_ROUND_32.view(np.int32))
_BIAS_32 = np.int32(127)
_MANTISSA_32 = np.int32(23)
_TAYLOR_32 = tuple(np.float32(c) for c in _TAYLOR[:8])


def exp_normal(x):  # pragma: no cover - replaced by its overload in numba
    """``exp(x)`` for ``x`` in ``[log(tiny), 0]`` (or NaN), vectorisable.

    Normal results only: below ``log`` of the dtype's smallest normal number
    the result is wrong. The E-step clamps its arguments above that
    (``gaussmix._em._min_log_resp``). Its relative error is within 2 eps of
    the C library's ``exp`` in float64 and 1 eps in float32 (tested). Unlike
    a call to NumPy's ``exp``, it vectorises inside a loop with other work.
    """
    raise NotImplementedError("exp_normal runs only in numba-compiled code")


@overload(exp_normal, inline="always")
def _exp_normal(x):  # pragma: no cover - compiled
    if x == types.float64:
        c = _TAYLOR

        def exp64(x):
            k = x * _LOG2E + _ROUND
            n = k - _ROUND
            r = (x - n * _LN2_HI) - n * _LN2_LO
            p = c[12] * r + c[11]
            p = p * r + c[10]
            p = p * r + c[9]
            p = p * r + c[8]
            p = p * r + c[7]
            p = p * r + c[6]
            p = p * r + c[5]
            p = p * r + c[4]
            p = p * r + c[3]
            p = p * r + c[2]
            p = p * r + c[1]
            p = p * r + c[0]
            return p * _from_bits((_bits(k) - _ROUND_BITS + 1023) << 52)

        return exp64
    if x == types.float32:
        c0, c1, c2, c3, c4, c5, c6, c7 = _TAYLOR_32

        def exp32(x):
            k = x * _LOG2E_32 + _ROUND_32
            n = k - _ROUND_32
            r = (x - n * _LN2_HI_32) - n * _LN2_LO_32
            p = c7 * r + c6
            p = p * r + c5
            p = p * r + c4
            p = p * r + c3
            p = p * r + c2
            p = p * r + c1
            p = p * r + c0
            power = np.int32((_bits(k) - _ROUND_BITS_32 + _BIAS_32) << _MANTISSA_32)
            return p * _from_bits(power)

        return exp32
    return None


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def exp_array(x, out):  # pragma: no cover - compiled
    """``out = exp_normal(x)``, element by element (for tests)."""
    for j in range(x.size):
        out[j] = exp_normal(x[j])


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def normalise(log_prob, n, top, total, inverse, floor):  # pragma: no cover
    """Over the first ``n`` columns, block by block in cache: column maxima
    into ``top``, ``log_prob = exp(max(log_prob - top, floor))``, column
    sums into ``total``, and every column divided by its sum.

    As the NumPy path of ``gaussmix._em._normalise`` but for the ``exp``
    (:func:`exp_normal`); NaN propagates as through ``np.maximum``. Multiply
    and add may be fused (``contract``): only ``exp_normal`` has such pairs.
    """
    n_components = log_prob.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        m = stop - start
        best = top[start:stop]
        sums = total[start:stop]
        inv = inverse[start:stop]
        first = log_prob[0, start:stop]
        for j in range(m):
            best[j] = first[j]
        for k in range(1, n_components):
            row = log_prob[k, start:stop]
            for j in range(m):
                x = row[j]
                t = best[j]
                best[j] = x if (x > t or x != x) else t
        for j in range(m):
            sums[j] = 0.0
        for k in range(n_components):
            row = log_prob[k, start:stop]
            for j in range(m):
                v = row[j] - best[j]
                e = exp_normal(v if not (v < floor) else floor)
                row[j] = e
                sums[j] += e
        for j in range(m):
            inv[j] = 1.0 / sums[j]
        for k in range(n_components):
            row = log_prob[k, start:stop]
            for j in range(m):
                row[j] *= inv[j]
