"""Notebook 08 in a real JupyterLab, driven by Debian's Chromium through Playwright.

Starts JupyterLab on 127.0.0.1 (free port, no token, everything under a temporary HOME) serving a
*copy* of the notebook, runs all cells from the Run menu, then uses the widgets the way a learner
would: changes layer and head in the attention explorer and moves a sampling slider, asserting that
the images change. Screenshots land in build/screenshots/ for review.

Set ``L2L_BROWSER_NOTEBOOK`` to open another copy of the notebook instead of notebooks/08.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
BUDGET_S = 270  # the whole test, server start to last screenshot (about 100 s on an idle 2-core machine)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run browser tests"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run them)")
    pytest.skip(reason)


def _notebook() -> Path:
    custom = os.environ.get("L2L_BROWSER_NOTEBOOK")
    if custom:
        return Path(custom)
    from llama2_lab.formats import CheckpointNotFoundError, default_model_path

    try:
        default_model_path()
    except CheckpointNotFoundError as err:
        pytest.skip(f"notebook 08 needs the shipped model: {err}")
    return ROOT / "notebooks" / "08_inference.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def ms(self, cap_s: float) -> float:
        """A Playwright timeout: cap_s, or what is left of the budget if less."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"browser test ran past its {BUDGET_S} s budget")
        return min(cap_s, left) * 1000


@pytest.fixture
def lab(tmp_path, request):
    """A JupyterLab server on a free port serving a copy of the notebook; yields (url, name, deadline).

    The notebook is 08 unless a test passes another path with ``indirect=True``.
    """
    _need_chromium()
    notebook = getattr(request, "param", None) or _notebook()
    pytest.importorskip("playwright.sync_api")
    deadline = Deadline(BUDGET_S)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)  # Lab autosaves: never serve the real file
    settings = tmp_path / "settings"
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
        "LLAMA2_LAB_FAST": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("LLAMA2_CHECKPOINT", None)
    port = _free_port()
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--allow-root",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp_path / 'ws'}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {server.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            deadline.ms(60)
            time.sleep(0.3)
        yield url, notebook.name, deadline
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


IDLE = (
    "() => { const t = document.querySelector('#jp-main-statusbar')?.innerText || '';"
    " return t.includes('| Idle') && !t.includes('No Kernel'); }"
)


def _wait_idle(page, deadline: Deadline, cap_s: float = 90) -> None:
    """Wait until the kernel reads Idle twice, a second apart (it flickers to Idle between messages)."""
    for _ in range(2):
        page.wait_for_function(IDLE, timeout=deadline.ms(cap_s))
        page.wait_for_timeout(1000)
    page.wait_for_function(IDLE, timeout=deadline.ms(cap_s))


def _src(locator) -> str:
    return locator.get_attribute("src") or ""


def _wait_src_change(page, selector: str, index: int, before: str, deadline: Deadline, what: str) -> str:
    page.wait_for_function(
        "([sel, i, before]) => { const el = document.querySelectorAll(sel)[i];"
        " return el && el.getAttribute('src') && el.getAttribute('src') !== before; }",
        arg=[selector, index, before],
        timeout=deadline.ms(60),
    )
    after = _src(page.locator(selector).nth(index))
    assert after != before, f"{what} did not change the image"
    return after


def test_notebook_08_widgets_in_chromium(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, name, deadline = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    profile = tmp_path / "chromium-profile"  # a fresh profile every run
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # = --user-data-dir, as Playwright wants it
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 1000},
        )  # a laptop screen: the explorer must fit it
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(f"{url}/lab/tree/{name}", timeout=deadline.ms(60))
            # The toolbar says Idle before a kernel exists; wait for "… | Idle" in the status bar.
            page.wait_for_function(IDLE, timeout=deadline.ms(90))
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            # the last cell prints this once everything above has run
            page.wait_for_selector("text=most previous-token-like", timeout=deadline.ms(200))
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks[:1]

            img = "img.l2l-explorer-image"
            page.wait_for_selector(img, timeout=deadline.ms(60))
            explorer = page.locator(".l2l-explorer").first
            explorer.scroll_into_view_if_needed()
            before = _src(page.locator(img).nth(0))
            assert before.startswith("blob:") or before.startswith("data:")
            page.locator(".l2l-explorer-layer select").first.select_option(index=3)
            after_layer = _wait_src_change(page, img, 0, before, deadline, "changing the layer")
            page.locator(".l2l-explorer-head select").first.select_option(index=4)
            _wait_src_change(page, img, 0, after_layer, deadline, "changing the head")
            selected = "el => el.options[el.selectedIndex].text.replace(/\\u00a0/g, ' ')"  # widgets use nbsp
            assert page.locator(".l2l-explorer-layer select").first.evaluate(selected) == "layer 3"
            assert page.locator(".l2l-explorer-head select").first.evaluate(selected) == "h4 (kv 1)"
            # pick a generated token as the query: its row appears as shaded text
            slider = page.locator(".l2l-explorer-token .noUi-handle").first
            slider.focus()
            page.keyboard.press("End")
            page.wait_for_function(
                "() => document.querySelector('.l2l-explorer-token').parentElement.innerText.includes('generated')",
                timeout=deadline.ms(30),
            )
            explorer.screenshot(path=str(SHOTS / "explorer_single_head.png"))
            box = explorer.bounding_box()
            assert box["width"] <= 1440 and box["height"] <= 1000 - 80, box  # fits below JupyterLab's bars
            row = page.locator(".l2l-explorer-row").first.bounding_box()
            assert row["x"] + row["width"] <= 1440, row  # the query's row text is beside the image, on screen

            single = _src(page.locator(img).nth(0))
            explorer.locator(".l2l-explorer-view button", has_text="all heads").click()
            _wait_src_change(page, img, 0, single, deadline, "the all-heads view")
            explorer.screenshot(path=str(SHOTS / "explorer_all_heads.png"))

            long_explorer = page.locator(".l2l-explorer").nth(1)
            long_explorer.scroll_into_view_if_needed()
            assert "long text" not in (_src(page.locator(img).nth(0)))  # sanity: two explorers
            long_explorer.screenshot(path=str(SHOTS / "explorer_network_long.png"))

            chart = "img.l2l-sampling-chart"
            playground = page.locator(".l2l-sampling").first
            playground.scroll_into_view_if_needed()
            before = _src(page.locator(chart).nth(0))
            handle = page.locator(".l2l-sampling-temperature .noUi-handle").first
            handle.focus()
            for _ in range(4):
                page.keyboard.press("ArrowRight")
            after_temp = _wait_src_change(page, chart, 0, before, deadline, "moving the temperature slider")
            _wait_idle(page, deadline)  # each key press is a separate update: let them all land
            after_temp = _src(page.locator(chart).nth(0))
            text_before = playground.locator(".l2l-sampling-text").inner_text()
            playground.locator(".l2l-sampling-sample button, button.l2l-sampling-sample").first.click()
            page.wait_for_function(
                "(before) => document.querySelector('.l2l-sampling-text').innerText !== before",
                arg=text_before,
                timeout=deadline.ms(60),
            )
            _wait_src_change(page, chart, 0, after_temp, deadline, "sampling a token")
            playground.screenshot(path=str(SHOTS / "sampling_playground.png"))
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=False)  # what the browser showed
            raise
        finally:
            browser.close()
    elapsed = time.monotonic() - t0
    print(f"browser test: {elapsed:.1f} s in Chromium")
    assert elapsed < BUDGET_S
