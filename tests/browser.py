"""Headless Chromium for the live picture's tests and benchmark.

Debian's ``chromium`` and ``chromium-driver`` (README, "Test"; .ci/run
installs them), driven with Selenium. WebGL2 runs on SwiftShader, Chromium's
software GPU, so no graphics card is needed.
"""

from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest

# Where Debian puts them; $CHROMIUM and $CHROMEDRIVER override.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")


def missing() -> str | None:
  """Why no headless Chromium can start here, or None."""
  for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
      return (f"no {name} at {path} (apt-get install chromium chromium-driver, or set "
              f"${name.upper()})")
  return None


def require_chromium() -> None:
  """Skips the test with the reason where there is no Chromium, and fails
  instead under CI (CI=true), which installs it."""
  reason = missing()
  if reason:
    if os.environ.get("CI"):
      pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


def start(width: int = 1280, height: int = 900):
  """A headless Chromium with its console log kept (``driver.get_log``)."""
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for argument in ("--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                   "--enable-unsafe-swiftshader", "--disable-dev-shm-usage",
                   f"--window-size={width},{height}", "--force-device-scale-factor=1"):
    options.add_argument(argument)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def decode(text: str, dtype, shape) -> np.ndarray:
  """A base64 array the page's test hooks return."""
  return np.frombuffer(base64.b64decode(text), dtype).reshape(shape)
