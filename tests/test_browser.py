"""A real browser (Debian chromium, headless, via Playwright) opens every page: no exception."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser
SLUGS = [p.stem.split("_", 1)[1] for p in sorted((ROOT / "pages").glob("[0-9][0-9]_*.py"))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test installs it when run as root)")
    pytest.importorskip("playwright")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STAGESCOPE_LIVE_MODELS": "tiny-gpt2"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stderr.read().decode()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _wait_rendered(pg) -> None:
    pg.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
    # Streamlit shows a status widget while the script runs; wait until it is gone.
    deadline = time.time() + 120
    while time.time() < deadline and pg.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.3)


@pytest.mark.parametrize("slug", SLUGS)
def test_every_page_opens_without_exception(server, page, slug, tmp_path):
    page.goto(f"{server}/{slug}")
    _wait_rendered(page)
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()
    shot = Path(os.environ.get("STAGESCOPE_SCREENSHOTS", tmp_path))
    shot.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot / f"{slug}.png"), full_page=True)


def test_url_reproduces_the_view(server, page):
    page.goto(f"{server}/logit_lens?hm_value=entropy")
    _wait_rendered(page)
    assert "hm_value=entropy" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
