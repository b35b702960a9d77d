"""Headless Chromium for the HTML reports: open a page at a fixed viewport, measure whether its tables fit, and
screenshot it. Used by tests/test_report_layout.py and scripts/screenshot_report.py.

It drives Debian's chromium + chromium-driver through Selenium (the `test` extra), downloads no browser, and
gives every session a fresh profile that is deleted afterwards.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")

# Every table's right edge and width, the width of the box it sits in (report.table's .table, which scrolls a
# table too wide for the page), and the page's own widths.
MEASURE_JS = """
const doc = document.documentElement;
return {
  clientWidth: doc.clientWidth, scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth,
  scrollHeight: doc.scrollHeight,
  tables: Array.from(document.querySelectorAll('table')).map((t, i) => {
    const r = t.getBoundingClientRect(), s = t.closest('section'), h = s && s.querySelector('h2');
    const box = t.parentElement;
    return {index: i, section: h ? h.textContent : '', columns: t.rows.length ? t.rows[0].cells.length : 0,
            left: r.left, right: r.right, width: r.width,
            boxWidth: box.clientWidth, boxScrollWidth: box.scrollWidth};
  }),
};
"""


def missing() -> str | None:
    """Why a browser cannot be started here (None when it can)."""
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium whose viewport is exactly width x height CSS pixels (device scale 1)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="rlaif-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.implicitly_wait(0)
        set_viewport(driver, width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver, width: int, height: int) -> None:
    """The viewport itself, not the window (whose frame would take some of the width)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def open_file(driver, path: Path) -> dict:
    """Load a local HTML file and return MEASURE_JS's figures once it has laid out."""
    driver.get(Path(path).resolve().as_uri())
    driver.execute_script("return document.fonts ? document.fonts.ready.then(() => true) : true")
    return driver.execute_script(MEASURE_JS)


def overflows(layout: dict) -> list[str]:
    """What sticks out sideways: a table that ends past the page's right edge or is wider than the box it sits in
    (so that box scrolls), and the page itself scrolling sideways."""
    width = layout["clientWidth"]
    bad = [f"table {t['index']} ({t['columns']} columns, section {t['section']!r}) is {t['width']:.0f} px wide "
           f"and ends at {t['right']:.0f} px; its box is {t['boxWidth']} px, the page {width} px"
           for t in layout["tables"] if t["right"] > width or t["boxScrollWidth"] > t["boxWidth"]]
    if layout["scrollWidth"] > width:
        bad.append(f"the page scrolls sideways: scrollWidth {layout['scrollWidth']} > clientWidth {width}")
    return bad


def screenshot(driver, out: Path, width: int = 1280, max_height: int | None = None) -> Path:
    """A PNG of the loaded page, `width` wide and the page's full height (cut at max_height if given)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    if max_height:
        height = min(height, max_height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    out = Path(out)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out
