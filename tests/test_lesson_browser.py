"""A lesson in a real browser: a step's link opens its page in state, Next rewrites the URL."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from app import lessons
from tests.browser_support import ROOT, chromium_page, skip_without_browser, streamlit_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app under ``streamlit run`` (its own poll database), as a browser would reach it."""
    skip_without_browser()
    poll = tmp_path_factory.mktemp("poll") / "poll.sqlite"
    with streamlit_app(
        {"STAGESCOPE_LIVE_MODELS": "tiny-gpt2", "STAGESCOPE_POLL_DB": str(poll)}
    ) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as pg:
        yield pg


def _wait_rendered(pg) -> None:
    pg.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
    time.sleep(0.5)
    deadline = time.time() + 120
    while time.time() < deadline and pg.locator('[data-testid="stStatusWidget"]').count():
        time.sleep(0.3)


def _href(pg) -> str:
    # Streamlit moves between pages with the History API; Playwright's page.url can lag behind.
    return pg.evaluate("window.location.href")


def _wait_url(pg, path: str, timeout: float = 60) -> dict[str, list[str]]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        url = urlsplit(_href(pg))
        if url.path.rstrip("/").endswith(path):
            return parse_qs(url.query)
        time.sleep(0.3)
    raise AssertionError(f"the browser did not reach {path}: {_href(pg)}")


def test_lesson_step_links_and_next_in_projector_mode(server, page):
    lesson = lessons.load(ROOT / "data" / "lessons" / "four_stages.toml")
    k = next(i for i, s in enumerate(lesson.steps, 1) if s.page == "delete_swap")
    page.goto(server + lessons.step_link(lesson, k, projector=True))
    _wait_rendered(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    bar = page.locator(".st-key-lesson_bar")
    assert f"step {k} of {len(lesson.steps)}" in bar.inner_text()
    assert lesson.steps[k - 1].question in bar.inner_text()
    # projector mode: larger type, no sidebar
    assert page.evaluate("getComputedStyle(document.documentElement).fontSize") == "22px"
    assert page.locator('[data-testid="stSidebar"]').is_hidden()
    # the page took the step's widget state from the URL
    qs = parse_qs(urlsplit(_href(page)).query)
    for key, value in lesson.steps[k - 1].query_params().items():
        assert qs.get(key) == (value if isinstance(value, list) else [value]), key

    page.locator(".st-key-lesson_next a").click()  # a page link: also opens in a new tab
    nxt = lesson.steps[k]
    qs = _wait_url(page, f"/{nxt.page}")
    _wait_rendered(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert qs["lesson"] == [lesson.id] and qs["step"] == [str(k + 1)]
    assert qs.get("projector") == ["1"]
    for key, value in nxt.query_params().items():
        assert qs.get(key) == (value if isinstance(value, list) else [value]), key
    assert f"step {k + 1} of" in page.locator(".st-key-lesson_bar").inner_text()
