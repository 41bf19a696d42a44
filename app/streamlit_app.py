"""Stagescope entry point: only a router.

Pages are discovered from ``pages/NN_slug.py``: the first line of each page's docstring is its
title, and the first digit of ``NN`` picks its section. Adding a page is adding a file.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/streamlit_app.py` from anywhere
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import glossary, lessons, url_state  # noqa: E402

SECTIONS = {
    "0": "Start here",
    "1": "Reading the residual stream",
    "2": "Layers and stages",
    "3": "Facts",
    "4": "Representations",
    "5": "Lenses as instruments",
    "6": "Classroom",
}


def discover(pages_dir: Path = ROOT / "pages") -> dict[str, list[st.Page]]:
    """Build the navigation from the files in ``pages/``."""
    sections: dict[str, list[st.Page]] = {}
    for path in sorted(pages_dir.glob("[0-9][0-9]_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or path.stem
        title = doc.strip().splitlines()[0].rstrip(".")
        section = SECTIONS.get(path.name[0], "More")
        page = st.Page(
            str(path),
            title=title,
            url_path=path.stem.split("_", 1)[1],
            default=path.name.startswith("00_"),
        )
        sections.setdefault(section, []).append(page)
    return sections


def main() -> None:
    """Configure the page and run the selected one."""
    st.set_page_config(page_title="Stagescope", page_icon="🔭", layout="wide")
    nav = st.navigation(discover())
    lessons.lesson_bar(nav.url_path)  # a guided lesson's bar (and projector mode), if one is on
    asked = url_state.snapshot()
    nav.run()
    url_state.report_ignored(asked)  # a link's values the page could not use
    glossary.footer(nav.url_path)


main()
