"""gaussmix demo: the whole tutorial into one folder with an HTML page."""

import contextlib
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from PIL import Image

from gaussmix.cli import main

EXPECTED = {
    "criteria.png",
    "fit.png",
    "density.png",
    "em-stages.png",
    "em.gif",
    "anomalies.png",
    "generated.png",
    "gmm-vs-kmeans.png",
    "segmentation.png",
}


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []
        self.best_cells = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.sources.append(attributes["src"])
        if tag == "td" and attributes.get("class") == "best":
            self.best_cells += 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "out"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["demo", "-o", str(folder)])
    return status, out.getvalue(), err.getvalue(), folder


def test_demo_succeeds_and_summarises(demo):
    status, out, err, folder = demo
    assert status == 0
    assert err == ""
    assert re.search(r"chosen by BIC: tied, K=3, BIC 2314\.(29|30|31)\d", out)
    assert "k-means: adjusted Rand index" in out
    assert out.strip().splitlines()[-1] == (folder / "index.html").resolve().as_uri()


def test_page_shows_every_picture(demo):
    _, _, _, folder = demo
    parser = _Images()
    parser.feed((folder / "index.html").read_text(encoding="utf-8"))
    assert set(parser.sources) == EXPECTED
    assert parser.best_cells == 1
    for name in parser.sources:
        assert not Path(name).is_absolute()
        with Image.open(folder / name) as image:
            width, height = image.size
            assert width >= 400 and height >= 300
            # Not a blank canvas.
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is None or len(colours) > 50


def test_animation_has_a_frame_per_iteration(demo):
    _, out, _, folder = demo
    n_iter = int(re.search(r"EM from circles: (\d+) iterations", out).group(1))
    with Image.open(folder / "em.gif") as gif:
        assert gif.n_frames == n_iter + 1 > 5
