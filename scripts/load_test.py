"""Load test: N concurrent browser sessions drive the app's live panels; prints JSON figures.

Bounded in time and count, loopback only. Each session is a headless Chromium page (Playwright,
``/usr/bin/chromium``) that opens one live panel and presses its Run button again and again until
the time or the request budget is spent. A request's latency is from the click to the end of the
script run it started; it counts as an error when the page shows an exception or a warning
instead of the result ("busy", "time limit", a model that cannot load ...).

Usage::

    python scripts/load_test.py --start --sessions 20 --duration 180
    python scripts/load_test.py --url http://127.0.0.1:8501 --sessions 4 --duration 60

Prints one JSON object: sessions, requests, errors, p50_s, p95_s, max_s, per panel counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
#: (page slug, Run button key) of the live panels driven.
PANELS = [
    ("logit_lens", "live_lens_df_run"),
    ("early_layers", "early_live_run"),
    ("delete_swap", "ds_live_run"),
]
MAX_SESSIONS, MAX_DURATION_S, MAX_REQUESTS = 40, 600, 5000
WATCH_STATE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__states = [];
  new MutationObserver(() => window.__states.push(app.getAttribute('data-test-script-state')))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
RUN_ENDED = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return window.__states.includes('running')
    && app.getAttribute('data-test-script-state') === 'notRunning';
}"""
OUTCOME = """() => {
  const text = (sel) => [...document.querySelectorAll(sel)].map((e) => e.innerText);
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  if (text('[data-testid="stCaptionContainer"]').some((t) => t.includes('Computed live in')))
    return 'ok';
  const alerts = text('[data-testid="stAlert"]');
  return alerts.length ? 'warning: ' + alerts.join(' | ').slice(0, 160) : 'no result';
}"""


def _loopback(url: str) -> str:
    host = urllib.parse.urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--url must be a loopback address, got {host!r}")
    return url.rstrip("/")


def _start_app(models: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STAGESCOPE_LIVE_MODELS": models}
    cmd = [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py"]
    cmd += [f"--server.port={port}", "--server.address=127.0.0.1", "--server.headless=true"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start: " + proc.stderr.read().decode()[-1000:])


async def _click(page, button, timeout_s: float) -> tuple[float, str]:
    """Press Run; return the latency to the end of the script run and what the page shows."""
    await page.evaluate("() => { window.__states = []; }")
    start = time.monotonic()
    try:
        await button.click(timeout=timeout_s * 1000)
        await page.wait_for_function(RUN_ENDED, timeout=timeout_s * 1000, polling=50)
        outcome = await page.evaluate(OUTCOME)
    except Exception as err:  # a request that never ended (or a button gone) is an error too
        outcome = f"timeout: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return time.monotonic() - start, outcome


async def _session(browser, url, panel, ready, clock, budget, out, warm):
    slug, key = panel
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{url}/{slug}", timeout=180_000)
        button = page.locator(f".st-key-{key} button")
        await button.wait_for(timeout=180_000)
        await page.evaluate(WATCH_STATE)
        latency, outcome = await _click(page, button, 300)  # warm-up: loads the model once
        warm.append({"panel": slug, "latency_s": latency, "outcome": outcome})
    except Exception as err:  # the page itself failed to open
        out.append({"panel": slug, "latency_s": float("nan"), "outcome": f"page: {err}"[:200]})
        return
    finally:
        ready.release()
    await clock.wait()  # everyone starts together
    try:
        while time.time() < clock.until and budget[0] > 0:
            budget[0] -= 1
            latency, outcome = await _click(page, button, 300)
            out.append({"panel": slug, "latency_s": latency, "outcome": outcome})
    finally:
        await context.close()


class _Clock(asyncio.Event):
    until = 0.0


async def _drive(url: str, sessions: int, duration: float, max_requests: int):
    from playwright.async_api import async_playwright

    out: list[dict] = []
    warm: list[dict] = []
    budget = [max_requests]
    ready, clock = asyncio.Semaphore(0), _Clock()
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        tasks = [
            asyncio.create_task(
                _session(browser, url, PANELS[i % len(PANELS)], ready, clock, budget, out, warm)
            )
            for i in range(sessions)
        ]
        for _ in range(sessions):
            await ready.acquire()
        clock.until = time.time() + duration
        clock.set()
        await asyncio.gather(*tasks)
        await browser.close()
    return out, warm


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, drive the sessions, print the figures as JSON."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--url", default=None, help="a running app on a loopback address")
    ap.add_argument("--start", action="store_true", help="start the app on a free loopback port")
    ap.add_argument("--models", default="smollm2-135m", help="STAGESCOPE_LIVE_MODELS with --start")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of clicking")
    ap.add_argument("--max-requests", type=int, default=1000)
    args = ap.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise SystemExit(f"--sessions must be 1..{MAX_SESSIONS}")
    if not 1 <= args.duration <= MAX_DURATION_S:
        raise SystemExit(f"--duration must be 1..{MAX_DURATION_S} s")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        raise SystemExit(f"--max-requests must be 1..{MAX_REQUESTS}")
    if not os.path.exists(CHROMIUM):
        raise SystemExit("Debian chromium is missing: apt-get install chromium")
    proc = None
    if args.start:
        proc, url = _start_app(args.models)
    elif args.url:
        url = _loopback(args.url)
    else:
        raise SystemExit("give --url http://127.0.0.1:PORT or --start")
    t0 = time.time()
    try:
        rows, warm = asyncio.run(_drive(url, args.sessions, args.duration, args.max_requests))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    ok = [r["latency_s"] for r in rows if r["outcome"] == "ok"]
    errors = [r for r in rows if r["outcome"] != "ok"]
    figures = {
        "url": url,
        "sessions": args.sessions,
        "duration_s": round(time.time() - t0, 1),
        "requests": len(rows),
        "errors": len(errors),
        "p50_s": _pct(ok, 0.5),
        "p95_s": _pct(ok, 0.95),
        "max_s": round(max(ok), 3) if ok else None,
        "mean_s": round(statistics.fmean(ok), 3) if ok else None,
        "per_panel": {s: sum(r["panel"] == s for r in rows) for s, _ in PANELS},
        "warmup_max_s": round(max(r["latency_s"] for r in warm), 3) if warm else None,
        "warmup_errors": sum(r["outcome"] != "ok" for r in warm),
        "error_kinds": sorted({r["outcome"] for r in errors})[:10],
    }
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
