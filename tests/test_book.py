"""The Jupyter Book: it builds with warnings as errors, every notebook is a chapter with its figures, the widget
front end is vendored, and (in headless Chromium) the sampling chapter shows its grids and the explorer's controls.

The book is built once for the module into a temporary folder (~10 s). Screenshots go to a temporary folder; set
FACEGEN_SCREENSHOTS=docs/screenshots to keep them (that is how the committed ones are made).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from pathlib import Path

import pytest

from facegen.config import REPO_ROOT
from facegen.course import NOTEBOOK_PATTERN, build_book

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob(NOTEBOOK_PATTERN))
SAMPLING_CHAPTER = "06_sampling"
CHROMIUM = Path("/usr/bin/chromium")
# The developers' flags: no sandbox (root in containers), no GPU, and nothing that phones home.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(html folder, the build's console output) of one build of the book."""
    out = tmp_path_factory.mktemp("book")
    result = build_book(output=out)  # raises with the build's messages if it fails
    return out / "_build" / "html", result.stdout + result.stderr


def outputs(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]


def figure_count(notebook: Path) -> int:
    return sum(any(m in o.get("data", {}) for m in IMAGE_MIMES) for o in outputs(notebook))


def has_widgets(notebook: Path) -> bool:
    return any(WIDGET_VIEW in o.get("data", {}) for o in outputs(notebook))


def local_images(page: Path) -> list[Path]:
    """The files behind the page's <img> tags that are not on the web (the Colab badge is)."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page.read_text())
    return [(page.parent / src.split("?")[0]).resolve() for src in sources if not re.match(r"https?://", src)]


def chapter_page(html: Path, notebook: Path) -> Path:
    return html / "notebooks" / f"{notebook.stem}.html"


def test_the_book_builds_with_warnings_as_errors(build):
    html, log = build
    assert "build succeeded" in log and "WARNING" not in log
    assert (html / "intro.html").is_file() and (html / "index.html").is_file()


def test_the_book_renders_the_notebooks_themselves_not_copies():
    link = REPO_ROOT / "book" / "notebooks"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "notebooks").resolve()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_worked_solutions_are_dropdowns_that_hide_their_answer(build, notebook):
    """Each exercise's worked solution is a collapsed <details>, its "correct — ..." output inside it: a reader of
    the book sees the answer only after opening it."""
    html, _ = build
    solutions = [c for c in json.loads(notebook.read_text())["cells"]
                 if "exercise-solution" in c["metadata"].get("tags", [])]
    chunks = [chunk.split('<div class="cell ')[0]
              for chunk in chapter_page(html, notebook).read_text().split("tag_exercise-solution")[1:]]
    assert len(chunks) == len(solutions) >= 2
    for chunk in chunks:
        opened, closed = chunk.find("<details"), chunk.find("</details>")
        assert 0 <= opened < chunk.find("correct —") < closed, chunk[:300]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_is_a_chapter_with_its_figures(build, notebook):
    html, _ = build
    page = chapter_page(html, notebook)
    assert page.is_file(), f"no chapter page for {notebook.name}"
    title = json.loads(notebook.read_text())["cells"][0]["source"][0].removeprefix("# ").strip()
    assert title in page.read_text()
    images = local_images(page)
    assert figure_count(notebook) > 0, f"{notebook.name} shows no figures: commit it executed (`make course`)"
    assert len(images) >= figure_count(notebook), f"{notebook.name}: figures missing from {page.name}"
    assert all(image.is_file() for image in images), [str(i) for i in images if not i.is_file()]


def test_the_table_of_contents_lists_every_notebook_in_order(build):
    html, _ = build
    sidebar = (html / "intro.html").read_text()
    linked = re.findall(r'href="notebooks/(\d\d_[^".]+)\.html"', sidebar)
    assert list(dict.fromkeys(linked)) == [p.stem for p in NOTEBOOKS]


def test_the_extra_pages_exist_and_the_references_are_a_bibliography(build):
    html, _ = build
    for page in ("real_celeba", "glossary", "references"):
        assert (html / f"{page}.html").is_file(), page
    references = (html / "references.html").read_text()
    entries = re.findall(r'<div class="citation" id="id\d+" role="doc-biblioentry">(.*?)</div>', references, re.S)
    text = " ".join(re.sub(r"<[^>]+>", "", e) for e in entries).lower()  # the style lower-cases titles
    for title in ("neural discrete representation learning", "vq-vae-2", "taming transformers",
                  "language models are unsupervised multitask learners", "classifier-free diffusion guidance",
                  "llama for scalable image generation", "dall·e mini", "deep learning face attributes in the wild"):
        assert title in text, title


def test_the_intro_shows_the_pipeline_figure_and_the_runtime_table_markers(build):
    html, _ = build
    page = html / "intro.html"
    assert any(image.name == "pipeline.svg" and image.is_file() for image in local_images(page))
    source = (REPO_ROOT / "book" / "intro.md").read_text()
    assert "<!-- runtimes:start -->" in source and "<!-- runtimes:end -->" in source


@pytest.mark.parametrize("notebook", [p for p in NOTEBOOKS if has_widgets(p)], ids=lambda p: p.stem)
def test_widget_pages_load_the_vendored_widget_manager_once(build, notebook):
    html, _ = build
    text = chapter_page(html, notebook).read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', text)
    embeds = [s for s in scripts if "embed-amd.js" in s]
    assert len(embeds) == 1 and not embeds[0].startswith("http"), embeds  # offline, and not twice
    assert any(s.startswith("../_static/require.js") for s in scripts)
    assert (html / "_static" / "embed-amd.js").is_file() and (html / "_static" / "require.js").is_file()
    assert "application/vnd.jupyter.widget-state+json" in text  # the saved state the controls render from


def screenshot_chapter() -> Path:
    """The sampling chapter; until it exists, the chapter with the most figures."""
    by_name = {p.stem: p for p in NOTEBOOKS}
    return by_name.get(SAMPLING_CHAPTER) or max(NOTEBOOKS, key=figure_count)


@pytest.fixture
def served(build):
    """The built book on http://127.0.0.1:<port>/ (file:// pages may not load require.js modules)."""
    html, _ = build

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install chromium; .ci/run installs it)")
def test_the_sampling_chapter_shows_its_grids_and_widget_controls_in_chromium(served, tmp_path):
    from playwright.sync_api import sync_playwright

    notebook = screenshot_chapter()
    assert figure_count(notebook) > 0, f"{notebook.name} shows no figures: commit it executed (`make course`)"
    if notebook.stem == SAMPLING_CHAPTER:
        assert has_widgets(notebook), f"{notebook.name}: commit it with the explorer's widget state (`make course`)"
    shots = Path(os.environ.get("FACEGEN_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside, broken = [], []  # the book works offline: nothing but the Colab badge comes from the web
            page.on("request", lambda r: r.url.startswith((served, "blob:", "data:")) or outside.append(r.url))
            page.on("response", lambda r: r.status < 400 or broken.append(f"{r.status} {r.url}"))
            page.goto(f"{served}/index.html", wait_until="networkidle")  # redirects to the introduction
            chapters = page.locator("nav.bd-links a[href*='notebooks/']")
            assert chapters.count() == len(NOTEBOOKS) and chapters.first.is_visible()
            page.screenshot(path=shots / "book_intro.png")
            page.goto(f"{served}/notebooks/{notebook.stem}.html", wait_until="networkidle")
            # Every figure of the notebook is decoded and has a size (the Colab badge is on the web: left out).
            sizes = page.evaluate("""Array.from(document.images)
                .filter(i => i.src.startsWith(location.origin)).map(i => i.naturalWidth)""")
            assert len(sizes) >= figure_count(notebook) and all(size > 0 for size in sizes), sizes
            first_figure = page.locator("div.cell_output img").first
            first_figure.scroll_into_view_if_needed()
            page.screenshot(path=shots / f"book_{notebook.stem}_grid.png")
            if has_widgets(notebook):
                # Rendered from the saved state: visible widget views (outputs hidden by the theme do not count).
                page.locator(".jupyter-widgets:visible").first.wait_for(state="visible", timeout=15_000)
                controls = ".widget-hslider, .widget-dropdown, .widget-checkbox, .widget-toggle-buttons, .widget-button"
                if notebook.stem == SAMPLING_CHAPTER:  # the explorer: real controls, not just progress bars
                    assert page.locator(f"div.cell_output:has({controls})").count() > 0
                    output = page.locator(f"div.cell_output:has({controls})").first
                else:
                    output = page.locator("div.cell_output:has(.jupyter-widgets)").first
                output.screenshot(path=shots / f"book_{notebook.stem}_widget.png")  # the whole output, grids and all
            assert not broken, broken
            assert all("colab" in url for url in outside), outside
        finally:
            browser.close()
    assert (shots / f"book_{notebook.stem}_grid.png").stat().st_size > 10_000
