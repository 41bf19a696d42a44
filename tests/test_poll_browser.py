"""The teacher's live histogram in a real browser: it redraws on its own as answers arrive.

The app runs under ``streamlit run`` with its poll in a fresh database: a SQLite file, then one
on a real PostgreSQL server (``tests/poll_db_support.py``). In headless chromium the teacher opens
the Classroom page and opens a class; the test then writes students' answers through the app's
own ``Poll.submit`` into the same database and, without touching the page again, reads what the
chart draws (each bar's count from Vega's ARIA label, and its height in pixels) until it equals
the histogram of what was sent. A failure saves a screenshot under the test's tmp folder.
"""

from __future__ import annotations

import re
import time

import pytest

from app import poll
from app.predict import QUESTIONS
from tests.browser_support import chromium_page, skip_without_browser, streamlit_app
from tests.poll_db_support import BACKENDS, poll_database, postgres_server

pytestmark = pytest.mark.browser
KEY = "delete_hurts"  # a question answered on a 0..1 scale (relative depth)
#: Generous bound on one redraw: the fragment reruns every 3 s, on a shared, loaded machine.
REDRAW_S = 60

#: Every bar of the visible histograms: its count and start (Vega's ARIA label) and its height.
BARS = """
() => Array.from(document.querySelectorAll('.vega-embed')).filter(el => el.offsetParent !== null)
  .map(el => Array.from(el.querySelectorAll('g.mark-rect.role-mark path')).map(b => {
    const label = b.getAttribute('aria-label') || '';
    const num = (k) => { const m = label.match(new RegExp('\\\\b' + k + ': (-?[0-9.e-]+)'));
                         return m ? Number(m[1]) : null; };
    return {start: num('start'), count: num('count'), height: b.getBoundingClientRect().height};
  }))
"""


@pytest.fixture(scope="module")
def pg_server():
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def db_url(request, tmp_path_factory):
    """The poll database the app and the test share: SQLite, then PostgreSQL."""
    skip_without_browser()
    with poll_database(request.param, tmp_path_factory.mktemp("poll"), request) as url:
        yield url


@pytest.fixture(scope="module")
def server(db_url):
    with streamlit_app(
        {"STAGESCOPE_LIVE_MODELS": "tiny-gpt2", "STAGESCOPE_POLL_URL": db_url}
    ) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as pg:
        yield pg


def _expected(values: list[float]) -> list[tuple[float, int]]:
    q = QUESTIONS[KEY]
    return [(round(b["start"], 6), b["count"]) for b in poll.histogram(values, q.lo, q.hi)]


def _wait_for_bars(pg, values: list[float]) -> list[dict]:
    """Wait, without touching the page, until the one histogram draws ``values``."""
    want, t0, seen = _expected(values), time.time(), None
    while time.time() - t0 < REDRAW_S:
        charts = pg.evaluate(BARS)
        if len(charts) == 1:
            seen = charts[0]
            if [(round(b["start"], 6), b["count"]) for b in seen] == want:
                return seen
        time.sleep(0.25)
    raise AssertionError(f"after {REDRAW_S} s the chart draws {seen}, not {want}")


def test_teacher_histogram_refreshes_by_itself(server, page, db_url, tmp_path):
    try:
        page.goto(server + "/classroom")
        page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
        page.get_by_role("tab", name="Teacher").click()
        page.locator(".st-key-cls_open button").click()
        page.wait_for_selector("text=No guesses yet", timeout=60_000)
        main = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
        code = re.search(rf"Class code:\s*([A-Z2-9]{{{poll.CODE_LEN}}})\b", main).group(1)
        assert page.locator(".vega-embed").count() == 0

        # From here on the test never touches the page: only the database changes.
        engine = poll.engine_from_env({"STAGESCOPE_POLL_URL": db_url})
        p = poll.Poll(engine)
        students = [poll.new_token() for _ in range(7)]
        first = [0.12, 0.55, 0.58, 0.91]
        for token, v in zip(students, first):
            p.submit(code, token, KEY, v)
        _wait_for_bars(page, first)
        page.wait_for_selector("text=4 student(s) answered", timeout=REDRAW_S * 1000)

        # More students, and one revision that moves an answer to another bin.
        more = {students[4]: 0.05, students[5]: 0.57, students[6]: 0.99, students[0]: 0.33}
        for token, v in more.items():
            p.submit(code, token, KEY, v)
        now = [0.33, 0.55, 0.58, 0.91, 0.05, 0.57, 0.99]
        assert sorted(p.my_answer(code, t, KEY) for t in students) == sorted(now)
        bars = _wait_for_bars(page, now)
        page.wait_for_selector("text=7 student(s) answered", timeout=REDRAW_S * 1000)
        assert page.locator('[data-testid="stException"]').count() == 0
    except BaseException:
        page.screenshot(path=str(tmp_path / "classroom.png"), full_page=True)
        raise
    # What is drawn is the data: heights proportional to the counts, empty bins flat.
    unit = max(b["height"] / b["count"] for b in bars if b["count"])
    assert unit > 10  # a student is a visible step of the bar
    for b in bars:
        assert b["height"] == pytest.approx(b["count"] * unit, abs=1.0), bars
    engine.dispose()
