"""Guided lessons: a path through the pages, one step per page state, every step a link.

A lesson is a TOML file in ``data/lessons/`` (the file name is its id)::

    title = "Where do facts live?"
    audience = "Students who have seen the logit lens"
    minutes = 25
    summary = "One paragraph for the lesson picker."

    [[steps]]
    page = "facts_stored"            # the page's URL path (pages/NN_<page>.py)
    title = "MLPs at the subject"
    note = "Teacher's note: what to point at, what students usually say."
    question = "The question to ask the class."
    [steps.params]                   # URL query parameters of the page's widgets
    ct_kind = "attn"

``params`` are the page's widgets as they appear in its URL (``bind="query-params"``): a select
box with a ``format_func`` takes the *displayed* label, a multiselect a list. Streamlit drops a
value that is not an option, or that equals the widget's default, so a step states only what it
changes; ``tests/test_lessons.py`` opens every step and checks that each value stuck.

The lesson bar (``lesson_bar``, called by the router before the page runs) shows step k of n,
back and next, the question, the teacher's note in an expander, and a projector switch (larger
type, no sidebar). Back and next are page links carrying the step's query parameters, so the
browser's address bar always holds a link to the current step (``step_link`` writes one).
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = ROOT / "data" / "lessons"
PAGES_DIR = ROOT / "pages"
#: Query parameters the lesson bar owns (never a page widget's).
OWN_PARAMS = ("lesson", "step", "projector")

PROJECTOR_CSS = """
<style>
html { font-size: 22px; }
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"], [data-testid="stSidebarNav"] { display: none !important; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding: 1rem 2rem; }
[data-testid="stVegaLiteChart"] { min-height: 70vh; }
</style>
"""


class LessonError(ValueError):
    """A lesson file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Step:
    """One step: a page, the state to open it in, a teacher's note and a question."""

    page: str
    title: str
    note: str
    question: str
    params: dict = field(default_factory=dict)

    def query_params(self) -> dict[str, str | list[str]]:
        """The step's widget state as URL query parameters (strings, lists of strings)."""
        out: dict[str, str | list[str]] = {}
        for key, value in self.params.items():
            if isinstance(value, list):
                out[key] = [_url_value(v) for v in value]
            else:
                out[key] = _url_value(value)
        return out


@dataclass(frozen=True)
class Lesson:
    """A lesson: id (file name), title, audience, duration, summary and steps."""

    id: str
    title: str
    audience: str
    minutes: int
    summary: str
    steps: tuple[Step, ...]


def _url_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pages() -> dict[str, Path]:
    """Every page by URL path (as the router names them): ``{"logit_lens": pages/10_...}``."""
    return {p.stem.split("_", 1)[1]: p for p in sorted(PAGES_DIR.glob("[0-9][0-9]_*.py"))}


def bound_keys(page_file: Path) -> set[str]:
    """Widget keys a page mirrors in its URL (``bind="query-params"``, or a live model picker)."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(page_file.read_text())):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        key = kw.get("key")
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            continue
        bind = kw.get("bind")
        if (isinstance(bind, ast.Constant) and bind.value == "query-params") or (
            name == "model_picker"
        ):
            keys.add(key.value)
    return keys


def parse(text: str, lesson_id: str) -> Lesson:
    """Parse and validate one lesson's TOML text against the pages on disk.

    Raises:
        LessonError: Bad TOML, a missing field, an unknown page, or a parameter that is not a
            URL-bound widget of its page.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise LessonError(f"{lesson_id}: not valid TOML ({err})") from err
    for name in ("title", "audience", "steps"):
        if not raw.get(name):
            raise LessonError(f"{lesson_id}: the field {name!r} is missing or empty")
    have = pages()
    steps = []
    for i, s in enumerate(raw["steps"], start=1):
        where = f"{lesson_id} step {i}"
        for name in ("page", "title", "note", "question"):
            if not str(s.get(name, "")).strip():
                raise LessonError(f"{where}: the field {name!r} is missing or empty")
        if s["page"] not in have:
            raise LessonError(f"{where}: no page {s['page']!r}; pages are {sorted(have)}")
        params = dict(s.get("params", {}))
        bad = set(params) - bound_keys(have[s["page"]])
        if bad & set(OWN_PARAMS):
            raise LessonError(f"{where}: {sorted(OWN_PARAMS)} belong to the lesson bar")
        if bad:
            raise LessonError(
                f"{where}: {sorted(bad)} are not URL-bound widgets of {s['page']!r} "
                f"(bound: {sorted(bound_keys(have[s['page']]))})"
            )
        steps.append(
            Step(s["page"], s["title"].strip(), s["note"].strip(), s["question"].strip(), params)
        )
    return Lesson(
        id=lesson_id,
        title=raw["title"].strip(),
        audience=raw["audience"].strip(),
        minutes=int(raw.get("minutes", 0)),
        summary=str(raw.get("summary", "")).strip(),
        steps=tuple(steps),
    )


def load(path: Path) -> Lesson:
    """Load one lesson file (its stem is the id)."""
    return parse(path.read_text(), path.stem)


@st.cache_data(show_spinner=False)
def load_all(folder: str = str(LESSONS_DIR)) -> dict[str, Lesson]:
    """Every lesson in ``folder`` by id, in file-name order."""
    return {p.stem: load(p) for p in sorted(Path(folder).glob("*.toml"))}


def step_params(lesson: Lesson, k: int, projector: bool = False) -> dict[str, str | list[str]]:
    """The query parameters of step ``k`` (1-based): the widget state plus the lesson's own."""
    params = {**lesson.steps[k - 1].query_params(), "lesson": lesson.id, "step": str(k)}
    if projector:
        params["projector"] = "1"
    return params


def step_link(lesson: Lesson, k: int, projector: bool = False) -> str:
    """A relative, shareable link to step ``k``: ``/<page>?<widget state>&lesson=..&step=k``."""
    step = lesson.steps[k - 1]
    return f"/{step.page}?" + urlencode(step_params(lesson, k, projector), doseq=True)


def link(
    lesson: Lesson, k: int, projector: bool, label: str, key: str, disabled: bool = False
) -> None:
    """A page link to step ``k`` with its query parameters (it can also open in a new tab)."""
    step = lesson.steps[k - 1]
    with st.container(key=key):
        st.page_link(
            str(pages()[step.page]),
            label=label,
            query_params=step_params(lesson, k, projector),
            disabled=disabled,
            width="stretch",
        )


def go(lesson: Lesson, k: int, projector: bool = False) -> None:
    """Open step ``k`` of a lesson (stops the current run)."""
    st.session_state["lesson_at"] = (lesson.id, k)
    step = lesson.steps[k - 1]
    st.switch_page(str(pages()[step.page]), query_params=step_params(lesson, k, projector))


def active() -> tuple[Lesson, int] | None:
    """The lesson and step this session follows (from the URL first, then the session)."""
    qp = st.query_params
    found = load_all()
    if qp.get("lesson") in found:
        lesson = found[qp["lesson"]]
        try:
            k = min(max(int(qp.get("step", 1)), 1), len(lesson.steps))
        except ValueError:
            k = 1
        st.session_state["lesson_at"] = (lesson.id, k)
        return lesson, k
    at = st.session_state.get("lesson_at")
    if at and at[0] in found:
        return found[at[0]], min(at[1], len(found[at[0]].steps))
    return None


def projector_on() -> bool:
    """Whether this session shows the projector layout (URL ``projector=1`` or the switch)."""
    if st.query_params.get("projector") == "1":
        st.session_state["lesson_projector"] = True
    return bool(st.session_state.get("lesson_projector", False))


def lesson_bar(current_page: str) -> None:
    """Draw the lesson bar above the page when a lesson is active; apply projector mode."""
    projector = projector_on()
    if projector:
        st.html(PROJECTOR_CSS)
    found = active()
    if found is None:
        return
    lesson, k = found
    step, n = lesson.steps[k - 1], len(lesson.steps)
    with st.container(border=True, key="lesson_bar"):
        c1, c2, c3, c4 = st.columns([5, 1, 1, 1], vertical_alignment="center")
        c1.markdown(f"📚 **{lesson.title}** · step **{k} of {n}**: {step.title}")
        with c2:
            link(lesson, max(k - 1, 1), projector, "← Back", "lesson_back", disabled=k == 1)
        with c3:
            link(lesson, min(k + 1, n), projector, "Next →", "lesson_next", disabled=k == n)
        if c4.button("Leave", key="lesson_leave", width="stretch"):
            st.session_state.pop("lesson_at", None)
            st.session_state["lesson_projector"] = False
            for name in OWN_PARAMS:
                st.query_params.pop(name, None)
            st.rerun()
        if (current_page or "home") != step.page:  # the default page has an empty path
            st.caption(f"You left the lesson's page ({step.page}).")
            link(lesson, k, projector, f"Back to step {k}", "lesson_return")
        st.markdown(f"❓ **Ask the class:** {step.question}")
        e1, e2 = st.columns([4, 1])
        with e1.expander("Teacher's note"):
            st.markdown(step.note)
        e2.toggle("Projector", key="lesson_projector", help="Larger type, no sidebar.")
