"""The expanded E-step's work on a chunk, compiled by numba.

Imported only through :mod:`gaussmix._kernels`, and only where numba is
installed. :func:`expanded_chunk` does in one call, with the GIL released
throughout, what the NumPy path of :mod:`gaussmix._em` does in some twenty
calls per chunk: its matrix products call BLAS's ``gemm`` directly
(:func:`_gemm`), the same library NumPy uses where it can be found. The
other functions are its passes, each doing in one or two passes what the
NumPy path does in several calls. The features are
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

import ctypes
import functools
import importlib
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic, overload

# Columns per block: a block of every row stays in the first-level cache
# between the passes over it.
_BLOCK = 256
# Rows of the data per block of the transposing copy (a multiple of every
# dtype's lanes).
_ROW_BLOCK = 64
# Bytes per vector of the transposing copy's tiles (AVX2's registers): tiles
# of 8 x 8 float32 or 4 x 4 float64 values.
_VECTOR_BYTES = 32


def _fixed_width_copy(n_features: int):
    """``centre_transposed`` for rows of exactly ``n_features`` values.

    With the width a constant, LLVM loads whole rows as vectors and
    separates their values with shuffles, where the general loop does one
    strided value at a time: 1.5-2.2x faster in float64 and 2.6-4.9x in
    float32 (chunks of 29624 rows, widths 2-7), for about 2.5 s more on the
    first compile. Not faster at widths 8 and 9.
    """

    @njit(nogil=True, error_model="numpy", inline="always")
    def copy(X, centre, phi, z_row):  # pragma: no cover - compiled
        n = X.shape[0]
        values = X.reshape(n * n_features)
        for j in range(n):
            for i in range(n_features):
                phi[z_row + i, j] = values[j * n_features + i] - centre[i]

    return copy


# The widths with a loop of their own; centre_transposed picks among them.
_copy_2, _copy_3, _copy_4, _copy_5, _copy_6, _copy_7 = map(
    _fixed_width_copy, range(2, 8)
)


@njit(nogil=True, cache=True, error_model="numpy")
def centre_transposed(X, centre, phi, z_row):  # pragma: no cover - compiled
    """``phi[z_row + i, :n] = X[:, i] - centre[i]`` for the ``n`` rows of ``X``.

    ``phi`` is the whole C-contiguous work array, not a slice of its rows:
    numba cannot tell that such a slice is contiguous, and its stores were
    1.3-2x slower.
    """
    n_features = X.shape[1]
    if n_features == 2:
        _copy_2(X, centre, phi, z_row)
    elif n_features == 3:
        _copy_3(X, centre, phi, z_row)
    elif n_features == 4:
        _copy_4(X, centre, phi, z_row)
    elif n_features == 5:
        _copy_5(X, centre, phi, z_row)
    elif n_features == 6:
        _copy_6(X, centre, phi, z_row)
    elif n_features == 7:
        _copy_7(X, centre, phi, z_row)
    else:
        _tiled_copy(X, centre, phi, z_row)


@njit(nogil=True, error_model="numpy", inline="always")
def _tiled_copy(X, centre, phi, z_row):  # pragma: no cover - compiled
    """``centre_transposed`` for any width: square tiles of one vector's
    lanes each way transposed in registers (:func:`_transposed_tile`), the
    rows and features left over one value at a time.

    One value at a time costs about a cycle per value in either dtype, so
    float32 gained nothing on float64 (for 16 features, 0.92-1.18x per row);
    tiled, the pass is 2.5-3.3x faster in float32 and 1.3-1.6x in float64
    (chunks of cases (b), (c) and (d) of benchmarks/bench_em.py), and the
    compiled E-step of (c) about 7% faster in float64.
    """
    n, n_features = X.shape
    if z_row + n_features > phi.shape[0] or n > phi.shape[1]:
        raise ValueError("rows that do not fit their work array")
    lanes = _VECTOR_BYTES // X.itemsize
    width = phi.shape[1]
    tiled_rows = n - n % lanes
    tiled_features = n_features - n_features % lanes
    for start in range(0, tiled_rows, _ROW_BLOCK):
        stop = min(tiled_rows, start + _ROW_BLOCK)
        for i in range(0, tiled_features, lanes):
            for j in range(start, stop, lanes):
                _transposed_tile(
                    X, j * n_features + i, n_features, centre, i,
                    phi, (z_row + i) * width + j, width,
                )  # fmt: skip
    for i in range(tiled_features, n_features):
        c = centre[i]
        row = phi[z_row + i, :tiled_rows]
        for j in range(tiled_rows):
            row[j] = X[j, i] - c
    for j in range(tiled_rows, n):
        for i in range(n_features):
            phi[z_row + i, j] = X[j, i] - centre[i]


def _element(context, builder, array, at):  # pragma: no cover - compiled
    """In an intrinsic's code: a pointer to the element at flat offset ``at``
    of ``array``, each a (value, numba type) pair of the arguments."""
    (value, array_type), (offset, offset_type) = array, at
    data = context.make_array(array_type)(context, builder, value).data
    return builder.gep(data, [context.cast(builder, offset, offset_type, types.intp)])


def _transpose_stages(lanes: int) -> list[tuple[int, list[int], list[int]]]:
    """The shuffles that transpose a square tile of ``lanes`` vectors: for
    each distance ``d`` (lanes / 2, ..., 1), vectors ``i`` and ``i + d`` (bit
    ``d`` of ``i`` clear) swap their off-diagonal ``d x d`` blocks; the
    masks pick the new ``i`` and the new ``i + d`` from the pair."""
    stages = []
    d = lanes // 2
    while d >= 1:
        low = [j if not j & d else lanes + j - d for j in range(lanes)]
        high = [j + d if not j & d else lanes + j for j in range(lanes)]
        stages.append((d, low, high))
        d //= 2
    return stages


@intrinsic
def _transposed_tile(
    typingctx, X, x_at, x_stride, centre, c_at, phi, phi_at, phi_stride
):  # pragma: no cover - compiled
    """``phi[phi_at + i * phi_stride + r] = X[x_at + r * x_stride + i] -
    centre[c_at + i]`` (flat offsets) for ``r, i`` below the lanes of one
    vector (``_VECTOR_BYTES``): one square tile of the centred rows,
    transposed in registers. The caller keeps every offset in bounds.
    """
    arrays = (X, centre, phi)
    dtype = X.dtype
    if dtype not in (types.float32, types.float64):
        return None
    if any(
        not isinstance(a, types.Array) or a.dtype != dtype or a.layout != "C"
        for a in arrays
    ):
        return None
    lanes = _VECTOR_BYTES // (dtype.bitwidth // 8)
    signature = types.void(X, x_at, x_stride, centre, c_at, phi, phi_at, phi_stride)

    def codegen(context, builder, sig, args):
        values = list(zip(args, sig.args, strict=True))
        scalar = context.get_value_type(dtype)
        vector = ir.VectorType(scalar, lanes)
        align = dtype.bitwidth // 8

        def address(index):
            return _element(context, builder, values[index], values[index + 1])

        def stride(index):
            return context.cast(builder, *values[index], types.intp)

        def at(pointer, step, r):
            moved = builder.gep(pointer, [builder.mul(step, ir.Constant(step.type, r))])
            return builder.bitcast(moved, vector.as_pointer())

        rows, row_stride = address(0), stride(2)
        shift = builder.load(
            builder.bitcast(address(3), vector.as_pointer()), align=align
        )
        tile = [
            builder.fsub(builder.load(at(rows, row_stride, r), align=align), shift)
            for r in range(lanes)
        ]
        mask_type = ir.VectorType(ir.IntType(32), lanes)
        for d, low, high in _transpose_stages(lanes):
            low_mask, high_mask = (
                ir.Constant(mask_type, low),
                ir.Constant(mask_type, high),
            )
            swapped = list(tile)
            for i in range(lanes):
                if not i & d:
                    pair = tile[i], tile[i + d]
                    swapped[i] = builder.shuffle_vector(*pair, low_mask)
                    swapped[i + d] = builder.shuffle_vector(*pair, high_mask)
            tile = swapped
        out, out_stride = address(5), stride(7)
        for i in range(lanes):
            builder.store(tile[i], at(out, out_stride, i), align=align)
        return context.get_dummy_value()

    return signature, codegen


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
# out is below 2e-16 (degree 12) and 5e-9 (degree 7, float32) of exp(r). In
# float64 it is summed as 2**n + 2**n (r + r**2 q(r)), the 1 added last: as
# one Horner chain ending in + 1, the last roundings reached 2.1 eps where
# multiply and add are not fused (a CPU without FMA), against 1.42 eps.
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
    (``gaussmix._em._min_log_resp``). Its relative error is within 1.5 eps
    of the C library's ``exp`` in float64 and 1 eps in float32, with or
    without fused multiply-adds (tested). Unlike
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
            q = c[12] * r + c[11]
            q = q * r + c[10]
            q = q * r + c[9]
            q = q * r + c[8]
            q = q * r + c[7]
            q = q * r + c[6]
            q = q * r + c[5]
            q = q * r + c[4]
            q = q * r + c[3]
            q = q * r + c[2]
            p = r + (r * r) * q
            power = _from_bits((_bits(k) - _ROUND_BITS + 1023) << 52)
            return power + power * p

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


# log(x) = e log 2 + log(m), x = 2**e m with m in [sqrt(1/2), sqrt(2)), and
# log(m) = 2 atanh(s) = 2 (s + s**3 / 3 + s**5 / 5 + ...), s = (m - 1) / (m + 1),
# |s| < 0.172: the first term left out is below 3e-17 (terms to s**19) and
# 3e-9 (to s**9, float32) of log(m). log 2 is split as for exp.
_ATANH = tuple(1.0 / (2 * i + 1) for i in range(10))
_ATANH_32 = tuple(np.float32(c) for c in _ATANH[:5])
_SQRT2 = math.sqrt(2.0)
_MANTISSA_BITS = (1 << 52) - 1
_ONE_BITS = 1023 << 52
_MANTISSA_BITS_32 = np.int32((1 << 23) - 1)
_ONE_BITS_32 = np.int32(127 << 23)


def log_normal(x):  # pragma: no cover - replaced by its overload in numba
    """``log(x)`` for positive normal ``x`` (or NaN, which it returns),
    vectorisable.

    The E-step takes it of each row's sum of responsibilities before
    normalisation, which lies in [1, K]. Its relative error is within 2 eps
    of the C library's ``log`` there (tested).
    """
    raise NotImplementedError("log_normal runs only in numba-compiled code")


@overload(log_normal, inline="always")
def _log_normal(x):  # pragma: no cover - compiled
    if x == types.float64:
        c = _ATANH

        def log64(x):
            bits = _bits(x)
            e = (bits >> 52) - 1023
            m = _from_bits((bits & _MANTISSA_BITS) | _ONE_BITS)
            high = m > _SQRT2
            m = m * 0.5 if high else m
            e = e + 1 if high else e
            f = m - 1.0
            s = f / (2.0 + f)
            z = s * s
            p = c[9] * z + c[8]
            p = p * z + c[7]
            p = p * z + c[6]
            p = p * z + c[5]
            p = p * z + c[4]
            p = p * z + c[3]
            p = p * z + c[2]
            p = p * z + c[1]
            # 2s + 2s z p, with f - 2s = s f exactly enough to keep 2s's digits.
            half_square = 0.5 * f * f
            log_m = f - (half_square - s * (half_square + 2.0 * z * p))
            n = np.float64(e)
            return (n * _LN2_HI + (log_m + n * _LN2_LO)) + (x - x)

        return log64
    if x == types.float32:
        c1, c2, c3, c4 = _ATANH_32[1:]

        def log32(x):
            bits = _bits(x)
            e = np.int32((bits >> np.int32(23)) - _BIAS_32)
            m = _from_bits(np.int32((bits & _MANTISSA_BITS_32) | _ONE_BITS_32))
            high = m > np.float32(_SQRT2)
            m = m * np.float32(0.5) if high else m
            e = e + np.int32(1) if high else e
            f = m - np.float32(1.0)
            s = f / (np.float32(2.0) + f)
            z = s * s
            p = c4 * z + c3
            p = p * z + c2
            p = p * z + c1
            half_square = np.float32(0.5) * f * f
            log_m = f - (half_square - s * (half_square + np.float32(2.0) * z * p))
            n = np.float32(e)
            return (n * _LN2_HI_32 + (log_m + n * _LN2_LO_32)) + (x - x)

        return log32
    return None


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def exp_array(x, out):  # pragma: no cover - compiled
    """``out = exp_normal(x)``, element by element (for tests)."""
    for j in range(x.size):
        out[j] = exp_normal(x[j])


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def log_array(x, out):  # pragma: no cover - compiled
    """``out = log_normal(x)``, element by element (for tests)."""
    for j in range(x.size):
        out[j] = log_normal(x[j])


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


# BLAS's gemm, as NumPy's own wheels carry it (the scipy-openblas library,
# 64-bit integers), looked up through NumPy's core module: the products then
# run with the library, kernels and thread setting that NumPy's matmul
# uses. Elsewhere (a NumPy built against another BLAS), SciPy's Cython
# interface to its BLAS (32-bit integers), which is public.
_NUMPY_GEMM = {"s": "scipy_sgemm_64_", "d": "scipy_dgemm_64_"}


@functools.cache
def blas_gemm(dtype: np.dtype) -> tuple[int, np.ndarray, str]:
    """Address of BLAS's ``?gemm`` for ``dtype``, a (0,) array of its integer
    type, and where it comes from ("numpy" or "scipy")."""
    kind = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}[np.dtype(dtype)]
    for name in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            core = importlib.import_module(name)
            symbol = getattr(ctypes.CDLL(core.__file__), _NUMPY_GEMM[kind])
        except (ImportError, AttributeError, OSError):
            continue
        address: int | None = ctypes.cast(symbol, ctypes.c_void_p).value
        if address:
            return address, np.empty(0, np.int64), "numpy"
    address = get_cython_function_address("scipy.linalg.cython_blas", kind + "gemm")
    return address, np.empty(0, np.int32), "scipy"


@intrinsic
def _gemm(typingctx, *arguments):  # pragma: no cover - compiled
    """``_gemm(address, ints, trans_a, trans_b, m, n, k, a, a_at, lda, b, b_at,
    ldb, c, c_at, ldc)``: BLAS's column-major ``c = op(a) @ op(b)`` through
    the ``gemm`` at ``address``, whose integers are those of the array
    ``ints``.

    ``a``, ``b``, ``c`` are arrays of one dtype, entered at the flat offsets
    ``a_at``, ``b_at``, ``c_at`` (from their first element) with leading
    dimensions ``lda``, ``ldb``, ``ldc``; ``trans_a``, ``trans_b`` are
    ``ord("N")`` or ``ord("T")``; alpha is 1 and beta 0. Every argument goes
    by reference, as in Fortran.
    """
    if len(arguments) != 16:
        return None
    ints, arrays = arguments[1], arguments[7::3]
    if not all(isinstance(t, types.Array) for t in (ints, *arrays)):
        return None
    dtype = arrays[-1].dtype
    if dtype not in (types.float32, types.float64):
        return None
    if any(t.dtype != dtype for t in arrays):
        return None
    integer = ints.dtype
    signature = types.void(types.StarArgTuple.from_types(arguments))

    def codegen(context, builder, sig, args):
        byte_pointer = ir.IntType(8).as_pointer()
        packed = cgutils.unpack_tuple(builder, args[0])
        values = list(zip(packed, sig.args[0].types, strict=True))

        def by_reference(index, to_type):
            value, from_type = values[index]
            slot = cgutils.alloca_once(builder, context.get_value_type(to_type))
            builder.store(context.cast(builder, value, from_type, to_type), slot)
            return builder.bitcast(slot, byte_pointer)

        def constant(value):
            slot = cgutils.alloca_once(builder, context.get_value_type(dtype))
            builder.store(context.get_constant(dtype, value), slot)
            return builder.bitcast(slot, byte_pointer)

        def element(index):
            pointer = _element(context, builder, values[index], values[index + 1])
            return builder.bitcast(pointer, byte_pointer)

        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer] * 13)
        target = context.cast(builder, *values[0], types.intp)
        function = builder.inttoptr(target, function_type.as_pointer())
        builder.call(
            function,
            [
                by_reference(2, types.uint8),
                by_reference(3, types.uint8),
                by_reference(4, integer),
                by_reference(5, integer),
                by_reference(6, integer),
                constant(1.0),
                element(7),
                by_reference(9, integer),
                element(10),
                by_reference(12, integer),
                constant(0.0),
                element(13),
                by_reference(15, integer),
            ],
        )
        return context.get_dummy_value()

    return signature, codegen


_N = ord("N")
_T = ord("T")


@njit(nogil=True, cache=True, error_model="numpy")
def matmul(gemm, ints, a, b, out):  # pragma: no cover - compiled
    """``out = a @ b`` for C-contiguous matrices, through :func:`_gemm` (for
    tests and the check at load time)."""
    m, k = a.shape
    n = b.shape[1]
    # Row-major out = a b is column-major out^T = b^T a^T.
    _gemm(gemm, ints, _N, _N, n, m, k, b, 0, n, a, 0, k, out, 0, n)


@njit(inline="always")
def _term(values, weights, j):  # pragma: no cover - compiled
    """Row j's share of the log-likelihood (float64), and its value as a
    candidate for the worst-explained row (infinite where its weight is 0)."""
    value = values[j]
    if weights.size == 0:
        return np.float64(value), value
    weight = weights[j]
    return np.float64(weight) * np.float64(value), value if weight > 0 else np.inf


@njit(inline="always")
def _lower(a, b):  # pragma: no cover - compiled
    return b if b < a else a


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def log_likelihoods(total, top, sample_weight, n):  # pragma: no cover
    """``total[:n] = log(total) + top``, each row's log-likelihood, from the
    sums and maxima of :func:`normalise`; their sum in float64, weighted by
    ``sample_weight`` unless that is empty; and the lowest of those whose
    weight is positive with its index, as ``np.argmin`` picks it (the first
    NaN, else the first lowest; 0 with infinity if no weight is positive).

    The sum is taken eight rows at a time, added pairwise, so that it is not
    one long chain of dependent additions.
    """
    for j in range(n):
        total[j] = log_normal(total[j]) + top[j]
    loglik = 0.0
    low = np.inf
    whole = n - n % 8
    for j in range(0, whole, 8):
        t0, c0 = _term(total, sample_weight, j)
        t1, c1 = _term(total, sample_weight, j + 1)
        t2, c2 = _term(total, sample_weight, j + 2)
        t3, c3 = _term(total, sample_weight, j + 3)
        t4, c4 = _term(total, sample_weight, j + 4)
        t5, c5 = _term(total, sample_weight, j + 5)
        t6, c6 = _term(total, sample_weight, j + 6)
        t7, c7 = _term(total, sample_weight, j + 7)
        loglik += ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
        lows = _lower(_lower(c0, c1), _lower(c2, c3))
        low = _lower(low, _lower(lows, _lower(_lower(c4, c5), _lower(c6, c7))))
    for j in range(whole, n):
        t, c = _term(total, sample_weight, j)
        loglik += t
        low = _lower(low, c)
    if loglik != loglik:  # a NaN somewhere: one pass as np.argmin makes it
        worst = np.inf
        worst_row = 0
        for j in range(n):
            c = _term(total, sample_weight, j)[1]
            if c < worst or (c != c and worst == worst):
                worst = c
                worst_row = j
        return loglik, np.float64(worst), worst_row
    for j in range(n):
        if _term(total, sample_weight, j)[1] == low:
            return loglik, low, j
    return loglik, low, 0


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def expanded_chunk(
    X,
    sample_weight,
    first_row,
    centre,
    first,
    second,
    z_row,
    weights,
    phi,
    log_prob,
    top,
    total,
    inverse,
    floor,
    product,
    sums,
    blocks,
    gemm,
    ints,
):  # pragma: no cover - compiled
    """One chunk of the expanded E-step, the rows ``X`` (C-contiguous), which
    start at row ``first_row`` of the data.

    As ``gaussmix._em._expanded_chunk_statistics`` does with NumPy: the
    features ``phi`` (F x n) of the centred rows, the weighted
    log-densities ``weights @ phi`` in column blocks of ``blocks[0]`` (0:
    one), normalised to responsibilities in place (each column scaled by
    ``sample_weight`` unless that is empty), and ``sums += phi @ resp.T``
    (F x K, float64) in column blocks of ``blocks[1]`` through ``product``.
    The work arrays have at least n columns. Returns the sum of the rows'
    log-likelihoods (weighted), and the lowest (where the weight is not
    zero) with its row in the data: NaN first, then the first lowest.
    """
    n = X.shape[0]
    n_components, n_expanded = weights.shape
    width = phi.shape[1]
    if n > width or log_prob.shape[1] != width:
        raise ValueError("a chunk wider than its work arrays")
    centre_transposed(X, centre, phi, z_row)
    quadratic(first, second, phi, z_row, n)
    step = blocks[0] if blocks[0] > 0 else n
    for start in range(0, n, step):
        m = min(n, start + step) - start
        # Row-major log_prob[:, block] = weights @ phi[:, block] is
        # column-major log_prob^T = phi^T weights^T.
        _gemm(
            gemm,
            ints,
            _N,
            _N,
            m,
            n_components,
            n_expanded,
            phi,
            start,
            width,
            weights,
            0,
            n_expanded,
            log_prob,
            start,
            width,
        )
    normalise(log_prob, n, top, total, inverse, floor)
    if sample_weight.size > 0:
        for k in range(n_components):
            row = log_prob[k, :n]
            for j in range(n):
                row[j] *= sample_weight[j]
    loglik, worst, worst_row = log_likelihoods(total, top, sample_weight, n)
    step = blocks[1] if blocks[1] > 0 else n
    for start in range(0, n, step):
        m = min(n, start + step) - start
        # Row-major product = phi[:, block] @ resp[:, block].T is
        # column-major product^T = resp[:, block] (as stored) phi^T.
        _gemm(
            gemm,
            ints,
            _T,
            _N,
            n_components,
            n_expanded,
            m,
            log_prob,
            start,
            width,
            phi,
            start,
            width,
            product,
            0,
            n_components,
        )
        for f in range(n_expanded):
            for k in range(n_components):
                sums[f, k] += product[f, k]
    return loglik, worst, first_row + worst_row


@njit(nogil=True, cache=True, error_model="numpy")
def expanded_rows(X, sample_weight, start, stop, size, *work):  # pragma: no cover
    """:func:`expanded_chunk` over rows ``start:stop`` of the whole data
    ``X`` (C-contiguous), chunk after chunk of ``size`` rows, in one call:
    what a worker's task of many chunks did in one call per chunk, with the
    same chunks, sums and order, so bit for bit the same. ``sample_weight``
    is the whole data's, or empty; ``work`` is the rest of
    :func:`expanded_chunk`'s arguments, from ``centre`` on.

    Returns the chunks' log-likelihoods summed in order (float64), and the
    lowest of their worst rows with its row (the first where equal; where
    none is below infinity, infinity and -1): as the tuples ``(worst,
    row)`` of the chunks compare in Python, from ``(inf, -1)``.
    """
    weighted = sample_weight.size > 0
    loglik = 0.0
    worst = np.inf
    worst_row = -1
    for begin in range(start, stop, size):
        end = min(begin + size, stop)
        chunk_weight = sample_weight[begin:end] if weighted else sample_weight[0:0]
        part, low, row = expanded_chunk(X[begin:end], chunk_weight, begin, *work)
        loglik += part
        if low < worst:
            worst = low
            worst_row = row
    return loglik, worst, worst_row


@njit(nogil=True, cache=True, error_model="numpy")
def nearest_centres(X, centres, labels):  # pragma: no cover - compiled
    """``labels[j]``: the index of the centre (rows of ``centres``, float64)
    nearest to row j of ``X`` (C-contiguous, finite) in squared Euclidean
    distance, the first of equals, as ``np.argmin`` picks.

    The k-means start's labelling of every row (gaussmix._init). Distances
    are sums of squared differences in float64, block by block of rows in
    cache, vectorised over the rows: not the expansion ``|x|^2 - 2 x.c +
    |c|^2`` of scikit-learn's ``pairwise_distances_argmin``, which loses
    digits where the rows lie far from the origin.
    """
    n, n_features = X.shape
    n_centres = centres.shape[0]
    rows = np.empty((n_features, _BLOCK))
    distance = np.empty(_BLOCK)
    nearest = np.empty(_BLOCK)
    for start in range(0, n, _BLOCK):
        m = min(n, start + _BLOCK) - start
        block = X[start : start + m]
        for j in range(m):
            for i in range(n_features):
                rows[i, j] = block[j, i]
        found = labels[start : start + m]
        best = nearest[:m]
        for j in range(m):
            best[j] = np.inf
            found[j] = 0
        for k in range(n_centres):
            sums = distance[:m]
            for j in range(m):
                sums[j] = 0.0
            for i in range(n_features):
                c = centres[k, i]
                values = rows[i, :m]
                for j in range(m):
                    v = values[j] - c
                    sums[j] += v * v
            for j in range(m):
                if sums[j] < best[j]:
                    best[j] = sums[j]
                    found[j] = k


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def label_sums(X, labels, sample_weight, shift, first, second, sums):
    """``sums[k] +=`` the weighted sums of ``phi(x - shift[k])`` over the
    rows of ``X`` (C-contiguous) labelled ``k`` (-1: none): the features of
    the expanded E-step (``gaussmix._em``), ``(z[first] * z[second], z,
    1)``, each row weighted by ``sample_weight`` (empty: 1), so that
    ``strategy.from_expanded(sums)`` gives the counts, sums and scatter of
    hard labels about each component's own shift.

    The k-means start's statistics (``gaussmix._em.label_statistics``). The
    rows are gathered component by component, their differences taken in
    float64, and each sum is one vectorised reduction over a component's
    rows (``reassoc``: partial sums in another order than a loop's).
    """
    n, n_features = X.shape
    n_components = shift.shape[0]
    n_quadratic = first.size
    counts = np.zeros(n_components + 1, np.intp)
    for j in range(n):
        k = labels[j]
        if k < -1 or k >= n_components:
            raise ValueError("a label out of range")
        counts[k + 1] += 1
    # Component k's rows go to columns offsets[k]:offsets[k + 1].
    offsets = np.zeros(n_components + 1, np.intp)
    for k in range(n_components):
        offsets[k + 1] = offsets[k] + counts[k + 1]
    z = np.empty((n_features, offsets[n_components]))
    weights = np.empty(offsets[n_components])
    filled = offsets[:n_components].copy()
    # Block by block of rows: their columns first, then one feature at a
    # time, so that the stores go to few places at once.
    columns = np.empty(_BLOCK, np.intp)
    for begin in range(0, n, _BLOCK):
        m = min(n, begin + _BLOCK) - begin
        block = X[begin : begin + m]
        kept = labels[begin : begin + m]
        for j in range(m):
            k = kept[j]
            if k < 0:
                columns[j] = -1
                continue
            columns[j] = filled[k]
            filled[k] += 1
            weights[columns[j]] = (
                1.0 if sample_weight.size == 0 else sample_weight[begin + j]
            )
        for i in range(n_features):
            row = z[i]
            for j in range(m):
                if columns[j] >= 0:
                    row[columns[j]] = block[j, i] - shift[kept[j], i]
    for k in range(n_components):
        start = offsets[k]
        stop = offsets[k + 1]
        if stop == start:
            continue
        w = weights[start:stop]
        total = 0.0
        for t in range(stop - start):
            total += w[t]
        sums[k, n_quadratic + n_features] += total
        for i in range(n_features):
            values = z[i, start:stop]
            total = 0.0
            for t in range(stop - start):
                total += w[t] * values[t]
            sums[k, n_quadratic + i] += total
        for q in range(n_quadratic):
            a = z[first[q], start:stop]
            b = z[second[q], start:stop]
            total = 0.0
            for t in range(stop - start):
                total += w[t] * a[t] * b[t]
            sums[k, q] += total


_LOG_2PI = math.log(2.0 * math.pi)


@njit(inline="always")
def _larger(a, b):  # pragma: no cover - compiled
    """The larger of two floats, NaN where either is."""
    if a != a or b != b:
        return np.nan
    return b if b > a else a


@njit(nogil=True, cache=True, error_model="numpy")
def dense_expansion(
    weights, means, covariances, factors, centre, rounded, out
):  # pragma: no cover - compiled
    """The expanded E-step's weights of full (K factors) or tied (one)
    covariances, with the two numbers that decide whether they may be used,
    in one call: what ``CovarianceStrategy.conditioning``,
    ``expansion_error_bound`` and ``expanded_weights`` of
    ``gaussmix._covariance`` give, to rounding, in some forty NumPy calls
    on K x D x D arrays.

    ``factors`` (upper ``L_k``, ``L_k L_k^T = P_k``) and ``covariances``
    are F x D x D, F = K or 1; ``centre`` is the mixture's mean, about
    which the conditioning is taken, ``rounded`` the same in the data's
    dtype (as float64), about which the weights are. ``out`` (K x (Q + D +
    1), float64) takes, per component, the quadratic features' weights
    (upper triangle of ``-P_k/2``, doubled off the diagonal, diagonal by
    diagonal), ``P_k a_k`` with ``a_k = mu_k - rounded``, and ``log w_k +
    log|L_k| - D log(2 pi)/2 - |a_k^T L_k|^2/2``.

    Returns the conditioning ``max_k sum_d (C_k,dd + (mu_k,d - c_d)^2)
    P_k,dd`` and the bound ``max_k |a_k|^2 ||L_k||_F^2`` (NaN where any
    term is NaN).
    """
    n_components, n_features = means.shape
    n_quadratic = out.shape[1] - n_features - 1
    whitened = np.empty(n_features)
    offset = np.empty(n_features)
    conditioning = 0.0
    bound = 0.0
    for k in range(n_components):
        f = k if factors.shape[0] > 1 else 0
        factor = factors[f]
        covariance = covariances[f]
        spread = 0.0
        squares = 0.0
        distance = 0.0
        for d in range(n_features):
            row = 0.0
            for j in range(n_features):
                row += factor[d, j] * factor[d, j]
            squares += row
            a = means[k, d] - centre[d]
            spread += (covariance[d, d] + a * a) * row
            offset[d] = means[k, d] - rounded[d]
            distance += offset[d] * offset[d]
        conditioning = _larger(conditioning, spread)
        bound = _larger(bound, distance * squares)
        norm = 0.0
        for j in range(n_features):
            total = 0.0
            for i in range(n_features):
                total += offset[i] * factor[i, j]
            whitened[j] = total
            norm += total * total
        for i in range(n_features):
            total = 0.0
            for j in range(n_features):
                total += factor[i, j] * whitened[j]
            out[k, n_quadratic + i] = total
        q = 0
        for diagonal in range(n_features):
            coefficient = -0.5 if diagonal == 0 else -1.0
            for i in range(n_features - diagonal):
                j = i + diagonal
                total = 0.0
                for m in range(n_features):
                    total += factor[i, m] * factor[j, m]
                out[k, q] = coefficient * total
                q += 1
        log_det = 0.0
        for d in range(n_features):
            log_det += math.log(factor[d, d])
        out[k, n_quadratic + n_features] = (
            math.log(weights[k]) + log_det - 0.5 * n_features * _LOG_2PI - 0.5 * norm
        )
    return conditioning, bound


@njit(nogil=True, cache=True, error_model="numpy")
def dense_m_step(
    shift,
    resp_sum,
    diff_sum,
    scatter,
    weight_sum,
    small,
    reg_covar,
    means,
    covariances,
    factors,
    weights,
):  # pragma: no cover - compiled
    """The M-step of full (``covariances`` K x D x D) or tied (1 x D x D)
    covariances from the statistics about ``shift`` (K x D), as
    ``gaussmix._em.m_step`` makes it with NumPy, to rounding: ``means``,
    ``covariances`` (``reg_covar`` on their diagonals), the upper
    triangular ``factors`` of their inverses (``U U^T = C^-1``, ``U =
    L^-T`` for the Cholesky factor ``L`` of ``C``) and ``weights``, the
    effective counts ``resp_sum + small`` normalised.

    Returns -1 where it made them; else, with the outputs unfinished, -2
    where a component holds no more than ``small * weight_sum`` of the
    weight, or the first covariance (0: the tied one) that is not positive
    definite or whose factor is not finite: the NumPy path's cases (a
    component re-seeded, a covariance healed, or an error).
    """
    n_components, n_features = shift.shape
    tied = covariances.shape[0] == 1
    delta = np.empty((n_components, n_features))
    counts = np.empty(n_components)
    total = 0.0
    for k in range(n_components):
        if resp_sum[k] <= small * weight_sum:
            return -2
        counts[k] = resp_sum[k] + small
        total += counts[k]
        for d in range(n_features):
            delta[k, d] = diff_sum[k, d] / counts[k]
            means[k, d] = shift[k, d] + delta[k, d]
    if tied:
        covariances[0] = 0.0
    for k in range(n_components):
        out = covariances[0] if tied else covariances[k]
        for i in range(n_features):
            for j in range(n_features):
                a = scatter[k, i, j] - resp_sum[k] * (delta[k, i] * delta[k, j])
                b = scatter[k, j, i] - resp_sum[k] * (delta[k, j] * delta[k, i])
                if tied:
                    out[i, j] += 0.5 * (a + b)
                else:
                    out[i, j] = 0.5 * (a + b) / counts[k]
    for f in range(covariances.shape[0]):
        covariance = covariances[f]
        if tied:
            for i in range(n_features):
                for j in range(n_features):
                    covariance[i, j] /= total
        for d in range(n_features):
            covariance[d, d] += reg_covar
        if not _inverse_cholesky(covariance, factors[f]):
            return f
    for k in range(n_components):
        weights[k] = counts[k] / total
    return -1


@njit(inline="always")
def _inverse_cholesky(covariance, factor):  # pragma: no cover - compiled
    """``factor = L^-T`` (upper triangular) for the lower Cholesky factor
    ``L`` of ``covariance``, column by column (LAPACK's unblocked
    ``potf2``, then ``trti2``: at most some tens of features here, where
    LAPACK's blocking does not start). False where ``covariance`` is not
    positive definite (a pivot not above zero, or NaN) or the inverse is
    not finite."""
    n = covariance.shape[0]
    lower = np.zeros((n, n))
    for j in range(n):
        pivot = covariance[j, j]
        for m in range(j):
            pivot -= lower[j, m] * lower[j, m]
        if not pivot > 0.0:
            return False
        lower[j, j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            value = covariance[i, j]
            for m in range(j):
                value -= lower[i, m] * lower[j, m]
            lower[i, j] = value / lower[j, j]
    factor[:, :] = 0.0
    for j in range(n):
        factor[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, n):
            value = 0.0
            for m in range(j, i):
                value += lower[i, m] * factor[j, m]
            # factor holds inv(L) transposed: factor[j, i] = inv(L)[i, j].
            factor[j, i] = -value / lower[i, i]
    for i in range(n):
        for j in range(n):
            if not math.isfinite(factor[i, j]):
                return False
    return True


@njit(nogil=True, cache=True)
def dense_statistics(sums, first, second, resp_sum, diff_sum, scatter):
    """The expanded E-step's sums (F x K, float64) of full or tied
    covariances split into ``resp_sum`` (K), ``diff_sum`` (K x D) and the
    symmetric ``scatter`` (K x D x D), whose upper triangle the quadratic
    features ``z[first] * z[second]`` give: what
    ``CovarianceStrategy.from_expanded`` makes with NumPy, the same
    values, in one call."""
    n_components, n_features = diff_sum.shape
    n_quadratic = first.size
    for k in range(n_components):
        resp_sum[k] = sums[n_quadratic + n_features, k]
        for d in range(n_features):
            diff_sum[k, d] = sums[n_quadratic + d, k]
        for q in range(n_quadratic):
            scatter[k, first[q], second[q]] = sums[q, k]
            scatter[k, second[q], first[q]] = sums[q, k]
