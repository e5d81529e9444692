"""The gaussmix command line, in-process and through the installed script."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gaussmix
from gaussmix import GaussianMixture, GaussianMixtureAnomalyDetector
from gaussmix.cli import main, read_data

SCRIPT = Path(sys.executable).parent / "gaussmix"


@pytest.fixture
def data_dir(tmp_path, faithful):
    """Old Faithful as CSV with and without header, .npy and Parquet."""
    header = tmp_path / "faithful.csv"
    with header.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["eruptions", "waiting"])
        writer.writerows(faithful.tolist())
    plain = tmp_path / "plain.csv"
    np.savetxt(plain, faithful, delimiter=",")
    np.save(tmp_path / "faithful.npy", faithful)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"eruptions": faithful[:, 0], "waiting": faithful[:, 1]})
    pq.write_table(table, tmp_path / "faithful.parquet")
    return tmp_path


def run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def read_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], np.array(rows[1:], dtype=float)


def assert_one_line_error(status, err, *fragments):
    assert status != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def model_file(tmp_path, faithful, data_dir, capsys):
    path = tmp_path / "model.npz"
    status, _, _ = run(
        capsys,
        "fit",
        data_dir / "faithful.csv",
        "-k",
        2,
        "--random-state",
        0,
        "-o",
        path,
    )
    assert status == 0
    return path


# ----------------------------------------------------------------- reading
@pytest.mark.parametrize(
    "name", ["faithful.csv", "plain.csv", "faithful.npy", "faithful.parquet"]
)
def test_every_format_reads_the_same_data(data_dir, faithful, name):
    X, names = read_data(str(data_dir / name))
    np.testing.assert_array_equal(X, faithful)
    expected = (
        None if name in ("plain.csv", "faithful.npy") else ["eruptions", "waiting"]
    )
    assert names == expected


def test_semicolon_and_tab_separated_csv(tmp_path):
    for sep in (";", "\t"):
        path = tmp_path / "data.csv"
        path.write_text(f"a{sep}b\n1{sep}2\n3{sep}4.5\n")
        X, names = read_data(str(path))
        np.testing.assert_array_equal(X, [[1, 2], [3, 4.5]])
        assert names == ["a", "b"]


def test_data_from_standard_input(monkeypatch, faithful):
    monkeypatch.setattr(sys, "stdin", io.StringIO("x,y\n1,2\n3,4\n"))
    X, names = read_data("-")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert names == ["x", "y"]


# ------------------------------------------------------------- commands
def test_fit_saves_the_model_and_prints_its_components(
    capsys, tmp_path, data_dir, faithful
):
    path = tmp_path / "m.npz"
    status, out, err = run(
        capsys, "fit", data_dir / "faithful.csv", "-k", 3, "--covariance-type", "tied",
        "--n-init", 3, "--random-state", 0, "-o", path,
    )  # fmt: skip
    assert status == 0
    model = gaussmix.load(path)
    expected = GaussianMixture(3, covariance_type="tied", n_init=3, random_state=0).fit(
        faithful
    )
    np.testing.assert_allclose(model.means_, expected.means_)
    header, values = read_csv(out)
    assert header == ["component", "weight", "mean_eruptions", "mean_waiting"]
    np.testing.assert_allclose(values[:, 1], model.weights_, rtol=1e-15)
    np.testing.assert_allclose(values[:, 2:], model.means_, rtol=1e-15)
    assert f"saved {path}" in err and "tied" in err


def test_predict_labels_and_probabilities(capsys, model_file, data_dir, faithful):
    model = gaussmix.load(model_file)
    status, out, _ = run(capsys, "predict", model_file, data_dir / "plain.csv")
    header, values = read_csv(out)
    assert status == 0 and header == ["label"]
    np.testing.assert_array_equal(values[:, 0], model.predict(faithful))
    status, out, _ = run(
        capsys, "predict", model_file, data_dir / "faithful.npy", "--proba"
    )
    header, values = read_csv(out)
    assert header == ["p0", "p1"]
    np.testing.assert_allclose(values, model.predict_proba(faithful), rtol=1e-15)
    status, out, _ = run(
        capsys, "predict", model_file, data_dir / "faithful.parquet", "--json"
    )
    records = json.loads(out)
    assert [r["label"] for r in records] == model.predict(faithful).tolist()


def test_score(capsys, model_file, data_dir, faithful):
    model = gaussmix.load(model_file)
    status, out, _ = run(
        capsys, "score", model_file, data_dir / "faithful.csv", "--json"
    )
    (record,) = json.loads(out)
    assert status == 0
    assert record["n_samples"] == 272
    assert record["log_likelihood"] == pytest.approx(model.score(faithful) * 272)
    assert record["bic"] == pytest.approx(model.bic(faithful))
    assert record["aic"] == pytest.approx(model.aic(faithful))
    status, out, _ = run(
        capsys, "score", model_file, data_dir / "faithful.csv", "--per-sample"
    )
    header, values = read_csv(out)
    assert header == ["log_density"]
    np.testing.assert_allclose(values[:, 0], model.score_samples(faithful), rtol=1e-15)


def test_select_chooses_mclusts_model(capsys, tmp_path, data_dir):
    path = tmp_path / "best.npz"
    status, out, err = run(
        capsys, "select", data_dir / "faithful.csv", "--k-range", "1:4",
        "--covariance-types", "full,tied", "--random-state", 0, "-o", path,
    )  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 8
    (chosen,) = [row for row in rows if row["chosen"] == "1"]
    assert (chosen["covariance_type"], chosen["n_components"]) == ("tied", "3")
    assert float(chosen["bic"]) == pytest.approx(2314.3, abs=0.1)
    assert "chosen by BIC: tied, K=3" in err
    model = gaussmix.load(path)
    assert (model.covariance_type, model.n_components) == ("tied", 3)


def test_select_json_and_other_criteria(capsys, data_dir):
    status, out, err = run(
        capsys, "select", data_dir / "faithful.npy", "--k-range", "2,3",
        "--covariance-types", "tied", "--criterion", "aic", "--json", "--quiet",
    )  # fmt: skip
    records = json.loads(out)
    assert status == 0 and err == ""
    assert [r["n_components"] for r in records] == [2, 3]
    best = min(records, key=lambda r: r["aic"])
    assert best["chosen"] == 1


def test_sample_is_reproducible_and_pipes_into_predict(capsys, model_file, monkeypatch):
    status, out, _ = run(capsys, "sample", model_file, "-n", 50, "--random-state", 3)
    header, values = read_csv(out)
    assert status == 0 and header == ["x0", "x1"] and values.shape == (50, 2)
    X, labels = gaussmix.load(model_file).sample(50, random_state=3)
    np.testing.assert_allclose(values, X, rtol=1e-15)
    _, out_labels, _ = run(
        capsys, "sample", model_file, "-n", 50, "--random-state", 3, "--labels"
    )
    header, values = read_csv(out_labels)
    assert header[-1] == "component"
    np.testing.assert_array_equal(values[:, -1], labels)
    monkeypatch.setattr(sys, "stdin", io.StringIO(out))
    status, predicted, _ = run(capsys, "predict", model_file, "-")
    assert status == 0
    assert read_csv(predicted)[1].shape == (50, 1)


def test_anomalies(capsys, data_dir, faithful):
    status, out, err = run(
        capsys, "anomalies", data_dir / "faithful.csv", "-k", 2,
        "--contamination", 0.02, "--random-state", 0,
    )  # fmt: skip
    detector = GaussianMixtureAnomalyDetector(
        2, contamination=0.02, random_state=0
    ).fit(faithful)
    expected = np.flatnonzero(detector.predict(faithful) == -1)
    header, values = read_csv(out)
    assert status == 0
    assert header == ["row", "eruptions", "waiting", "log_density"]
    np.testing.assert_array_equal(values[:, 0], expected)
    np.testing.assert_array_equal(values[:, 1:3], faithful[expected])
    assert f"{len(expected)} of 272 rows are outliers" in err
    status, out, _ = run(
        capsys, "anomalies", data_dir / "faithful.csv", "-k", 2,
        "--contamination", 0.02, "--random-state", 0, "--all",
    )  # fmt: skip
    header, values = read_csv(out)
    assert header[-1] == "outlier" and len(values) == 272
    np.testing.assert_array_equal(np.flatnonzero(values[:, -1]), expected)


def test_segment_writes_the_recoloured_image(capsys, tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.zeros((30, 40, 3))
    pixels[:, 20:] = [0.9, 0.1, 0.1]
    pixels = np.clip(pixels + rng.normal(0, 0.03, pixels.shape), 0, 1)
    source = tmp_path / "in.png"
    Image.fromarray((pixels * 255).astype(np.uint8)).save(source)
    out_path, labels_path = tmp_path / "out.png", tmp_path / "labels.npy"
    status, out, err = run(
        capsys, "segment", source, "-k", 2, "-o", out_path, "--labels", labels_path,
        "--random-state", 0,
    )  # fmt: skip
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["component", "weight", "pixels", "colour"]
    assert sorted(int(r["pixels"]) for r in rows) == [600, 600]
    # Dark and red, as #rrggbb.
    colours = sorted(r["colour"] for r in rows)
    assert colours[0].startswith("#0") and colours[1].startswith("#e")
    with Image.open(out_path) as result:
        assert result.size == (40, 30)
        assert len(np.unique(np.asarray(result).reshape(-1, 3), axis=0)) == 2
    labels = np.load(labels_path)
    assert labels.shape == (30, 40)
    assert len(np.unique(labels[:, :20])) == 1 and labels[0, 0] != labels[0, 39]
    assert "saved" in err


# ------------------------------------------------------------ progress
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_only(monkeypatch, tmp_path, data_dir):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    args = [
        "fit",
        str(data_dir / "faithful.csv"),
        "-k",
        "2",
        "-o",
        str(tmp_path / "m.npz"),
    ]
    assert main(args) == 0
    shown = terminal.getvalue()
    assert "\r[" in shown and "init 1/1, iteration 0" in shown
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*args, "--quiet"]) == 0
    assert terminal.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    select = ["select", str(data_dir / "faithful.csv"), "--k-range", "1:2"]
    assert main([*select, "--covariance-types", "tied"]) == 0
    assert "candidate 2/2 (tied, K=2)" in terminal.getvalue()


def test_no_progress_bar_when_not_a_terminal(capsys, tmp_path, data_dir):
    status, _, err = run(
        capsys, "fit", data_dir / "faithful.csv", "-k", 2, "-o", tmp_path / "m"
    )
    assert status == 0 and "\r" not in err and "lower bound" not in err


# -------------------------------------------------------------- errors
def test_help_everywhere(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "usage: gaussmix" in out
    for command in (
        "fit",
        "predict",
        "score",
        "select",
        "sample",
        "anomalies",
        "segment",
        "demo",
    ):
        status, out, _ = run(capsys, command, "--help")
        assert status == 0 and f"usage: gaussmix {command}" in out


def test_no_command_prints_help(capsys):
    status, _, err = run(capsys)
    assert status == 2 and "usage: gaussmix" in err


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "words.csv").write_text("a,b\n1,2\n3,oops\n")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "empty.csv").write_text("\n")
    (tmp_path / "three.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    (tmp_path / "garbage.npz").write_bytes(b"not a model")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    (tmp_path / "image.png").write_bytes(b"not an image")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fit", "{d}/missing.csv", "-k", "2", "-o", "{d}/m"], ["no such data file"]),
        (
            ["fit", "{d}/words.csv", "-k", "2", "-o", "{d}/m"],
            ["line 3, column b", "'oops'"],
        ),
        (["fit", "{d}/ragged.csv", "-k", "1", "-o", "{d}/m"], ["line 2: 1 fields"]),
        (["fit", "{d}/empty.csv", "-k", "1", "-o", "{d}/m"], ["holds no data"]),
        (["fit", "{d}/nan.csv", "-k", "1", "-o", "{d}/m"], ["NaN"]),
        (["fit", "{d}/cube.npy", "-k", "1", "-o", "{d}/m"], ["3-D array"]),
        (["fit", "{d}/three.csv", "-k", "5", "-o", "{d}/m"], ["n_samples"]),
        (["fit", "{d}/three.csv", "-k", "0", "-o", "{d}/m"], ["n_components"]),
        (["fit", "{d}/three.csv", "-k", "two", "-o", "{d}/m"], ["invalid int value"]),
        (["fit", "{d}/three.csv", "-o", "{d}/m"], ["-k/--n-components"]),
        (
            ["fit", "{d}/three.csv", "-k", "1", "-o", "{d}/no/such/dir/m"],
            ["does not exist"],
        ),
        (["predict", "{d}/garbage.npz", "{d}/three.csv"], ["invalid model file"]),
        (["predict", "{d}/none.npz", "{d}/three.csv"], ["no such model file"]),
        (
            ["predict", "{m}", "{d}/three.csv"],
            ["3 columns but the model was fitted on 2"],
        ),
        (["sample", "{m}", "-n", "0"], ["-n must be at least 1"]),
        (["select", "{d}/three.csv", "--k-range", "1-3"], ["is not LOW:HIGH"]),
        (["select", "{d}/three.csv", "--k-range", "0:2"], [">= 1"]),
        (
            ["select", "{d}/three.csv", "--covariance-types", "round"],
            ["unknown covariance"],
        ),
        (["select", "{d}/three.csv", "--k-range", "1:5"], ["only 2 samples"]),
        (["anomalies", "{d}/three.csv", "--contamination", "0.9"], ["contamination"]),
        (
            ["segment", "{d}/image.png", "-k", "2", "-o", "{d}/o.png"],
            ["cannot identify"],
        ),
        (["segment", "{d}/none.png", "-k", "2", "-o", "{d}/o.png"], ["no such image"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_errors_are_one_line(capsys, bad_files, model_file, args, fragments):
    args = [a.format(d=bad_files, m=model_file) for a in args]
    status, _, err = run(capsys, *args)
    assert_one_line_error(status, err, *fragments)


def test_missing_pyarrow_names_the_extra(capsys, monkeypatch, data_dir):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    status, _, err = run(
        capsys, "fit", data_dir / "faithful.parquet", "-k", 1, "-o", data_dir / "m"
    )
    assert_one_line_error(status, err, "pip install 'gaussmix[cli]'")


def test_warnings_are_one_line_each(capsys, tmp_path, data_dir):
    status, _, err = run(
        capsys, "fit", data_dir / "faithful.csv", "-k", 2, "--max-iter", 1,
        "-o", tmp_path / "m", "--quiet",
    )  # fmt: skip
    assert status == 0
    assert err.strip() == (
        "gaussmix fit: warning: Best performing initialization did not converge. "
        "Try different init parameters, or increase max_iter, tol, or check for "
        "degenerate data."
    )


# ------------------------------------------------------ installed script
@pytest.mark.skipif(not SCRIPT.exists(), reason="the gaussmix script is not installed")
def test_installed_script_pipes(tmp_path, data_dir):
    model = tmp_path / "m.npz"
    fit = subprocess.run(
        [SCRIPT, "fit", data_dir / "faithful.csv", "-k", "2", "-o", model, "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fit.stdout.startswith("component,weight,mean_eruptions,mean_waiting\n")
    pipeline = subprocess.run(
        f"'{SCRIPT}' sample '{model}' -n 20 --random-state 1 | "
        f"'{SCRIPT}' predict '{model}' - --json",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    labels = [r["label"] for r in json.loads(pipeline.stdout)]
    X, _ = gaussmix.load(model).sample(20, random_state=1)
    assert labels == gaussmix.load(model).predict(X).tolist()
    broken = subprocess.run(
        [SCRIPT, "predict", model, tmp_path / "nothing.csv"],
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 1
    assert (
        broken.stderr
        == f"gaussmix predict: error: no such data file: {tmp_path / 'nothing.csv'}\n"
    )
    usage = subprocess.run([SCRIPT, "fit"], capture_output=True, text=True)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


# --------------------------------------------------------- large inputs
def _stream_fixture_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 6_000)
    return rng.normal(size=(6_000, 2)) + 6.0 * labels[:, None]


def test_fit_memory_maps_npy_files(capsys, monkeypatch, tmp_path):
    X = _stream_fixture_rows()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X32.npy", X.astype(np.float32))
    np.save(tmp_path / "Xint.npy", np.rint(X * 100).astype(np.int16))
    modes = []
    load = np.load

    def spy(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    for name, rows in [
        ("X.npy", X),
        ("X32.npy", X.astype(np.float32)),
        ("Xint.npy", np.rint(X * 100).astype(np.int16).astype(np.float64)),
    ]:
        path = tmp_path / f"{name}.npz"
        status, _, err = run(
            capsys, "fit", tmp_path / name, "-k", 2, "--random-state", 0, "-o", path
        )
        assert status == 0, err
        assert modes[-1] == "r"
        expected = GaussianMixture(2, random_state=0).fit(rows)
        model = gaussmix.load(path)
        np.testing.assert_allclose(model.means_, expected.means_, rtol=1e-6)
        bic = float(err.split("BIC ")[1])
        np.testing.assert_allclose(bic, expected.bic(rows), rtol=1e-6)


def test_fit_streams_parquet_files_and_folders(capsys, monkeypatch, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = _stream_fixture_rows()
    table = pa.table({"u": X[:, 0], "v": X[:, 1]})
    pq.write_table(table, tmp_path / "one.parquet", row_group_size=1_000)
    folder = tmp_path / "dataset"
    folder.mkdir()
    pq.write_table(table.slice(0, 4_000), folder / "a.parquet", row_group_size=1_500)
    pq.write_table(table.slice(4_000), folder / "b.parquet")
    # Streamed row group by row group: the whole table is never read.
    monkeypatch.setattr(pq, "read_table", None)
    expected = GaussianMixture(2, random_state=0).fit(X)
    for data in (tmp_path / "one.parquet", folder):
        path = tmp_path / "m.npz"
        status, out, err = run(
            capsys, "fit", data, "-k", 2, "--random-state", 0, "-o", path
        )
        assert status == 0, err
        header, values = read_csv(out)
        assert header == ["component", "weight", "mean_u", "mean_v"]
        np.testing.assert_allclose(values[:, 2:], expected.means_, rtol=1e-10)
        assert f"BIC {expected.bic(X):.3f}" in err
        assert "pass" not in err  # no progress unless asked or on a terminal


def test_progress_flag_reports_every_pass(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = _stream_fixture_rows()
    pq.write_table(pa.table({"u": X[:, 0], "v": X[:, 1]}), tmp_path / "d.parquet")
    np.save(tmp_path / "d.npy", X)
    out_path = tmp_path / "m.npz"
    status, _, err = run(
        capsys, "fit", tmp_path / "d.parquet", "-k", 2, "-o", out_path, "--progress"
    )
    assert status == 0 and "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "fitting 6000 rows x 2 (1 chunks, read once per pass)"
    model = gaussmix.load(out_path)
    iterations = [line for line in lines if line.startswith("init 1/1, iteration")]
    assert len(iterations) == 1 + model.n_iter_
    # Four passes before EM (k-means start), then one per iteration.
    assert iterations[0].startswith("init 1/1, iteration 0, pass 4,")
    assert iterations[-1].startswith(
        f"init 1/1, iteration {model.n_iter_}, pass {4 + model.n_iter_}, lower bound"
    )
    status, _, err = run(
        capsys, "fit", tmp_path / "d.npy", "-k", 2, "-o", out_path, "--progress"
    )
    assert status == 0 and "fitting 6000 rows x 2 (memory-mapped)" in err
    status, _, err = run(
        capsys, "fit", tmp_path / "d.npy", "-k", 2, "-o", out_path, "--progress", "-q"
    )
    assert status == 0 and err == ""


def test_large_input_errors_are_one_line(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = _stream_fixture_rows()
    bad[4_321, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    pq.write_table(pa.table({"a": ["x", "y"]}), tmp_path / "text.parquet")
    pq.write_table(pa.table({"a": [1.0, np.nan]}), tmp_path / "nan.parquet")
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "m.npz"
    for data, fragments in [
        ("nan.npy", ["nan.npy contains NaN or infinite values"]),
        ("empty.npy", ["empty.npy holds no rows"]),
        ("text.parquet", ["column 'a' of row group 0 of", "not numeric"]),
        ("nan.parquet", ["row group 0 of", "nan.parquet contains NaN"]),
        ("nothing", ["nothing holds no .parquet files"]),
    ]:
        status, _, err = run(capsys, "fit", tmp_path / data, "-k", 1, "-o", out)
        assert_one_line_error(status, err, *fragments)
        assert status == 1
