"""The app once through a real headless browser (Debian's chromium + chromium-driver, driven by Selenium).

Skipped with the reason when chromium, chromedriver or selenium is missing (``.ci/run`` installs them).
Screenshots land in ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lucid_app.run_folders import list_runs
from tests.app_harness import TINY_OVERRIDES, launch_app

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_S = 90

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
                 "--disable-dev-shm-usage", "--window-size=1400,1600", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_generate_in_a_real_browser(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    demo, jobs, url = launch_app(tmp_path / "outputs")
    try:
        wait = WebDriverWait(browser, TIMEOUT_S)
        browser.get(url)
        prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#lucid-prompt textarea")))
        prompt.clear()
        prompt.send_keys("a red toy car")
        browser.find_element(By.XPATH, "//button[contains(., 'Advanced')]").click()
        extra = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#lucid-extra textarea")))
        extra.send_keys("\n".join([*TINY_OVERRIDES, "optim.steps=200", "export.preview_every=2"]))
        browser.find_element(By.ID, "lucid-generate").click()
        browser.find_element(By.XPATH, "//button[contains(., 'Advanced')]").click()

        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lucid-preview img[src]"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "lucid-status"), "Running — step"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "lucid-loss-plot"), "guidance"))  # the plot's legend
        ARTIFACTS.mkdir(exist_ok=True)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "app_running.png"))


        # Leaving the page ends the session: its running job stops and exports what exists.
        browser.get("about:blank")
        view = jobs.views()[-1]
        while not view.finished:
            previous = view.version
            view = jobs.wait(view.id, previous, TIMEOUT_S)
            assert view.version != previous, f"the closed session's job stayed {view.state}"
        assert view.outcome == "stopped" and "ply" in view.files

        # A new page reopens the run from the list of past runs: splat viewer, turntable, downloads.
        browser.get(url)
        wait.until(ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Past runs')]"))).click()
        wait.until(ec.element_to_be_clickable((By.ID, "lucid-open-run"))).click()
        wait.until(lambda d: d.find_element(By.XPATH, "//button[contains(., 'Download .ply')]").is_displayed())
        wait.until(ec.text_to_be_present_in_element((By.ID, "lucid-banner"), "Showing the past run"))
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(ARTIFACTS / "app_reopened.png"))
        assert (ARTIFACTS / "app_running.png").stat().st_size > 10_000
        assert [r.prompt for r in list_runs(jobs.outputs)] == ["a red toy car"]
    finally:
        demo.close()
        jobs.close()
