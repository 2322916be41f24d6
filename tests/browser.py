"""Headless Chromium for the tests that open a page (``scripts/setup.sh --test`` installs
chromium, chromedriver and selenium); never lets selenium-manager look anything up."""
from __future__ import annotations

import os
import time
from pathlib import Path


def chrome(tmp_path: Path, width: int = 1400, height: int = 1000):
    os.environ["SE_OFFLINE"] = "true"      # never let selenium-manager look anything up
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--window-size={width},{height}",
              f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(cond, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def visible_json_blocks(driver) -> list[str]:
    """Text of every visible element that starts like JSON (``{`` or ``[{``)."""
    return driver.execute_script("""
        const out = [];
        for (const e of document.body.querySelectorAll('*')) {
          const r = e.getBoundingClientRect();
          if (!r.width || !r.height || getComputedStyle(e).visibility === 'hidden') continue;
          const t = (e.innerText || '').trim();
          if (t.startsWith('{') || t.startsWith('[{')) out.push(e.tagName + ': ' + t.slice(0, 80));
        }
        return out;""")
