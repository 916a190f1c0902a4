"""`python -m bench report`: the HTML page's structure (always) and its rendering in headless
Chromium (when one is installed)."""
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.browser import have_playwright, missing_reason
from bench.cli import main
from tests.harness import run_tiny_grid

METHODS, DATASETS = ["cam", "center", "gradcam"], ["synth-objects", "synth-tissue"]
KERNELS = "# Kernel speed tables\n\nstamp line\n\n### crf forward\n\n| size | ms |\n|---|---|\n| 64 | 1.5 |\n\n- a note\n"


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.rows, self.ids, self.text = [], [], 0, set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "table":
            self.tables.append(attrs.get("id"))
        if tag == "tr":
            self.rows += 1
        if "id" in attrs:
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(shared_dirs, tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    assert not run_tiny_grid(METHODS, DATASETS, [0, 1], shared_dirs, base / "results").failed
    (base / "kernels.md").write_text(KERNELS)
    assert main(["report", "--results", str(base / "results"), "--out", str(base / "report"),
                 "--kernels", str(base / "kernels.md")]) == 0
    return base / "report" / "index.html"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_every_image_is_a_png_and_every_table_is_there(report):
    page = Page()
    page.feed(report.read_text())
    text = " ".join(page.text)
    srcs = [img["src"] for img in page.images]
    for src in srcs:
        w, h = _png_size(report.parent / src)
        assert w > 100 and h > 100
    # per dataset: one sample grid (every method's CAM on the same images) and its curves
    for dataset in DATASETS:
        assert f"figures/{dataset}-samples.png" in srcs
        assert f"figures/{dataset}-mask-curves.png" in srcs
        assert f"table-{dataset}" in page.tables
    assert "figures/synth-objects-box-curves.png" in srcs
    assert all(m in text for m in METHODS)
    assert "cam (reported)" in text and "Choe et al." in text  # published numbers, marked
    assert "kernels" in page.ids and "crf forward" in text and "1.5" in text
    assert "No artifacts" not in text


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    why = missing_reason()
    if why:
        pytest.skip(why)
    if not have_playwright():
        pytest.skip("playwright is not installed (pip install -e '.[report]'): it drives the headless Chromium")
    from playwright.sync_api import sync_playwright

    from bench.browser import open_page

    with sync_playwright() as p:
        browser, page = open_page(p, report)
        images = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), i.complete, "
                               "i.naturalWidth, i.getBoundingClientRect().width])")
        tables = page.evaluate("() => [...document.querySelectorAll('table')].map(t => [t.id, t.rows.length, "
                               "t.getBoundingClientRect().height])")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert len(images) >= 5
    for src, complete, natural, shown in images:
        assert complete and natural > 0 and shown > 0, f"{src} did not render"
    for dataset in DATASETS:
        row = next(t for t in tables if t[0] == f"table-{dataset}")
        assert row[1] >= 1 + len(METHODS) and row[2] > 0
    w, h = _png_size(shot)
    assert w >= 1000 and h > 2000


def test_screenshot_flag_writes_a_png(report, tmp_path):
    if missing_reason():
        pytest.skip(missing_reason())
    results = report.parent.parent / "results"
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "r"), "--screenshot",
                 str(tmp_path / "shot.png")]) == 0
    assert _png_size(tmp_path / "shot.png")[0] > 0
