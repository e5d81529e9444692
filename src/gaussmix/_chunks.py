"""Rows read chunk by chunk, once per pass: exact EM on data larger than memory.

:class:`Chunks` is a :class:`~gaussmix._source.RowSource` over a
re-iterable of arrays (a list of arrays or of ``.npy`` files, a callable
that opens the data afresh, the row groups of Parquet files). EM needs only
additive statistics of the rows, so a fit reads every chunk once per
iteration, plus a few passes for the initialisation, and keeps one chunk in
memory at a time. The result is the fit of the concatenated rows, up to the
order of floating-point additions.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._source import Block, RowSource

Array = np.ndarray
T = TypeVar("T")

__all__ = ["Chunks"]


@dataclass(frozen=True)
class _Piece:
    """One chunk as read: its rows, its weights, and a name for messages."""

    rows: Any
    weights: Any
    name: str


@dataclass(frozen=True)
class _Header:
    """What the first pass needs to know of a chunk."""

    name: str
    shape: tuple[int, int]
    dtype: np.dtype
    weighted: bool


Opener = Callable[[], Iterator[_Piece]]


def _is_path(item: Any) -> bool:
    return isinstance(item, str | PathLike)


def _npy(path: Any) -> Array:
    try:
        return np.load(fspath(path), mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such .npy file: {fspath(path)}") from None
    except ValueError as exc:
        raise ValueError(f"{fspath(path)} is not a readable .npy file: {exc}") from exc


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet files needs pyarrow: pip install 'gaussmix[cli]'"
        ) from None
    return pq


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".pq"))
        if not files:
            raise ValueError(f"{path} holds no .parquet files.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such Parquet file or folder: {path}")
    return [path]


class Chunks(RowSource):
    """A data set read chunk by chunk: fit what does not fit in memory.

    Pass it as X to :meth:`GaussianMixture.fit`: EM is exact (the result
    is the fit of all the rows concatenated, up to the order of additions)
    and keeps one chunk in memory at a time. Every EM iteration reads each
    chunk once; the initialisation reads them a few more times (four passes
    in all before EM for the default k-means start, two more with weights;
    a float32 fit may read them once more near convergence, for a sample
    of rows to measure its expanded E-step's rounding on). :attr:`n_passes` counts the
    passes.

    The chunks are read again for every pass, so they must come out the
    same each time. For a stream that can be read only once, use
    :meth:`GaussianMixture.partial_fit` instead.

    Parameters
    ----------
    chunks : sequence or callable
        A sequence of 2-D arrays (n_rows x n_features, the same number of
        features in each) or of paths to ``.npy`` files (memory-mapped when
        read), or a callable with no arguments that returns a fresh iterable
        of such arrays each time it is called (for instance a generator
        function reading a database). Integer arrays are converted to
        float64; the rows are float32 only if every chunk is.
    weights : sequence or callable, default=None
        Non-negative sample weights: one 1-D array per chunk, given like
        ``chunks``. None means all ones.

    Attributes
    ----------
    n_samples : int
        Rows in all the chunks.
    n_features : int
        Columns of every chunk.
    dtype : numpy.dtype
        float32 or float64.
    n_chunks : int
        Chunks (read on construction; a callable is read once for it).
    columns : list of str or None
        Column names, for Parquet data.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import Chunks, GaussianMixture
    >>> rng = np.random.default_rng(0)
    >>> parts = [rng.normal(size=(500, 2)) + 6 * (i % 2) for i in range(4)]
    >>> gm = GaussianMixture(2, random_state=0).fit(Chunks(parts))
    >>> np.sort(gm.means_[:, 0]).round().astype(int)
    array([0, 6])
    """

    columns: list[str] | None = None

    def __init__(self, chunks: Any, weights: Any = None) -> None:
        self._open = self._opener(chunks, weights)
        self._scale = 1.0
        self._passes = [0]
        self._survey()

    # ------------------------------------------------------------ readers
    @classmethod
    def from_parquet(
        cls,
        path: str | PathLike[str],
        columns: Sequence[str] | None = None,
        weight_column: str | None = None,
    ) -> Chunks:
        """The rows of a Parquet file, or of every Parquet file under a folder.

        Read one row group at a time (needs ``pip install 'gaussmix[cli]'``).

        Parameters
        ----------
        path : str or path-like
            A ``.parquet`` file, or a folder (a data set): its ``.parquet``
            files, in sorted order, must have the same columns.
        columns : sequence of str, default=None
            The numeric columns to use; None means all but ``weight_column``.
        weight_column : str, default=None
            A column holding non-negative sample weights.
        """
        pq = _pyarrow_parquet()
        files = _parquet_files(Path(path))
        available = list(pq.read_schema(files[0]).names)
        wanted = [c for c in available if c != weight_column]
        if columns is not None:
            wanted = list(columns)
        for name in [*wanted, *([weight_column] if weight_column else [])]:
            if name not in available:
                raise ValueError(
                    f"{files[0]} has no column {name!r}; its columns are "
                    f"{', '.join(map(repr, available))}."
                )
        if not wanted:
            raise ValueError(f"{files[0]} has no columns to fit.")
        read = [*wanted, *([weight_column] if weight_column else [])]

        def pieces() -> Iterator[_Piece]:
            for file in files:
                parquet = pq.ParquetFile(file)
                missing = set(read) - set(parquet.schema_arrow.names)
                if missing:
                    raise ValueError(
                        f"{file} lacks column(s) {sorted(missing)} that "
                        f"{files[0]} has; every file of the data set needs them."
                    )
                for group in range(parquet.num_row_groups):
                    name = f"row group {group} of {file}"
                    table = parquet.read_row_group(group, columns=read)
                    arrays = [
                        _column(table.column(c), c, name) for c in table.column_names
                    ]
                    rows = arrays[: len(wanted)]
                    weights = arrays[-1] if weight_column else None
                    yield _Piece(_stack(rows), weights, name)

        def headers() -> Iterator[_Header]:
            for file in files:
                parquet = pq.ParquetFile(file)
                schema = parquet.schema_arrow
                float32 = all(str(schema.field(c).type) == "float" for c in wanted)
                dtype = np.dtype(np.float32 if float32 else np.float64)
                for group in range(parquet.num_row_groups):
                    n_rows = parquet.metadata.row_group(group).num_rows
                    name = f"row group {group} of {file}"
                    yield _Header(
                        name, (n_rows, len(wanted)), dtype, weight_column is not None
                    )

        source = cls.__new__(cls)
        source._open = pieces
        source._scale = 1.0
        source._passes = [0]
        source.columns = wanted
        source._survey(headers())
        return source

    @staticmethod
    def _opener(chunks: Any, weights: Any) -> Opener:
        rows = Chunks._reiterable(chunks, "chunks")
        weight_chunks = (
            None if weights is None else Chunks._reiterable(weights, "weights")
        )

        def pieces() -> Iterator[_Piece]:
            weight_iter = None if weight_chunks is None else iter(weight_chunks())
            for index, item in enumerate(rows()):
                name = f"chunk {index}"
                if _is_path(item):
                    name = f"chunk {index} ({fspath(item)})"
                    item = _npy(item)
                w = None
                if weight_iter is not None:
                    w = next(weight_iter, None)
                    if w is None:
                        raise ValueError(
                            f"weights ran out at {name}: give one array of "
                            "weights per chunk."
                        )
                    if _is_path(w):
                        w = _npy(w)
                yield _Piece(item, w, name)
            if weight_iter is not None and next(weight_iter, None) is not None:
                raise ValueError(
                    "there are more arrays of weights than chunks; give one "
                    "array of weights per chunk."
                )

        return pieces

    @staticmethod
    def _reiterable(data: Any, what: str) -> Callable[[], Iterable[Any]]:
        if callable(data):
            return data
        if isinstance(data, np.ndarray) or _is_path(data):
            raise TypeError(
                f"{what} must be a sequence of arrays (or of .npy paths) or a "
                f"callable returning them, not one {type(data).__name__}; for "
                "one array in memory or memory-mapped, pass the array itself "
                "to fit; for Parquet use Chunks.from_parquet."
            )
        if isinstance(data, Iterator) or not isinstance(data, Iterable):
            raise TypeError(
                f"{what} must be a sequence or a callable that returns a fresh "
                f"iterable each time, got {type(data).__name__}: EM reads the "
                "chunks once per iteration. For a stream that can be read "
                "only once, use GaussianMixture.partial_fit."
            )
        return lambda: data

    # --------------------------------------------------------- validation
    def _survey(self, headers: Iterable[_Header] | None = None) -> None:
        """Count the rows and check the shapes and types of every chunk.

        ``headers`` describe the chunks without reading them (Parquet
        metadata); by default the chunks are opened (``.npy`` files only
        have their headers read, as they are memory-mapped).
        """
        if headers is None:
            headers = (
                _Header(
                    piece.name,
                    *_shape_and_dtype(piece.rows, piece.name),
                    piece.weights is not None,
                )
                for piece in self._open()
            )
        sizes: list[int] = []
        all_float32 = True
        self.n_features = -1
        self.weighted = False
        for header in headers:
            piece, shape, dtype = header, header.shape, header.dtype
            if self.n_features < 0:
                self.n_features = shape[1]
            elif shape[1] != self.n_features:
                raise ValueError(
                    f"{piece.name} has {shape[1]} columns where the chunks "
                    f"before it have {self.n_features}; every chunk needs the "
                    "same columns."
                )
            all_float32 = all_float32 and dtype == np.float32
            sizes.append(shape[0])
            self.weighted = self.weighted or header.weighted
        if not sizes or sum(sizes) == 0:
            raise ValueError("the chunks hold no rows; give at least one non-empty.")
        self._sizes = sizes
        self.n_chunks = len(sizes)
        self.n_samples = int(sum(sizes))
        self.dtype = np.dtype(np.float32 if all_float32 else np.float64)

    def _checked(self, piece: _Piece, index: int) -> tuple[Array, Array | None]:
        X = np.asarray(piece.rows)
        shape, _ = _shape_and_dtype(X, piece.name)
        if index >= len(self._sizes) or shape[0] != self._sizes[index]:
            expected = (
                f"{self._sizes[index]} rows"
                if index < len(self._sizes)
                else "no such chunk"
            )
            raise ValueError(
                f"the chunks changed between passes: {piece.name} has "
                f"{shape[0]} rows where the first pass found {expected}. The "
                "chunks must come out the same on every pass (for a stream "
                "read once, use GaussianMixture.partial_fit)."
            )
        if shape[1] != self.n_features:
            raise ValueError(
                f"{piece.name} has {shape[1]} columns where the other chunks "
                f"have {self.n_features}."
            )
        X = X.astype(self.dtype, copy=False)
        if not np.isfinite(np.sum(X, dtype=np.float64)) and not np.all(np.isfinite(X)):
            raise ValueError(
                f"{piece.name} contains NaN or infinity; remove or impute "
                "those rows before fitting."
            )
        if self._scale != 1.0:
            X = X * X.dtype.type(self._scale)
        w = None if piece.weights is None else _weights(piece, shape[0], self.dtype)
        if self.weighted and w is None:
            raise ValueError(
                f"{piece.name} has no weights while other chunks have; give "
                "weights for every chunk or for none."
            )
        return X, w

    def _blocks(self) -> Iterator[tuple[Array, Array | None, int]]:
        first = 0
        index = -1
        for index, piece in enumerate(self._open()):
            X, w = self._checked(piece, index)
            if X.shape[0]:
                yield X, w, first
            first += X.shape[0]
        if index + 1 != len(self._sizes):
            raise ValueError(
                f"the chunks changed between passes: {index + 1} chunks where "
                f"the first pass found {len(self._sizes)}. The chunks must come "
                "out the same on every pass."
            )

    # ----------------------------------------------------- RowSource API
    @property
    def n_passes(self) -> int:
        """Passes over the chunks so far (by this source and its rescaled copies)."""
        return self._passes[0]

    def reduce(self, block: Block[T], add: Callable[[T, T], T] = operator.add) -> T:
        self._passes[0] += 1
        total: Any = None
        for X, w, first in self._blocks():
            part = block(X, w, first)
            total = part if total is None else add(total, part)
        return total

    def take(self, rows: Array) -> tuple[Array, Array | None]:
        self._passes[0] += 1
        rows = np.asarray(rows)
        parts: list[Array] = []
        weights: list[Array] = []
        for X, w, first in self._blocks():
            lo, hi = np.searchsorted(rows, [first, first + X.shape[0]])
            local = rows[lo:hi] - first
            parts.append(X[local])
            if w is not None:
                weights.append(w[local])
        return np.concatenate(parts), np.concatenate(weights) if weights else None

    def scaled(self, scale: float) -> Chunks:
        if scale == 1.0:
            return self
        twin = copy.copy(self)
        twin._scale = self._scale * scale
        return twin


def _shape_and_dtype(rows: Any, name: str) -> tuple[tuple[int, int], np.dtype]:
    shape = getattr(rows, "shape", None)
    dtype = getattr(rows, "dtype", None)
    if shape is None or dtype is None:
        rows = np.asarray(rows)
        shape, dtype = rows.shape, rows.dtype
    if len(shape) != 2:
        hint = " (use .reshape(-1, 1) for one feature)" if len(shape) == 1 else ""
        raise ValueError(
            f"{name} is {len(shape)}-D; every chunk must be 2-D, rows by "
            f"features{hint}."
        )
    if np.dtype(dtype).kind not in "biuf":
        raise ValueError(f"{name} holds {dtype} values; every chunk must hold numbers.")
    return (int(shape[0]), int(shape[1])), np.dtype(dtype)


def _weights(piece: _Piece, n_rows: int, dtype: np.dtype) -> Array:
    w = np.asarray(piece.weights)
    if w.ndim != 1 or w.shape[0] != n_rows or w.dtype.kind not in "biuf":
        raise ValueError(
            f"the weights of {piece.name} have shape {w.shape} ({w.dtype}); "
            f"give {n_rows} non-negative numbers, one per row."
        )
    w = w.astype(dtype, copy=False)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            f"the weights of {piece.name} contain negative, NaN or infinite "
            "values; weights must be finite and >= 0."
        )
    return w


def _column(column: Any, name: str, where: str) -> Array:
    array = column.to_numpy()
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"column {name!r} of {where} is not numeric ({column.type}) or "
            "has missing values; keep only numeric columns "
            "(Chunks.from_parquet takes columns=[...])."
        )
    return np.asarray(array)


def _stack(columns: list[Array]) -> Array:
    dtype = np.float32 if all(c.dtype == np.float32 for c in columns) else np.float64
    out = np.empty((columns[0].shape[0], len(columns)), dtype=dtype)
    for j, column in enumerate(columns):
        out[:, j] = column
    return out
