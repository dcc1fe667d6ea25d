"""Component widgets of the course rendered and used in a real browser (JupyterLab + Debian Chromium).

Reuses the server fixture of test_browser.py: notebook 03's RoPE explorer (move a slider) and notebook
00's config explorer (pick a preset); each change must redraw the figure. Screenshots go to build/screenshots.
"""

from contextlib import contextmanager

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    ROOT,
    SHOTS,
    _src,
    _wait_idle,
    _wait_src_change,
    lab,  # noqa: F401  (the fixture)
)

pytestmark = pytest.mark.browser
NOTEBOOKS = ROOT / "notebooks"
IMG = "img.l2l-component-image"


def _run_all(page, url, name, deadline):
    page.goto(f"{url}/lab/tree/{name}", timeout=deadline.ms(60))
    page.wait_for_function(IDLE, timeout=deadline.ms(90))
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_selector("img.l2l-component-image", timeout=deadline.ms(120))
    _wait_idle(page, deadline, cap_s=150)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t]
    assert not tracebacks, tracebacks[:1]


@contextmanager
def _component_widget(lab, tmp_path):
    """Open the notebook, run all, and yield (page, first component widget, its image's src)."""
    from playwright.sync_api import sync_playwright

    url, name, deadline = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 1100},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            _run_all(page, url, name, deadline)
            widget = page.locator(".l2l-component").first
            widget.scroll_into_view_if_needed()
            yield page, widget, _src(page.locator(IMG).first), deadline
        finally:
            browser.close()


@pytest.mark.parametrize("lab", [NOTEBOOKS / "03_rope.ipynb"], indirect=True)
def test_rope_explorer_slider_redraws(lab, tmp_path):
    with _component_widget(lab, tmp_path) as (page, widget, before, deadline):
        handle = widget.locator(".l2l-control-m .noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        _wait_src_change(page, IMG, 0, before, deadline, "moving the query-position slider")
        widget.screenshot(path=str(SHOTS / "course_rope_explorer.png"))


@pytest.mark.parametrize("lab", [NOTEBOOKS / "00_welcome.ipynb"], indirect=True)
def test_config_explorer_preset_redraws(lab, tmp_path):
    with _component_widget(lab, tmp_path) as (page, widget, before, deadline):
        widget.locator(".l2l-control-preset select").select_option("llama2-70b")
        _wait_src_change(page, IMG, 0, before, deadline, "choosing the llama2-70b preset")
        widget.screenshot(path=str(SHOTS / "course_config_explorer.png"))
