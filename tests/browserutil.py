"""A real headless browser for tests of the HTML report: Debian's chromium and chromium-driver
(scripts/bootstrap.sh installs them), driven by Selenium with both paths given, so Selenium
Manager never looks for (or downloads) a driver or a browser.

Every request the page makes is logged (the DevTools performance log, Network.* events), and the
browser's proxy is an address where nothing listens: a page that reached for the network would
show a request to a non-file URL and a failed load. Under CI=true a missing browser fails the
test (tests/conftest.py's require_service), elsewhere it skips.

    python -m tests.browserutil REPORT.html OUT.png   # a screenshot (docs/report.png)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing answers a browser there


def browser_problem() -> str | None:
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (apt-get install {pkg}; scripts/bootstrap.sh does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tp-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        f"--proxy-server={DEAD_PROXY}",
        "--proxy-bypass-list=<-loopback>",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        yield driver
    finally:
        try:
            driver.quit()  # ends chromedriver and every browser process it started
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def open_report(driver: Any, path: Path, timeout: float = 60) -> dict[str, Any]:
    """Load the page and wait until its charts are drawn (window.tpReady) or it says why not
    (window.tpError); returns {"ready", "error"}."""
    driver.get("about:blank")
    driver.get_log("performance"), driver.get_log("browser")  # drop what the start page did
    driver.get(Path(path).resolve().as_uri())
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = driver.execute_script("return {ready: window.tpReady === true, error: window.tpError || null}")
        if state["ready"] or state["error"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the report did not finish drawing in {timeout:.0f} s")


def console_errors(driver: Any) -> list[str]:
    return [
        f"{e.get('level')}: {e.get('message')}"
        for e in driver.get_log("browser")
        if e.get("level") in ("SEVERE", "ERROR")
    ]


def network_requests(driver: Any) -> tuple[list[str], list[str]]:
    """(URL of every request the page made, messages of every failed load), from the
    DevTools log."""
    urls, failed = [], []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
        elif msg["method"] == "Network.loadingFailed":
            failed.append(json.dumps(msg["params"]))
    return urls, failed


def screenshot(report: Path, out: Path, width: int = 1100, height: int = 1150) -> None:
    """The top of the page (the sweep's state and the accuracy chart), charts drawn."""
    with chromium(width, height) as driver:
        state = open_report(driver, report)
        if not state["ready"]:
            raise SystemExit(f"the report did not draw: {state['error']}")
        driver.save_screenshot(str(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m tests.browserutil REPORT.html OUT.png")
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
