"""The ``gaussmix`` command: a thin shell over the Python API.

::

    gaussmix fit DATA -k K [--covariance-type T] [--progress] -o MODEL
    gaussmix predict MODEL DATA [--proba]
    gaussmix score MODEL DATA [--per-sample]
    gaussmix select DATA [--k-range 1:9] [--criterion bic] [-o MODEL]
    gaussmix sample MODEL -n N
    gaussmix anomalies DATA [-k K] [--contamination 0.05] [--all]
    gaussmix segment IMAGE -k K -o OUT
    gaussmix demo [-o DIR]

DATA is a CSV file (with or without a header row), a ``.npy`` file, a
Parquet file (``pip install 'gaussmix[cli]'``) or ``-`` for CSV on standard
input. ``fit`` also takes data larger than memory: a ``.npy`` file is
memory-mapped, and a Parquet file or a folder of Parquet files (a data set)
is read one row group at a time on every pass. Results go to standard output
as CSV (or JSON with ``--json``), so commands pipe into each other; progress
and messages go to standard error.
Every error is one line on standard error and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._covariance import COVARIANCE_TYPES
from ._history import EMIteration

__all__ = ["main", "read_data"]

PROG = "gaussmix"


# ------------------------------------------------------------------ input
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(text: str, source: str) -> tuple[np.ndarray, list[str] | None]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{source} holds no data.")
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [[field.strip() for field in row] for row in csv.reader(lines, dialect)]
    header: list[str] | None = None
    if not all(_is_number(field) for field in rows[0]):
        header, rows = rows[0], rows[1:]
        if not rows:
            raise ValueError(f"{source} has a header row but no data rows.")
    width = len(header) if header is not None else len(rows[0])
    values = np.empty((len(rows), width))
    for i, row in enumerate(rows):
        line = i + 1 + (header is not None)
        if len(row) != width:
            raise ValueError(
                f"{source}, line {line}: {len(row)} fields where {width} were expected."
            )
        for j, field in enumerate(row):
            try:
                values[i, j] = float(field)
            except ValueError:
                column = header[j] if header is not None else str(j + 1)
                what = "an empty field" if not field else repr(field)
                raise ValueError(
                    f"{source}, line {line}, column {column}: {what} is not a number."
                ) from None
    return values, header


def _read_parquet(path: Path) -> tuple[np.ndarray, list[str] | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet files needs pyarrow: pip install 'gaussmix[cli]'"
        ) from None
    table = pq.read_table(path)
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.to_numpy()
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"{path}: column {name!r} is not numeric ({column.type}); keep "
                "only numeric columns."
            )
        columns.append(array.astype(np.float64))
    if not columns:
        raise ValueError(f"{path} has no columns.")
    return np.column_stack(columns), [str(name) for name in table.column_names]


def read_data(source: str) -> tuple[np.ndarray, list[str] | None]:
    """Read a data file as a float64 array and its column names, if any.

    Parameters
    ----------
    source : str
        A ``.npy`` file, a ``.parquet`` / ``.pq`` file, ``-`` (CSV on
        standard input) or a CSV file (comma, semicolon or tab separated;
        the first row is a header when it is not all numbers).

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    names : list of str or None
        The header or Parquet column names.
    """
    if source == "-":
        X, names = _read_csv(sys.stdin.read(), "standard input")
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such data file: {source}")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"{source} holds {array.dtype} values, not numbers.")
            if array.ndim == 1:
                array = array[:, None]
            if array.ndim != 2:
                raise ValueError(
                    f"{source} holds a {array.ndim}-D array; expected rows of "
                    "samples (2-D)."
                )
            X, names = array.astype(np.float64), None
        elif suffix in (".parquet", ".pq"):
            X, names = _read_parquet(path)
        else:
            X, names = _read_csv(path.read_text(encoding="utf-8-sig"), source)
    if X.shape[0] == 0:
        raise ValueError(f"{source} holds no rows.")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{source} contains NaN or infinite values.")
    return X, names


# Rows per block when a large file is checked or scored piece by piece.
_BLOCK_ROWS = 2**20


def _npy_for_fit(path: Path, source: str) -> Any:
    """A ``.npy`` file for ``fit``, memory-mapped rather than read.

    Float32 and float64 files are fitted in place; other numbers are
    converted block by block (:class:`gaussmix.Chunks`). Either way the
    file is never copied into memory whole.
    """
    from ._chunks import Chunks

    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{source} holds {array.dtype} values, not numbers.")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(
            f"{source} holds a {array.ndim}-D array; expected rows of samples (2-D)."
        )
    n_rows = array.shape[0]
    if n_rows == 0:
        raise ValueError(f"{source} holds no rows.")
    if array.dtype.kind == "f":
        for start in range(0, n_rows, _BLOCK_ROWS):
            block = array[start : start + _BLOCK_ROWS]
            if not np.isfinite(np.sum(block, dtype=np.float64)) and not np.all(
                np.isfinite(block)
            ):
                raise ValueError(f"{source} contains NaN or infinite values.")
        if array.dtype in (np.float32, np.float64):
            return array
    starts = range(0, n_rows, _BLOCK_ROWS)
    return Chunks(lambda: (array[start : start + _BLOCK_ROWS] for start in starts))


def _data_for_fit(source: str) -> tuple[Any, list[str] | None]:
    """What ``fit`` fits: large files stay on disk, the rest is read.

    A ``.npy`` file is memory-mapped, and Parquet (a file or a folder of
    files, a data set) is read one row group per chunk on every pass
    (:class:`gaussmix.Chunks`); other inputs go through :func:`read_data`.
    """
    from ._chunks import Chunks

    path = Path(source)
    suffix = path.suffix.lower()
    if source != "-" and path.is_dir():
        chunks = Chunks.from_parquet(path)
        return chunks, chunks.columns
    if path.is_file() and suffix == ".npy":
        return _npy_for_fit(path, source), None
    if path.is_file() and suffix in (".parquet", ".pq"):
        chunks = Chunks.from_parquet(path)
        return chunks, chunks.columns
    return read_data(source)


def _bic(model: Any, X: Any) -> float:
    """BIC of the rows X, reading them block by block unless in memory."""
    from ._chunks import Chunks

    if type(X) is np.ndarray:
        return float(model.bic(X))

    def total(rows: np.ndarray, weights: Any, first: int) -> float:
        return float(np.sum(model.score_samples(rows), dtype=np.float64))

    if isinstance(X, Chunks):
        log_likelihood = X.reduce(total)
        n_samples = X.n_samples
    else:
        n_samples = X.shape[0]
        log_likelihood = sum(
            total(X[start : start + _BLOCK_ROWS], None, start)
            for start in range(0, n_samples, _BLOCK_ROWS)
        )
    n_parameters = model._n_parameters()
    return -2.0 * log_likelihood + n_parameters * math.log(n_samples)


def _load_model(path: str) -> Any:
    from ._persistence import load

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    return load(path)


def _check_output(path: str) -> None:
    """Fail before any work when the output's folder does not exist."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder of {path} does not exist")


def _check_width(X: np.ndarray, model: Any, source: str) -> None:
    expected = model.means_.shape[1]
    if X.shape[1] != expected:
        raise ValueError(
            f"{source} has {X.shape[1]} columns but the model was fitted on {expected}."
        )


# ----------------------------------------------------------------- output
def _number(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value)
    return value


def _json_number(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    value = _number(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_table(columns: Sequence[str], rows: Any, as_json: bool) -> None:
    """Rows as CSV with a header, or as a JSON list of objects."""
    out = sys.stdout
    if as_json:
        records = [
            {c: _json_number(v) for c, v in zip(columns, row, strict=True)}
            for row in rows
        ]
        json.dump(records, out)
        out.write("\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_number(v) for v in row])


def _feature_columns(names: Sequence[str] | None, n: int) -> list[str]:
    return list(names) if names is not None else [f"x{j}" for j in range(n)]


# --------------------------------------------------------------- progress
class _Progress:
    """A one-line progress report on standard error, driven by the EM callback.

    Shown only when standard error is a terminal and --quiet is not given.
    """

    def __init__(
        self,
        enabled: bool,
        n_candidates: int = 1,
        n_init: int = 1,
        lines: bool = False,
    ):
        self.enabled = enabled
        self.n_candidates = n_candidates
        self.n_init = n_init
        self.candidate = 0
        self.last = 0.0
        self.shown = False
        # One line per EM iteration (a pass over the data) instead of a
        # bar redrawn in place: for --progress when stderr is not a terminal.
        self.lines = lines
        self.started = time.monotonic()
        self.source: Any = None  # a gaussmix.Chunks, whose passes are counted

    def __call__(self, step: EMIteration) -> None:
        if step.n_iter == 0 and step.init == 0:
            self.candidate += 1
        if not self.enabled:
            return
        now = time.monotonic()
        if self.lines:
            passes = "" if self.source is None else f", pass {self.source.n_passes}"
            bound = "" if step.n_iter == 0 else f", lower bound {step.lower_bound:.6f}"
            sys.stderr.write(
                f"init {step.init + 1}/{self.n_init}, iteration {step.n_iter}"
                f"{passes}{bound}, {now - self.started:.1f} s\n"
            )
            sys.stderr.flush()
            return
        if now - self.last < 0.1 and step.n_iter != 0:
            return
        self.last = now
        width = 20
        if self.n_candidates > 1:
            done = (self.candidate - 1) / self.n_candidates
            head = (
                f"candidate {self.candidate}/{self.n_candidates} "
                f"({step.covariance_type}, K={len(step.weights)})"
            )
        else:
            done = step.init / self.n_init
            head = f"init {step.init + 1}/{self.n_init}"
        filled = round(width * done)
        bar = "#" * filled + "-" * (width - filled)
        bound = "" if step.n_iter == 0 else f", lower bound {step.lower_bound:.5f}"
        sys.stderr.write(f"\r[{bar}] {head}, iteration {step.n_iter}{bound}\033[K")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


def _progress(args: argparse.Namespace, **kwargs: Any) -> _Progress:
    terminal = sys.stderr.isatty()
    forced = getattr(args, "progress", False)
    enabled = not args.quiet and (terminal or forced)
    return _Progress(enabled, lines=forced and not terminal, **kwargs)


def _message(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


# --------------------------------------------------------------- commands
def _cmd_fit(args: argparse.Namespace) -> int:
    from ._chunks import Chunks
    from ._mixture import GaussianMixture

    _check_output(args.output)
    X, names = _data_for_fit(args.data)
    n_samples, n_features = (
        (X.n_samples, X.n_features) if isinstance(X, Chunks) else X.shape
    )
    progress = _progress(args, n_init=args.n_init)
    if isinstance(X, Chunks):
        progress.source = X
    if progress.enabled and type(X) is not np.ndarray:
        how = (
            f"{X.n_chunks} chunks, read once per pass"
            if isinstance(X, Chunks)
            else "memory-mapped"
        )
        _message(args, f"fitting {n_samples} rows x {n_features} ({how})")
    model = GaussianMixture(
        args.n_components,
        covariance_type=args.covariance_type,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.random_state,
        callback=progress,
    )
    try:
        model.fit(X)
    finally:
        progress.close()
    model.save(args.output)
    columns = [
        "component",
        "weight",
        *(f"mean_{c}" for c in _feature_columns(names, n_features)),
    ]
    rows = [[k, model.weights_[k], *model.means_[k]] for k in range(model.n_components)]
    _write_table(columns, rows, args.json)
    state = "converged" if model.converged_ else "did not converge"
    _message(
        args,
        f"saved {args.output}: {model.n_components} components, "
        f"{model.covariance_type}, {state} after {model.n_iter_} iterations, "
        f"BIC {_bic(model, X):.3f}",
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    X, _ = read_data(args.data)
    _check_width(X, model, args.data)
    if args.proba:
        proba = model.predict_proba(X)
        _write_table([f"p{k}" for k in range(proba.shape[1])], proba, args.json)
    else:
        _write_table(["label"], model.predict(X)[:, None], args.json)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    X, _ = read_data(args.data)
    _check_width(X, model, args.data)
    if args.per_sample:
        _write_table(["log_density"], model.score_samples(X)[:, None], args.json)
        return 0
    mean = model.score(X)
    row = [len(X), mean * len(X), mean, model.bic(X), model.aic(X)]
    columns = ["n_samples", "log_likelihood", "mean_log_likelihood", "bic", "aic"]
    _write_table(columns, [row], args.json)
    return 0


def _parse_k_range(text: str) -> list[int]:
    """'1:9' (inclusive), '3' or '2,4,6'."""
    try:
        if ":" in text:
            low, high = (int(part) for part in text.split(":"))
            values = list(range(low, high + 1))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--k-range {text!r} is not LOW:HIGH (inclusive), K or K1,K2,..."
        ) from None
    if not values or min(values) < 1:
        raise ValueError(f"--k-range {text!r} must give numbers of components >= 1.")
    return values


def _parse_types(text: str) -> list[str]:
    types = [t.strip() for t in text.split(",") if t.strip()]
    for name in types:
        if name not in COVARIANCE_TYPES:
            raise ValueError(
                f"unknown covariance type {name!r}; choose among "
                f"{', '.join(COVARIANCE_TYPES)}."
            )
    if not types:
        raise ValueError("--covariance-types is empty.")
    return types


def _cmd_select(args: argparse.Namespace) -> int:
    from ._selection import GaussianMixtureIC

    if args.output:
        _check_output(args.output)
    X, _ = read_data(args.data)
    ks = _parse_k_range(args.k_range)
    types = _parse_types(args.covariance_types)
    sequential = args.n_jobs in (None, 1)
    progress = _progress(args, n_candidates=len(ks) * len(types))
    if not sequential:
        progress.enabled = False
    selector = GaussianMixtureIC(
        ks,
        covariance_type=types,
        criterion=args.criterion,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.random_state,
        n_jobs=args.n_jobs,
        callback=progress if sequential else None,
    )
    try:
        selector.fit(X)
    finally:
        progress.close()
    table = selector.criteria_
    columns = [
        "covariance_type",
        "n_components",
        "n_parameters",
        "log_likelihood",
        "bic",
        "aic",
        "icl",
        "singular",
        "chosen",
    ]
    rows = []
    for i in range(len(table["n_components"])):
        rows.append([table[c][i] for c in columns[:-1]] + [i == selector.best_index_])
    _write_table(columns, rows, args.json)
    best = selector.best_params_
    if args.output:
        selector.best_estimator_.save(args.output)
    _message(
        args,
        f"chosen by {args.criterion.upper()}: {best['covariance_type']}, "
        f"K={best['n_components']} ({args.criterion.upper()} "
        f"{selector.best_criterion_:.3f})"
        + (f"; saved {args.output}" if args.output else ""),
    )
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    if args.n_samples < 1:
        raise ValueError(f"-n must be at least 1, got {args.n_samples}.")
    X, labels = model.sample(args.n_samples, random_state=args.random_state)
    names = getattr(model, "feature_names_in_", None)
    columns = _feature_columns(None if names is None else list(names), X.shape[1])
    if args.labels:
        _write_table([*columns, "component"], np.column_stack([X, labels]), args.json)
    else:
        _write_table(columns, X, args.json)
    return 0


def _cmd_anomalies(args: argparse.Namespace) -> int:
    from ._anomaly import GaussianMixtureAnomalyDetector

    X, names = read_data(args.data)
    detector = GaussianMixtureAnomalyDetector(
        args.n_components,
        contamination=args.contamination,
        covariance_type=args.covariance_type,
        n_init=args.n_init,
        random_state=args.random_state,
    ).fit(X)
    scores = detector.score_samples(X)
    outlier = detector.predict(X) == -1
    columns = ["row", *_feature_columns(names, X.shape[1]), "log_density"]
    rows: list[list[Any]] = []
    for i in range(len(X)):
        if args.all or outlier[i]:
            row = [i, *X[i], scores[i]]
            rows.append([*row, bool(outlier[i])] if args.all else row)
    _write_table([*columns, "outlier"] if args.all else columns, rows, args.json)
    _message(
        args,
        f"{int(outlier.sum())} of {len(X)} rows are outliers (log-density below "
        f"{detector.offset_:.4f}); row numbers count data rows from 0",
    )
    return 0


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading and writing images needs pillow: pip install 'gaussmix[cli]'"
        ) from None
    return Image


def _cmd_segment(args: argparse.Namespace) -> int:
    from ._segmentation import segment_image

    Image = _pillow()
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"no such image file: {args.image}")
    _check_output(args.output)
    if args.labels:
        _check_output(args.labels)
    with Image.open(args.image) as opened:
        if opened.mode not in ("L", "RGB", "RGBA"):
            opened = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        pixels = np.asarray(opened)
    result = segment_image(
        pixels,
        args.n_components,
        covariance_type=args.covariance_type,
        use_position=args.use_position,
        position_weight=args.position_weight,
        max_samples=args.max_samples,
        random_state=args.random_state,
    )
    out = Image.fromarray(result.image)
    if out.mode == "RGBA" and Path(args.output).suffix.lower() in (".jpg", ".jpeg"):
        out = out.convert("RGB")
    out.save(args.output)
    if args.labels:
        np.save(args.labels, result.labels, allow_pickle=False)
    model = result.model
    counts = np.bincount(
        result.labels[result.labels >= 0], minlength=model.n_components
    )
    n_channels = 1 if pixels.ndim == 2 else min(pixels.shape[2], 3)
    rows = []
    for k in range(model.n_components):
        colour = np.clip(np.rint(model.means_[k, :n_channels] * 255), 0, 255).astype(
            int
        )
        rgb = np.resize(colour, 3)
        rows.append(
            [k, model.weights_[k], counts[k], "#" + "".join(f"{v:02x}" for v in rgb)]
        )
    _write_table(["component", "weight", "pixels", "colour"], rows, args.json)
    _message(
        args, f"saved {args.output} ({pixels.shape[1]} x {pixels.shape[0]} pixels)"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run

    return run(Path(args.output), quiet=args.quiet)


# ----------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser, json_output: bool = True) -> None:
    if json_output:
        parser.add_argument(
            "--json", action="store_true", help="write JSON instead of CSV"
        )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or messages"
    )


def _fit_options(parser: argparse.ArgumentParser, n_init: int = 1) -> None:
    parser.add_argument(
        "--n-init", type=int, default=n_init, help=f"EM starts (default {n_init})"
    )
    parser.add_argument(
        "--random-state", type=int, default=None, help="seed, for reproducible runs"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Gaussian mixture models from the command line. DATA is a "
        "CSV file (header row optional), .npy, Parquet, or - for CSV on "
        "standard input. Results go to standard output as CSV (or --json).",
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    from . import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, helptext: str, func: Callable[[argparse.Namespace], int]) -> Any:
        sub = commands.add_parser(name, help=helptext, description=helptext)
        sub.set_defaults(func=func)
        return sub

    fit = add("fit", "fit a mixture and save it to a model file", _cmd_fit)
    fit.add_argument("data", metavar="DATA", help="the samples, one per row")
    fit.add_argument(
        "-k", "--n-components", type=int, required=True, help="number of components"
    )
    fit.add_argument(
        "--covariance-type",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance type (default full)",
    )
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file to write (.npz)",
    )
    fit.add_argument(
        "--max-iter",
        type=int,
        default=100,
        help="EM iterations per start (default 100)",
    )
    fit.add_argument(
        "--tol", type=float, default=1e-3, help="convergence threshold (default 1e-3)"
    )
    fit.add_argument(
        "--progress",
        action="store_true",
        help="report every pass over the data on standard error, one line "
        "each, even when it is not a terminal",
    )
    _fit_options(fit)
    _common(fit)

    predict = add(
        "predict", "most probable component of each row (or --proba)", _cmd_predict
    )
    predict.add_argument(
        "model", metavar="MODEL", help="a model file from 'fit' or 'select'"
    )
    predict.add_argument("data", metavar="DATA", help="the samples")
    predict.add_argument(
        "--proba", action="store_true", help="write the probability of every component"
    )
    _common(predict)

    score = add(
        "score", "log-likelihood, BIC and AIC of data under a model", _cmd_score
    )
    score.add_argument("model", metavar="MODEL")
    score.add_argument("data", metavar="DATA")
    score.add_argument(
        "--per-sample", action="store_true", help="the log-density of every row instead"
    )
    _common(score)

    select = add(
        "select", "choose K and the covariance type by BIC, AIC or ICL", _cmd_select
    )
    select.add_argument("data", metavar="DATA")
    select.add_argument(
        "--k-range",
        default="1:9",
        help="LOW:HIGH (inclusive), K or K1,K2,... (default 1:9)",
    )
    select.add_argument(
        "--covariance-types",
        default=",".join(COVARIANCE_TYPES),
        help="comma-separated (default all four)",
    )
    select.add_argument(
        "--criterion", choices=("bic", "aic", "icl"), default="bic", help="default bic"
    )
    select.add_argument(
        "--max-iter",
        type=int,
        default=1000,
        help="EM iterations per start (default 1000)",
    )
    select.add_argument(
        "--tol", type=float, default=1e-6, help="convergence threshold (default 1e-6)"
    )
    select.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="candidates fitted in parallel (-1: all cores)",
    )
    select.add_argument(
        "-o", "--output", metavar="MODEL", help="also save the chosen model"
    )
    _fit_options(select, n_init=3)
    _common(select)

    sample = add("sample", "generate rows from a model", _cmd_sample)
    sample.add_argument("model", metavar="MODEL")
    sample.add_argument(
        "-n", "--n-samples", type=int, required=True, help="how many rows"
    )
    sample.add_argument(
        "--labels", action="store_true", help="add the generating component"
    )
    sample.add_argument("--random-state", type=int, default=None, help="seed")
    _common(sample)

    anomalies = add(
        "anomalies", "the rows of lowest density under a fitted mixture", _cmd_anomalies
    )
    anomalies.add_argument("data", metavar="DATA")
    anomalies.add_argument(
        "-k", "--n-components", type=int, default=1, help="components (default 1)"
    )
    anomalies.add_argument(
        "--covariance-type", choices=COVARIANCE_TYPES, default="full"
    )
    anomalies.add_argument(
        "--contamination",
        type=float,
        default=0.05,
        help="expected fraction of outliers, in (0, 0.5] (default 0.05)",
    )
    anomalies.add_argument(
        "--all", action="store_true", help="write every row, with an outlier column"
    )
    _fit_options(anomalies)
    _common(anomalies)

    segment = add("segment", "segment an image by pixel colour", _cmd_segment)
    segment.add_argument("image", metavar="IMAGE", help="PNG, JPEG, ... (needs pillow)")
    segment.add_argument(
        "-k", "--n-components", type=int, required=True, help="number of segments"
    )
    segment.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="recoloured image to write"
    )
    segment.add_argument(
        "--labels", metavar="NPY", help="also save the label image (.npy)"
    )
    segment.add_argument("--covariance-type", choices=COVARIANCE_TYPES, default="full")
    segment.add_argument(
        "--use-position", action="store_true", help="cluster colour and position"
    )
    segment.add_argument(
        "--position-weight",
        type=float,
        default=1.0,
        help="weight of position (default 1)",
    )
    segment.add_argument(
        "--max-samples",
        type=int,
        default=50_000,
        help="pixels the fit uses (default 50000)",
    )
    segment.add_argument("--random-state", type=int, default=None, help="seed")
    _common(segment)

    demo = add(
        "demo", "run the tutorial on embedded data; write an HTML page", _cmd_demo
    )
    demo.add_argument(
        "-o",
        "--output",
        default="gaussmix-demo",
        metavar="DIR",
        help="output folder (default ./gaussmix-demo)",
    )
    _common(demo, json_output=False)
    return parser


# ------------------------------------------------------------------- main
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextmanager
def _warnings_as_lines(prog: str) -> Iterator[None]:
    """Show warnings as single 'prog: warning: ...' lines."""

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        print(f"{prog}: warning: {_one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        # What the library warns about (degenerate data, no convergence) is
        # for the user of the command: show it, once per message.
        warnings.filterwarnings("default", category=UserWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gaussmix`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments, without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    status : int
        0 on success, 1 on an error, 2 on a usage error.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    prog = f"{PROG} {args.command}"
    try:
        with _warnings_as_lines(prog):
            return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (for instance `| head`).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("GAUSSMIX_DEBUG"):
            raise
        kind = (
            ""
            if isinstance(exc, ValueError | OSError | ImportError)
            else f"{type(exc).__name__}: "
        )
        print(f"{prog}: error: {kind}{_one_line(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
