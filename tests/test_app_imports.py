"""The app's import graph and sizes: precomputed pages never import torch; files stay small.

Loading ``app.data`` and rendering every page (live panels untouched) must leave ``torch`` out of
``sys.modules``: torch takes seconds to import, and only a live panel needs it (lazily). This runs
in a fresh interpreter, since another test in the session may have imported torch already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "pages").glob("[0-9][0-9]_*.py"))
MAX_PAGE_LINES = 150
MAX_MODULE_LINES = 400

PROBE = """
import json, sys
from pathlib import Path
from streamlit.testing.v1 import AppTest

out = {}
import app.data  # noqa: F401
out["app.data"] = "torch" in sys.modules
import app.ui, app.charts  # noqa: F401,E401
import precompute.results.publish  # noqa: F401 -- the app's Hub path (pinned results)
out["publish"] = "torch" in sys.modules
for name in sorted(p.stem for p in Path("app").glob("*_views.py")):
    __import__(f"app.{name}")
out["views"] = "torch" in sys.modules
for page in sorted(Path("pages").glob("[0-9][0-9]_*.py")):
    at = AppTest.from_file(str(page.resolve()), default_timeout=120).run()
    out[page.name] = {"torch": "torch" in sys.modules, "errors": [e.value for e in at.exception]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    """Import the app and render every page in a fresh interpreter; report what it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("STAGESCOPE_LIVE_MODELS", None)  # catalog models: the block count needs no model
    env.pop("STAGESCOPE_RESULTS_DIR", None)
    res = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_app_data_and_views_import_no_torch(probe):
    assert probe["app.data"] is False, "app.data imported torch"
    assert probe["views"] is False, "an app/*_views.py module imports torch at module level"
    assert probe["publish"] is False, "fetching pinned Hub results imports torch"


@pytest.mark.parametrize("page", [p.name for p in PAGES])
def test_precomputed_page_renders_without_torch(probe, page):
    assert probe[page]["errors"] == []
    assert probe[page]["torch"] is False, f"rendering {page} imported torch"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_are_thin(page):
    n = len(page.read_text().splitlines())
    assert n <= MAX_PAGE_LINES, f"{page.name} has {n} lines; move helpers into app/"


def test_pages_run_no_sql():
    for page in PAGES:
        text = page.read_text()
        assert "data.query(" not in text and "SELECT " not in text, (
            f"{page.name} holds SQL: queries belong in app/*_views.py"
        )


MODULES = sorted(
    p for folder in ("precompute", "app", "pages") for p in (ROOT / folder).rglob("*.py")
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.name} has {n} lines; split it by concern"
