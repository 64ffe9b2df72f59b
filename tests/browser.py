"""Headless Chromium for the tests that look at pages (the report's, the dashboard's).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); a test that
needs them fails, never skips, without them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

SCREENSHOTS = Path(tempfile.gettempdir()) / "ganhpo-report-screenshots"  # for a person to look at
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium driven by Selenium (the ``browser`` fixture's), its profile in
    ``profile``."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail(
            "headless Chromium is needed: apt-get install -y chromium chromium-driver "
            "(.ci/run does it)",
            pytrace=False,
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def errors(driver: Any) -> list[str]:
    """The page's console errors."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Image.Image:
    """Save the window under ``SCREENSHOTS`` and return it; a drawn page has many colors."""
    SCREENSHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    shot = Image.open(SCREENSHOTS / f"{name}.png")
    assert shot.size[0] >= 1000 and len(shot.getcolors(1 << 16) or ()) > 10, name
    return shot
