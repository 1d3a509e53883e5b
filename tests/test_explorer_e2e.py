"""The explorer in a real JupyterLab: start a server on loopback, open a notebook in headless Chromium (Playwright),
run the explorer cell, flip one attribute toggle, press Generate and see a new image.

The notebook is notebook 06's explorer cell (the code cell that builds an `Explorer(`), verbatim, after a prelude
that loads what 06's setup cell loads (`model`, `vocab`, `vqvae`, `valid_images`). Running all of 06 would spend the
test's time on guidance sweeps, the classifier and benchmarks that have nothing to do with whether the widget works
in a browser. The server runs with FACEGEN_PROFILE=ci (FACEGEN_E2E_PROFILE overrides it) on the repository's
artifacts, which the `explorer_artifacts` fixture builds first when missing (seconds for ci).

Needs Debian's /usr/bin/chromium (`apt-get install chromium`; never `playwright install`). Set
FACEGEN_UPDATE_SCREENSHOTS=1 to refresh docs/screenshots/explorer_jupyterlab.png from the run (the committed one is
from `FACEGEN_E2E_PROFILE=cpu`, whose GPT draws real faces; the test's default profile is ci).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_06 = REPO / "notebooks" / "06_sampling.ipynb"
SCREENSHOT = REPO / "docs" / "screenshots" / "explorer_jupyterlab.png"
PRELUDE = """from facegen.pipeline import ensure_classifier, ensure_gpt, ensure_vqvae, load_images
from facegen.widgets import Explorer

gpt = ensure_gpt()
model, vocab = gpt.model, gpt.vocab
vqvae = ensure_vqvae()
valid_images = load_images(split="valid")
classifier = ensure_classifier()"""
TIMEOUT_MS = 60_000
PROFILE = os.environ.get("FACEGEN_E2E_PROFILE", "ci")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"),
]


def explorer_cells() -> list[str]:
    """The prelude, then the code cells of notebook 06 that build the explorer."""
    cells = [cell.source for cell in nbformat.read(NOTEBOOK_06, as_version=4).cells
             if cell.cell_type == "code" and "Explorer(" in cell.source]
    assert cells, f"{NOTEBOOK_06} has no code cell building an Explorer( (the widget cell this test runs)"
    return [PRELUDE] + cells


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(folder: Path) -> None:
    """User settings that keep JupyterLab quiet and offline: no news toast, no update check."""
    path = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture(scope="module")
def explorer_artifacts():
    """The profile's GPT, VQ-VAE, validation faces and attribute classifier the kernel will load (built here if
    missing, so the browser's timeouts never have to cover training)."""
    from facegen.config import get_profile
    from facegen.pipeline import ensure_classifier, ensure_gpt, load_images

    profile = get_profile(PROFILE)
    ensure_gpt(profile, progress=False)
    load_images(profile, "valid", progress=False)
    ensure_classifier(profile, progress=False)


@pytest.fixture
def lab(tmp_path, explorer_artifacts):
    """A JupyterLab server on 127.0.0.1 serving tmp_path/explorer.ipynb; yields (base url, token)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in explorer_cells()])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, tmp_path / "explorer.ipynb")
    write_lab_settings(tmp_path / "settings")
    port, token = free_port(), os.urandom(16).hex()
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
               f"--ServerApp.root_dir={tmp_path}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
               f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    env = dict(os.environ, FACEGEN_PROFILE=PROFILE, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, token, server, tmp_path / "server.log")
        yield url, token
    finally:
        stop(server)
        log.close()


def wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"jupyter lab did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server by its PID (SIGTERM lets it shut its kernel down), then its process group if it lingers."""
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=5)


# JS: record whether the Generate button ever showed the busy state (a MutationObserver sees every change, however
# short-lived).
WATCH_BUSY = """() => {
    const button = document.querySelector('button.facegen-generate');
    window.facegenBusySeen = false;
    new MutationObserver(() => {
        if (button.disabled && button.textContent.includes('Generating...')) window.facegenBusySeen = true;
    }).observe(button, {attributes: true, childList: true, subtree: true, characterData: true});
}"""


def test_explorer_generates_a_new_image_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    expect.set_options(timeout=TIMEOUT_MS)  # expect's own default is 5 s; the cell imports torch and loads models
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1250})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/lab/tree/explorer.ipynb?token={token}")
            # Run All before the kernel is idle silently does nothing: wait for both idle indicators.
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle")
            page.locator("li[data-id='filebrowser']").click()  # fold the file browser away (a roomier screenshot)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            faces = page.locator("img.facegen-faces")
            expect(faces).to_be_visible()  # the cell ran: the explorer is displayed with its first batch
            expect(page.locator(".facegen-status")).to_contain_text("faces in")
            before = faces.get_attribute("src")

            smiling = page.locator(".facegen-toggle-Smiling button", has_text="yes")
            smiling.click()
            expect(smiling).to_have_class(re.compile(r"\bmod-active\b"))
            page.evaluate(WATCH_BUSY)
            generate = page.locator("button.facegen-generate")
            generate.click()

            page.wait_for_function("src => document.querySelector('img.facegen-faces').src !== src", arg=before)
            expect(generate).to_be_enabled()
            expect(generate).to_have_text("Generate")
            assert page.evaluate("window.facegenBusySeen"), "the button never showed the busy state"
            assert page.evaluate("() => { const img = document.querySelector('img.facegen-faces');"
                                 " return img.complete && img.naturalWidth > 0; }"), "the new image did not load"
            expect(page.locator(".facegen-status")).not_to_contain_text("Error")

            # best of 2: the slider's handle takes the arrow keys like any slider
            page.locator(".facegen-best-of .noUi-handle").press("ArrowRight")
            expect(page.locator(".facegen-best-of .widget-readout")).to_have_text("2")
            before = faces.get_attribute("src")
            generate.click()
            expect(page.locator(".facegen-status")).to_contain_text("each the best of 2 by the attribute classifier")
            assert faces.get_attribute("src") != before, "best of 2 did not show new faces"

            shot = tmp_path / "explorer_jupyterlab.png"
            page.screenshot(path=str(shot))
            if os.environ.get("FACEGEN_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT.with_suffix(".tmp.png"))
                SCREENSHOT.with_suffix(".tmp.png").replace(SCREENSHOT)
        finally:
            browser.close()
