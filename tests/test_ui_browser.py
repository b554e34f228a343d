"""The web dashboard in a real browser (issue 12 item 4): headless Chromium, driven by
Selenium through Debian's chromedriver (no Selenium Manager download), against one real
daemon with content: repos downloaded through the mirror with huggingface_hub, releases,
an alias with a canary and its history made with the `mirror release` and `mirror alias`
commands, metrics recorded with `mirror metrics record`. The test signs in through the
form, opens every page and reads the browser's console (a script, an inline style or a
missing resource would be an error there, the CSP forbids the first two), checks that the
overview's numbers are exactly `mirror stats --json`, clicks from the overview to a file,
checks the phone-width layout does not overflow, and writes screenshots of the overview
(laptop and phone width) to the test's temp directory.

Skips, saying why, when chromium, chromedriver or selenium is missing; `.ci/run`
installs them, so CI never skips.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from tests.hubenv import MiB, rand  # isort: skip

import pytest
from huggingface_hub import hf_hub_download, snapshot_download

from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = "team/model"
XSS = "approved <script>console.error('xss')</script>"
LAPTOP, PHONE = (1280, 900), (390, 844)
STATS = ("files", "logical_bytes", "stored_bytes", "unique_raw_bytes", "chunks", "dedup_ratio", "compression_ratio",
         "stored_over_logical", "upstream_bytes_fetched", "bytes_served")


def _browser_parts() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"the browser test needs {' and '.join(missing)}: apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("the browser test needs selenium: pip install -e '.[test]'")


@pytest.fixture
def browser() -> Iterator[Any]:
    _browser_parts()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _cli(m: MirrorDaemon, *argv: str) -> Any:
    p = subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path), "--json"],
                       capture_output=True, text=True, env=clean_env(), timeout=90)
    assert p.returncode == 0, (argv, p.stderr)
    return json.loads(p.stdout)


def _round(m: MirrorDaemon, *commands: tuple[str, ...]) -> list[Any]:
    """Independent commands at once (each is a process that opens the node)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda argv: _cli(m, *argv), commands))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_the_dashboard_in_headless_chromium(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    weights = rand(2 * MiB, 7)
    with FakeHub.running() as hub:
        v1 = hub.commit(REPO, {"config.json": b'{"v": 1}', "model.safetensors": weights})
        v2 = hub.commit(REPO, {"config.json": b'{"v": 2}', "model.safetensors": weights[: MiB] + rand(MiB, 8)})
        hub.commit("team/other", {"model.safetensors": weights})  # the same bytes in another repo: dedup
        m = MirrorDaemon(tmp_path / "data", hub.url)
        m.start()
        try:
            for rev in (v1, v2):
                snapshot_download(REPO, revision=rev, endpoint=m.url, cache_dir=tmp_path / "hf", token=False)
            hf_hub_download("team/other", "model.safetensors", endpoint=m.url, cache_dir=tmp_path / "hf", token=False)
            aud = _round(
                m, ("token", "create", "--name", "ops", "--role", "auditor"),
                ("release", "create", REPO, "v1.0.0", "--revision", v1, "--note", "first"),
                ("release", "create", REPO, "v1.1.0", "--revision", v2, "--param", "lr=3e-4"),
                ("metrics", "record", f"{REPO}@{v1}", "accuracy=0.90", "accuracy=0.91", "accuracy=0.92"),
                ("metrics", "record", f"{REPO}@{v2}", "accuracy=0.95", "accuracy=0.96", "accuracy=0.97"),
            )[0]["token"]
            _cli(m, "alias", "set", REPO, "prod", "v1.0.0", "--reason", XSS)
            _cli(m, "alias", "canary", REPO, "prod", "--to", "v1.1.0", "--percent", "10", "--step", "10", "--every",
                 "1h", "--gate", "accuracy >= 0.9")
            _check_pages(browser, m, aud, v1, tmp_path, By)
        finally:
            m.stop()


def _follow(browser: Any, element: Any, By: Any) -> None:
    """Click a link or a submit button and wait (bounded) until the next page has loaded:
    `click` returns before the navigation, so reading the page at once may read the old
    one, or a page whose URL the driver has not taken up yet."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(old))
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _severe(browser: Any) -> list[str]:
    return [f"{e['level']} {e['message']}" for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _check_pages(browser: Any, m: MirrorDaemon, aud: str, v1: str, tmp_path: Path, By: Any) -> None:
    # Sign in through the form, as a person would.
    browser.get(f"{m.url}/ui/login?next=/ui")
    browser.find_element(By.ID, "token").send_keys(aud)
    _follow(browser, browser.find_element(By.ID, "sign-in"), By)
    assert browser.current_url == f"{m.url}/ui", browser.page_source[:500]
    assert "ops (auditor)" in browser.find_element(By.CSS_SELECTOR, "form.who").text
    assert _severe(browser) == []

    # Every page loads, titled, without an error on the console.
    pages = ["/ui", "/ui?hours=1", "/ui/repos", f"/ui/repo?repo={REPO}", f"/ui/revision?repo={REPO}&rev={v1}",
             f"/ui/file?repo={REPO}&rev={v1}&path=model.safetensors", "/ui/releases", f"/ui/alias?repo={REPO}&alias=prod",
             "/ui/peers", "/ui/sync", "/ui/lifecycle", "/ui/audit"]
    for page in pages:
        browser.get(m.url + page)
        assert browser.title.endswith("model-mirror") and not browser.find_elements(By.ID, "error-message"), page
        assert browser.find_element(By.TAG_NAME, "h1").text, page
        assert _severe(browser) == [], page

    # The alias page: the canary's share, its metrics compared, the history with the reason shown as text.
    browser.get(f"{m.url}/ui/alias?repo={REPO}&alias=prod")
    assert browser.find_element(By.ID, "canary-weight").get_attribute("data-value") == "10.0"
    row = browser.find_element(By.CSS_SELECTOR, '#compare tr[data-metric="accuracy"]')
    assert "B is better" in row.text, row.text
    actions = [r.get_attribute("data-action") for r in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert actions[-1] == "set" and len(actions) == 2, actions
    assert XSS in [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#history .reason")]

    # The overview's numbers are exactly `mirror stats --json` (counters are flushed every
    # 2 s: read both again while they differ, a bounded number of times).
    for _attempt in range(4):
        browser.get(f"{m.url}/ui")
        shown = {k: browser.find_element(By.ID, f"stat-{k}").get_attribute("data-value") for k in STATS}
        stats = _cli(m, "stats")
        if all(float(shown[k]) == stats[k] for k in STATS):
            break
        time.sleep(1)
    assert {k: float(shown[k]) for k in STATS} == {k: float(stats[k]) for k in STATS}
    assert stats["files"] >= 4 and stats["bytes_served"] >= stats["logical_bytes"] > 0
    ratio = browser.find_element(By.ID, "hit-ratio").get_attribute("data-value")
    assert float(ratio) == max(0.0, 1 - stats["upstream_bytes_fetched"] / stats["bytes_served"])
    # Every byte was served after the daemon started, so the chart holds all of it.
    totals = {e.get_attribute("data-series-total"): int(float(e.get_attribute("data-value")))
              for e in browser.find_elements(By.CSS_SELECTOR, "[data-series-total]")}
    assert totals["served"] == stats["bytes_served"] and totals["upstream"] == stats["upstream_bytes_fetched"]
    saved = {e.get_attribute("data-part"): int(e.get_attribute("data-value"))
             for e in browser.find_elements(By.CSS_SELECTOR, "#savings-chart rect[data-part]")}
    assert saved["stored"] == stats["stored_bytes"] and saved["dedup"] == stats["logical_bytes"] - stats["unique_raw_bytes"]

    shot = tmp_path / "overview.png"
    assert browser.save_screenshot(str(shot)) and _png_size(shot)[0] >= 800

    # Overview -> repo -> revision -> file, by clicking.
    _follow(browser, browser.find_element(By.CSS_SELECTOR, "#top-repos").find_element(By.LINK_TEXT, REPO), By)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith(REPO)
    _follow(browser, browser.find_element(By.CSS_SELECTOR, f'a.sha[title="{v1}"]'), By)
    assert browser.find_element(By.ID, "commit").text == v1
    _follow(browser, browser.find_element(By.LINK_TEXT, "model.safetensors"), By)
    assert browser.find_element(By.ID, "file-path").text == "model.safetensors"
    assert browser.find_element(By.ID, "file-size").get_attribute("data-value") == str(2 * MiB)
    assert browser.find_element(By.ID, "file-cached").text == "cached"
    assert browser.find_element(By.ID, "file-identity").text.startswith(("sha256:", "sha1:"))
    assert _severe(browser) == []

    # A phone: nothing wider than the screen (wide tables scroll inside their box).
    browser.set_window_size(*PHONE)
    for page in ("/ui", "/ui/repos", f"/ui/alias?repo={REPO}&alias=prod", "/ui/audit"):
        browser.get(m.url + page)
        wide = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, (page, wide)
    browser.get(f"{m.url}/ui")
    phone = tmp_path / "overview-phone.png"
    assert browser.save_screenshot(str(phone)) and _png_size(phone)[0] < 800
    assert _severe(browser) == []
    print(f"screenshots: {shot} {phone}")
