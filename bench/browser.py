"""A headless Chromium for the report's screenshot and its rendering test.

Found in this order: $WSOLBENCH_CHROMIUM, then the first of `CANDIDATES` on the PATH (Debian's
`chromium-headless-shell` and `chromium` packages, other distributions' names). Playwright
drives it when installed (`pip install playwright`; its own browser download is not needed:
the system browser is passed as `executable_path`); without Playwright the screenshot falls
back to the browser's `--screenshot` command line.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get install chromium-headless-shell (Debian) or set WSOLBENCH_CHROMIUM to a Chromium binary"


def find_chromium() -> str | None:
    env = os.environ.get("WSOLBENCH_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """None when a browser is available, else why not (names what was looked for)."""
    if os.environ.get("WSOLBENCH_CHROMIUM") and find_chromium() is None:
        return f"WSOLBENCH_CHROMIUM={os.environ['WSOLBENCH_CHROMIUM']} is not a file"
    if find_chromium() is None:
        return f"no headless Chromium: none of {', '.join(CANDIDATES)} is on the PATH ({INSTALL_HINT})"
    return None


def have_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def open_page(playwright, html: Path, width: int = 1280):
    """(browser, page) with `html` loaded, in the system Chromium."""
    browser = playwright.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(Path(html).resolve().as_uri())
    page.wait_for_load_state("load")
    return browser, page


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> Path:
    """Full-page PNG of `html` (Playwright), or a `width` x `height` one (command line)."""
    why = missing_reason()
    if why:
        raise FileNotFoundError(f"cannot take a screenshot: {why}")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if have_playwright():
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser, page = open_page(p, html, width)
            page.screenshot(path=str(png), full_page=True)
            browser.close()
        return png
    cmd = [find_chromium(), "--headless", "--no-sandbox", "--hide-scrollbars", f"--window-size={width},{height}",
           f"--screenshot={png}", Path(html).resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-500:]}")
    return png
