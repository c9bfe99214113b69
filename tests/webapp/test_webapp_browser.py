"""End to end in a real browser: headless Chromium opens the app (started with `glucose-forecast
webapp`, as `make webapp` does) served against the real local stack behind nginx, uploads a CSV and
finds the plot and the forecast values, which must equal the SavedModel's. Saves a screenshot to
build/test-output/webapp-e2e.png."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from webapp_helpers import EXAMPLES, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = REPO / "build" / "test-output" / "webapp-e2e.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def webapp_url(stack, tmp_path):
    """The app served by the project's CLI on a free port, pointing at the stack's nginx gateway."""
    port = free_port()
    log = (tmp_path / "webapp.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "webapp", "--port", str(port), "--gateway-url", stack.gateway_url],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "webapp.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the web app did not start:\n" + (tmp_path / "webapp.log").read_text()
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the streamlit it started, nothing else
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Debian chromium and chromium-driver are required (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}")
    options.add_argument("--window-size=1440,900")  # a laptop screen
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_and_forecast_in_chromium(webapp_url, browser, config, model_predict):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from webapp.validation import prepare_upload

    example = EXAMPLES / "timeseries-example.csv"
    wait = WebDriverWait(browser, 90)
    browser.get(webapp_url)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Your glucose in 30 minutes"))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Model version 1 of hupa0002p will answer"))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))).send_keys(str(example))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "is valid (time-series CSV)"))
    button = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Forecast for hupa0002p')]")))
    button.click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer")))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Download the forecasts"))
    time.sleep(1.0)  # let the plot finish its first draw before the screenshot

    # The numbers on the page are the model's.
    prepared = prepare_upload(example.name, example.read_bytes(), config)
    expected = model_predict("hupa0002p", prepared.X)
    traces = browser.execute_script(
        "const gd = document.querySelector('.js-plotly-plot');"
        # _fullData: the traces as plotly drew them (typed arrays decoded)
        "return gd._fullData.map(t => ({name: t.name, y: Array.from(t.y)}));"
    )
    forecast = next(t for t in traces if t["name"].startswith("forecast ("))
    np.testing.assert_allclose(np.asarray(forecast["y"], dtype=float), expected, rtol=1e-5, atol=1e-3)
    assert any(t["name"] == "measured glucose" for t in traces)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"{expected[-1]:.0f} mg/dL" in body  # the latest forecast, as a metric
    assert "Model MAE" in body and "Persistence MAE" in body
    assert "No forecast this time" not in body and "cannot be used" not in body
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script(
        "const m = document.querySelector('section.main, [data-testid=\"stMain\"]');"
        "return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0);"
    )
    browser.set_window_size(1440, min(max(int(height) + 40, 900), 3000))
    time.sleep(0.8)
    assert browser.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 50_000
