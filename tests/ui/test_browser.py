"""The app once through a real headless browser (Debian's chromium + chromium-driver, driven by Selenium).

What a person sees (issues 14, 27), at 1400×1000 and on a 390 px phone:

* at the start: Generate above the fold; on a phone the preset and the model on lines of their own, the model's text
  clear of its arrow, the negative prompt whole; the examples the model can make (the others listed with the
  reason); the Avatar tab without SMPL files: one notice with the ``smpl-convert`` command and no form;
* a run: the first preview within :data:`FIRST_PREVIEW_TARGET_S` of Generate (the model warmed in the background,
  as ``app.py`` does at start-up), filling its box, enlarged by a click; t / s lines from the first steps; a loss
  plot's raw values on request; the Pause/Resume toggle;
* Stop: control back, the splat and mesh viewers not empty (their pixels read back), the mesh in the file's
  colours; Stop during a long export: the export in its own row with Skip export while the next run starts and ends,
  without the "Stopping…" line; Skip export ends the export there;
* a reopened past run: everything the live run showed (status, views, plots, viewers, downloads, config);
* the guidance lab: the A/B run's views side by side with its table, the inspector's grid at a readable size.

Every wait is an explicit wait on a condition (:func:`_until`), and clicks go through JavaScript (:func:`_click`), so a
busy machine makes the test slower, not flaky. Screenshots of each step are saved to ``$LUCID_SCREENSHOTS`` (default
``test-artifacts/``, git-ignored) for a reviewer to look at.

Skipped with the reason when chromium, chromedriver or selenium is missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.app_harness import TINY_OVERRIDES, launch_app
from tests.helpers import REPO

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(os.environ.get("LUCID_SCREENSHOTS")
                   or REPO / "test-artifacts")
# The longest wait for any one condition: generous for a loaded machine; a wait returns as soon as it holds.
TIMEOUT_S = 240
# On an idle machine; scaled by the load average per core on a busy one.
FIRST_PREVIEW_TARGET_S = 5.0
DESKTOP = (1400, 1000)
PHONE = (390, 844)
TABS = {"text": "Text-to-3D", "lab": "Negative prompts & guidance lab", "avatar": "Avatar"}
# A viewer is drawn when at least this share of its canvas differs from the canvas's own background.
DRAWN_SHARE = 0.01

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs a browser: apt-get install chromium chromium-driver"),
]


@pytest.fixture
def browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--enable-unsafe-swiftshader", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    _viewport(driver, *DESKTOP)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------------------------- helpers


def _viewport(driver, width: int, height: int, mobile: bool = False) -> None:
    """Exactly ``width`` × ``height`` CSS pixels of page (a window size would include the browser's own frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def _until(driver, condition: Callable[[Any], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    """Wait until ``condition(driver)`` is truthy (polled every 0.2 s) and return it; the failure names ``what``.

    A poll that times out in the page (a busy page's script timeout) is one more poll, not the end of the wait."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2, ignored_exceptions=(TimeoutException,)).until(
        condition, message=f"waited for {what}")


def _js(driver, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _click(driver, target: str) -> None:
    """Click the element with id ``target``, or the first button whose text contains ``target``, by JavaScript: it
    returns at once, where a native click waits for the page to settle (a busy page held one for 120 s)."""
    found = _js(driver, """
        const t = arguments[0];
        let el = document.getElementById(t)
            || [...document.querySelectorAll('button')].find(b => b.textContent.includes(t));
        if (!el) return false;
        if (!el.matches('button, input')) el = el.querySelector('input, button') || el;
        el.scrollIntoView({block: 'center'}); el.click(); return true;""", target)
    assert found, f"nothing to click for {target!r}"


def _text(driver, element_id: str) -> str:
    return _js(driver, "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", element_id)


def _set_checkbox(driver, element_id: str, checked: bool) -> None:
    """Click the checkbox in ``element_id`` until the page reports it ``checked`` (a click a loaded page drops while it
    re-renders is clicked again; a click that took is never repeated, so it cannot toggle back)."""
    state = f"return document.querySelector('#{element_id} input').checked"

    def settled(d: Any) -> bool:
        if _js(d, state) == checked:
            return True
        _click(d, element_id)
        time.sleep(1.0)
        return _js(d, state) == checked

    _until(driver, settled, f"{element_id} to be {'on' if checked else 'off'}")


def _has_text(element_id: str, text: str) -> Callable[[Any], bool]:
    return lambda d: text in _text(d, element_id)


def _set_text(driver, css: str, text: str) -> None:
    """Put ``text`` into the textarea / input matched by ``css`` and fire the ``input`` event a person's typing fires
    (Gradio listens to it; typing hundreds of characters key by key cost seconds a run), then wait until the page
    holds it."""
    field = _until(driver, lambda d: _js(d, "return document.querySelector(arguments[0])", css), css)
    _js(driver, """const f = arguments[0];
        f.scrollIntoView({block: 'center'}); f.focus(); f.value = arguments[1];
        f.dispatchEvent(new Event('input', {bubbles: true})); f.dispatchEvent(new Event('change', {bubbles: true}));
        f.blur();""", field, text)
    _until(driver, lambda d: _js(d, "return document.querySelector(arguments[0]).value", css) == text,
           f"{css} to hold the text")


def _in_view(driver, element_id: str) -> bool:
    """The element is laid out and lies entirely inside the viewport, without scrolling."""
    return _js(driver, """const e = document.getElementById(arguments[0]);
        if (!e) return false;
        const r = e.getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight && r.right <= window.innerWidth;""",
               element_id)


def _shot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _tab(driver, key: str) -> None:
    _js(driver, """[...document.querySelectorAll("button[role='tab']")]
        .find(b => b.textContent.includes(arguments[0])).click(); window.scrollTo(0, 0);""", TABS[key])
    _until(driver, lambda d: _js(d, """return [...document.querySelectorAll("button[role='tab']")]
        .some(b => b.textContent.includes(arguments[0]) && b.getAttribute('aria-selected') === 'true');""",
                                 TABS[key]), f"the {key} tab")


def _canvas_pixels(driver, element_id: str) -> np.ndarray:
    """The RGB pixels [H, W, 3] of the canvas in ``element_id`` as the browser paints it (WebGL canvases keep no
    readable drawing buffer, so they are read from a screenshot of the element)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    canvas = _until(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"#{element_id} canvas"),
                    f"{element_id}'s canvas")
    _js(driver, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), dtype=np.int32)


def _drawn(pixels: np.ndarray) -> np.ndarray:
    """The pixels that differ from the canvas's background (the median of its bottom row: the label and buttons lie
    over its top) by more than 12 levels: [H, W]."""
    background = np.median(pixels[-3], axis=0)
    return np.abs(pixels - background).max(axis=-1) > 12


def _viewer_drawn(driver, element_id: str) -> bool:
    """The viewer's canvas shows something: at least :data:`DRAWN_SHARE` of its pixels are not its background."""
    return float(_drawn(_canvas_pixels(driver, element_id)).mean()) >= DRAWN_SHARE


def _plot_lines(driver, element_id: str) -> list[int]:
    """The number of points of each line the plot draws (Vega's SVG line marks)."""
    return _js(driver, """const plot = document.getElementById(arguments[0]);
        return [...plot.querySelectorAll('path[aria-roledescription="line mark"]')]
            .map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length);""", element_id)


def _image_fill(driver, element_id: str) -> float:
    """How much of its box the image in ``element_id`` fills along its longer side (1.0 = edge to edge), with
    ``object-fit: contain``: the picture is the natural size scaled to fit the img element."""
    return _until(driver, lambda d: _js(d, """const img = document.querySelector('#' + arguments[0] + ' img');
        if (!img || !img.complete || !img.naturalWidth) return null;
        const box = document.getElementById(arguments[0]).getBoundingClientRect();
        const r = img.getBoundingClientRect();
        const k = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        return Math.max(img.naturalWidth * k / box.width, img.naturalHeight * k / box.height);""", element_id),
                  f"{element_id}'s image to load")


def _srgb(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.clip(linear, 0, None) ** (1 / 2.4) - 0.055)


def _glb_colour(path: Path) -> np.ndarray:
    """The median colour of a .glb's vertices as a display shows it, 0-255: COLOR_0 (linear: sRGB-encoded back)
    times, when it has one, its base colour texture at the vertex's UV (glTF multiplies the two)."""
    import trimesh

    from tests.helpers import glb_json_and_colors

    _, colours = glb_json_and_colors(path)
    shown = _srgb(colours[:, :3])
    loaded = trimesh.load(path, force="mesh", process=False)
    image = getattr(loaded.visual.material, "baseColorTexture", None)
    if image is not None:
        texture = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        height, width = texture.shape[:2]
        uv = np.asarray(loaded.visual.uv)
        rows = np.clip(((1.0 - uv[:, 1]) * height).astype(int), 0, height - 1)
        shown = shown * texture[rows, np.clip((uv[:, 0] * width).astype(int), 0, width - 1)]
    return np.median(shown, axis=0) * 255.0


def _start_run(driver, steps: int, preview_every: int, prompt: str = "a red toy car",
               more: tuple[str, ...] = ()) -> float:
    """Type the prompt and the tiny run's settings (then the overrides ``more``), press Generate; returns the time of
    the click."""
    _set_text(driver, "#lucid-prompt textarea", prompt)
    if not _js(driver, "return !!document.querySelector('#lucid-extra textarea') "
                       "&& document.querySelector('#lucid-extra textarea').offsetParent !== null;"):
        _click(driver, "Advanced")
    extra = "\n".join([*TINY_OVERRIDES, f"optim.steps={steps}", f"export.preview_every={preview_every}", *more])
    _set_text(driver, "#lucid-extra textarea", extra)
    _until(driver, lambda d: _js(d, "return document.querySelector('#lucid-extra textarea').value") == extra,
           "the overrides to be typed")
    _js(driver, "window.scrollTo(0, 0)")
    started = time.monotonic()
    _click(driver, "lucid-generate")
    return started


# ---------------------------------------------------------------------------------------------- the test


def test_a_person_sees_the_run_in_a_real_browser(browser, tmp_path: Path) -> None:
    from lucid_app.app.run_folders import list_runs
    from lucid_app.train.prepare import resolve_config

    demo, jobs, url = launch_app(tmp_path / "outputs")
    d = browser
    try:
        # The model loads in the background while the page opens, as app.py's start-up does.
        warm = jobs.warm(resolve_config("demo", "a red toy car", None, None, list(TINY_OVERRIDES)).model)
        d.get(url)
        _until(d, lambda d: _js(d, "return !!document.querySelector('#lucid-prompt textarea')"), "the page")

        # 1. At the start: the essentials above the fold; only the examples the demo can make; one Avatar notice.
        _until(d, lambda d: _in_view(d, "lucid-generate") and _in_view(d, "lucid-prompt"),
               "Generate and the prompt above the fold")
        _click(d, "Example prompts")
        _until(d, _has_text("lucid-examples", "a potted flower"), "the examples")
        offered, note = _text(d, "lucid-examples").lower(), _text(d, "lucid-examples-note")
        assert "a snowman" in offered and "hamburger" not in offered
        assert "hamburger" in note.lower() and "Not offered (needs Stable Diffusion weights" in note
        _js(d, """[...document.querySelectorAll('#lucid-examples button, #lucid-examples tr')]
            .find(e => e.textContent.includes('a potted flower')).click();""")
        _until(d, lambda d: _js(d, "return document.querySelector('#lucid-prompt textarea').value")
               == "a potted flower", "the example to fill the prompt")
        _shot(d, "start_text")
        _click(d, "Example prompts")
        for key in ("lab", "avatar"):
            _tab(d, key)
            _shot(d, f"start_{key}")
        notice = _text(d, "lucid-smpl-notice")
        assert "python -m lucid_app smpl-convert" in notice
        assert _js(d, "return document.getElementById('lucid-avatar-form') === null "
                      "|| document.getElementById('lucid-avatar-form').offsetParent === null")
        assert "no SMPL body model" not in _js(d, "return document.body.innerText"), "one notice, not two"
        _tab(d, "text")
        _viewport(d, *PHONE, mobile=True)
        _until(d, lambda d: _js(d, "return window.innerWidth") == PHONE[0], "the phone viewport")
        _until(d, lambda d: _in_view(d, "lucid-generate"), "Generate above the fold on a 390 px phone")
        layout = _until(d, lambda d: _js(d, """const box = id => document.getElementById(id).getBoundingClientRect();
            const model = document.querySelector('#lucid-model input');
            const negative = document.querySelector('#lucid-negative textarea');
            const choose = document.querySelector('#lucid-choose .block');
            if (!model || !negative || !choose || !document.getElementById('lucid-model')) return null;
            return {stacked: box('lucid-model').top >= box('lucid-choose').top
                             && choose.getBoundingClientRect().bottom
                                <= box('lucid-model').top + 1,
                    model_fits: model.scrollWidth <= model.clientWidth,
                    negative_whole: negative.scrollHeight <= negative.clientHeight + 2};"""), "the phone layout")
        assert layout == {"stacked": True, "model_fits": True, "negative_whole": True}, layout
        _shot(d, "start_text_phone")
        _viewport(d, *DESKTOP)
        _until(d, lambda d: _js(d, "return window.innerWidth") == DESKTOP[0], "the desktop viewport")
        warm.join(TIMEOUT_S)

        # 2. Generate ("preview every 50 steps"): the first preview within seconds, filling its box; t / s lines from
        # the first steps; a click enlarges the preview.
        started = _start_run(d, steps=400, preview_every=50)
        _until(d, lambda d: _js(d, "return !!document.querySelector('#lucid-preview img[src]')"), "the first preview")
        first_preview_s = time.monotonic() - started
        # The target holds on an idle machine; a shared one gets the time in proportion to its load per core.
        load = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        assert first_preview_s <= FIRST_PREVIEW_TARGET_S * load, (
            f"first preview after {first_preview_s:.1f} s (load {load:.1f})")
        _until(d, _has_text("lucid-status", "Running — step"), "the status to show the step")
        _until(d, _has_text("lucid-generate", "step"), "Generate to show the run")
        assert _in_view(d, "lucid-status") and _in_view(d, "lucid-preview")
        assert _image_fill(d, "lucid-preview") > 0.95, "the preview fills its box"
        _click(d, "lucid-pause")
        _until(d, _has_text("lucid-pause", "Resume"), "the toggle to read Resume")
        _until(d, _has_text("lucid-status", "Paused"), "the status to say Paused")
        paused_at = jobs.views()[-1].last_step.step
        lines = _until(d, lambda d: (lambda n: n if len(n) == 3 and min(n) >= 2 else None)(
            _plot_lines(d, "lucid-schedule-plot")), "t, s and δ_T drawn as lines")
        assert paused_at < 25 or min(lines) >= 2, lines
        _js(d, "document.querySelector('#lucid-preview img').click()")
        zoomed = _until(d, lambda d: _js(d, """const i = document.querySelector('.lucid-overlay img');
            if (!i) return null;
            const r = i.getBoundingClientRect(), top = document.elementFromPoint(r.width / 2, 5);
            return {width: r.width, height: r.height, on_top: !!(top && top.closest('.lucid-overlay')),
                    same: i.src === document.querySelector('#lucid-preview img').src};"""),
                        "the preview enlarged to the window")
        assert zoomed == {"width": DESKTOP[0], "height": DESKTOP[1], "on_top": True, "same": True}, zoomed
        _shot(d, "mid_preview_enlarged")
        _js(d, "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
        _until(d, lambda d: not _js(d, "return !!document.querySelector('.lucid-overlay')"), "the enlarged view closed")
        _set_checkbox(d, "lucid-guidance-raw", True)
        _until(d, _has_text("lucid-guidance-plot", "guidance (raw)"), "the raw guidance values")
        _js(d, "document.getElementById('lucid-guidance-plot').scrollIntoView({block: 'center'})")
        _shot(d, "mid_plots_raw")
        _set_checkbox(d, "lucid-guidance-raw", False)
        _until(d, lambda d: "guidance (raw)" not in _text(d, "lucid-guidance-plot"), "the raw values hidden")
        _js(d, "window.scrollTo(0, 0)")
        _shot(d, "mid_text")
        for key in ("lab", "avatar"):
            _tab(d, key)
            _shot(d, f"mid_{key}")
        _tab(d, "text")
        _click(d, "lucid-pause")
        _until(d, _has_text("lucid-pause", "Pause"), "the toggle to read Pause")
        _until(d, _has_text("lucid-status", "Running"), "the run to go on")

        # 3. Stop: control back, both viewers drawn, the mesh in the file's colours.
        _click(d, "lucid-stop")
        _until(d, _has_text("lucid-control-msg", "Stopping"), "the Stopping line")
        _until(d, _has_text("lucid-status", "Stopped"), "the run to stop")
        _until(d, lambda d: _js(d, """return [...document.querySelectorAll('button')]
            .some(b => b.textContent.includes('Download mesh.glb') && b.offsetParent !== null)"""), "the downloads")
        assert _js(d, """return [...document.querySelectorAll('button')]
            .some(b => b.textContent.includes('(.zip)') && b.offsetParent !== null)"""), "the .obj set's download"
        heights = _js(d, """return [...document.querySelectorAll('button')]
            .filter(b => b.textContent.trim().startsWith('Download') && b.offsetParent !== null)
            .map(b => Math.round(b.getBoundingClientRect().height));""")
        assert len(heights) == 5 and len(set(heights)) == 1, f"a download label wraps or is cut: {heights}"
        _until(d, _has_text("lucid-generate", "Generate"), "Generate back")
        assert not _js(d, "return document.getElementById('lucid-stop').disabled === false")
        for viewer in ("lucid-splat-viewer", "lucid-mesh-viewer"):
            _until(d, lambda d: _viewer_drawn(d, viewer), f"{viewer} to draw the run")
        stopped = jobs.views()[-1]
        mesh = _canvas_pixels(d, "lucid-mesh-viewer")
        shown = np.median(mesh[_drawn(mesh)], axis=0)
        expected = _glb_colour(Path(stopped.files["view_mesh"]))  # the viewer shows this copy (mesh.glb: textured)
        # The viewer's copy is unlit with a soft shading (75-100 % of each colour): the file's hue, no tint.
        assert np.all(np.abs(shown - expected) <= 48), (shown, expected)
        assert abs((shown[0] - shown[2]) - (expected[0] - expected[2])) <= 16, "no lavender tint"
        _js(d, "document.getElementById('lucid-splat-viewer').scrollIntoView()")
        _shot(d, "end_text_viewers")
        _js(d, "window.scrollTo(0, 0)")
        _shot(d, "end_text")
        for key in ("lab", "avatar"):
            _tab(d, key)
            _shot(d, f"end_{key}")
        _tab(d, "text")

        # 4. Reopen the stopped run: everything the live run showed (the newest run is the one listed first).
        _click(d, "Past runs")
        _click(d, "lucid-refresh-runs")
        _until(d, lambda d: _js(d, "return document.querySelector('#lucid-runs input').value") != "", "the run list")
        _click(d, "lucid-open-run")
        _until(d, _has_text("lucid-banner", "Showing the past run"), "the past run")
        _until(d, _has_text("lucid-status", "Past run — Stopped at step"), "the past run's status")
        assert _js(d, "return !!document.querySelector('#lucid-preview img[src]')"), "its final views"
        _until(d, lambda d: len(_plot_lines(d, "lucid-guidance-plot")) >= 1, "its plots")
        for viewer in ("lucid-splat-viewer", "lucid-mesh-viewer"):
            _until(d, lambda d: _viewer_drawn(d, viewer), f"{viewer} to draw the reopened run")
        _click(d, "Resolved config")
        _until(d, _has_text("lucid-config", "text: a red toy car"), "its config")
        _shot(d, "reopened_text")
        _js(d, "window.scrollTo(0, 0)")

        # 5. Stop during a long export (3600 turntable frames at 256 px): control back at once, the export in its own
        # row with Skip export; the next run starts meanwhile, without the previous run's "Stopping…" line; Skip
        # export ends the old export there, and the next run ends.
        _start_run(d, steps=400, preview_every=50, prompt="a snowman",
                   more=("export.turntable_frames=3600", "export.turntable_size=256"))
        _until(d, _has_text("lucid-status", "Running — step"), "the long-export run to train")
        _click(d, "lucid-stop")
        _until(d, _has_text("lucid-export-row", "Exporting the stopped run “a snowman” in the background"),
               "the export's own row")
        _until(d, lambda d: _js(d, "return document.getElementById('lucid-skip-export').offsetParent !== null"),
               "Skip export offered")
        _until(d, _has_text("lucid-generate", "Generate"), "Generate back while the export goes on")
        _start_run(d, steps=20, preview_every=10)
        _until(d, lambda d: "Stopping" not in _text(d, "lucid-control-msg"), "the old line to go")
        _until(d, _has_text("lucid-status", "Running — step"), "the next run to train while the export goes on")
        exporting = next(v for v in jobs.views() if v.prompt == "a snowman")
        assert exporting.state == "exporting", exporting.state
        assert "Exporting the stopped run" in _text(d, "lucid-export-row")
        _shot(d, "export_row_beside_the_next_run")
        _click(d, "lucid-skip-export")
        _until(d, _has_text("lucid-export-row", "Export of the stopped run “a snowman”"), "the export to end on Skip")
        skipped = jobs.view(exporting.id)
        assert skipped.state == "done" and {"ply", "config"} <= set(skipped.files) and "video" not in skipped.files
        _until(d, _has_text("lucid-status", "Done"), "the next run to finish")
        assert jobs.views()[-1].outcome == "done"
        assert sorted(r.prompt for r in list_runs(jobs.outputs)) == ["a red toy car", "a red toy car", "a snowman"]

        # 6. The guidance lab: the A/B run's final views side by side with its table; the inspector's grid.
        _tab(d, "lab")
        _click(d, "A/B run")
        _set_text(d, "#lucid-ab-extra textarea", "\n".join(TINY_OVERRIDES))
        _set_text(d, "#lucid-ab-steps input", "3")
        _click(d, "lucid-ab-run")
        _until(d, lambda d: re.search(r"state\s*done\s*done", _text(d, "lucid-ab-table")), "both A/B runs done")
        _until(d, lambda d: re.search(r"A to B \(dB\)\s*(\d+\.\d+|identical)", _text(d, "lucid-ab-table")),
               "the PSNR between the A/B runs' final views")
        _until(d, lambda d: _js(d, "return !!document.querySelector('#lucid-ab-a img[src]') "
                                   "&& !!document.querySelector('#lucid-ab-b img[src]')"), "both sides' views")
        assert _js(d, """const a = document.getElementById('lucid-ab-a').getBoundingClientRect();
            const b = document.getElementById('lucid-ab-b').getBoundingClientRect();
            return Math.abs(a.top - b.top) < 2 && a.right <= b.left + 1 && a.width > 500;"""), "side by side"
        assert min(_image_fill(d, "lucid-ab-a"), _image_fill(d, "lucid-ab-b")) > 0.95, "at full size in their boxes"
        _js(d, "document.getElementById('lucid-ab-a').scrollIntoView()")
        _shot(d, "lab_ab")
        _js(d, "window.scrollTo(0, 0)")
        _click(d, "lucid-inspect")
        _until(d, lambda d: _js(d, "return !!document.querySelector('#lucid-inspect-grid img[src]')"),
               "the inspector's grid", timeout_s=TIMEOUT_S * 2)
        grid = _js(d, """const i = document.querySelector('#lucid-inspect-grid img');
            const r = i.getBoundingClientRect(), box = document.getElementById('lucid-inspect-grid');
            return {shown: r.width / i.naturalWidth, top_gap: r.top - box.getBoundingClientRect().top};""")
        assert grid["shown"] > 0.99 and grid["top_gap"] >= 0, grid  # at its own size, nothing laid over its header
        _js(d, "document.getElementById('lucid-inspect-grid').scrollIntoView()")
        _shot(d, "lab_inspector")
        print(f"first preview {first_preview_s:.2f} s after Generate; screenshots in {SCREENSHOTS}")
    finally:
        demo.close()
        jobs.close()
